"""No code path can unpickle or run downloaded code: a static scan of the sources, and the loader's refusal.

The scan reads the syntax tree, not the text, so a docstring or an error message that names pickle (hf.py has
both) is fine and this file's own pattern strings never match themselves; a second test feeds the scanner a
snippet with every forbidden form, so a scanner that silently stopped matching would fail too.
"""

import ast
import json
import os
import re
from pathlib import Path

import pytest

import rlvjax.model.hf as hf
import rlvjax.model.hf_config as hf_config

REPO = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = ["rlvjax", "launch", "bench", "tests"]
SKIP_DIRS = {".git", ".venv", ".ci-venv", ".pytest_cache", "__pycache__", "runs", "build"}
# Modules whose loading executes whatever the bytes say.
UNPICKLING_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
PICKLE_CALLS = {"torch.load", "read_pickle", "to_pickle"}  # matched on the dotted name's tail
# keyword -> the only constant value allowed for it (absent is always fine).
RISKY_KEYWORDS = {"trust_remote_code": False, "allow_pickle": False, "weights_only": True, "use_safetensors": True}
CONFIG_SUFFIXES = {".gin", ".toml", ".yaml", ".yml", ".json", ".cfg", ".ini", ".sh"}
REMOTE_CODE_SETTING = re.compile(r"trust_remote_code\W{0,4}(?:[=:]|,)\s*['\"]?true", re.IGNORECASE)


def _dotted(node: ast.AST) -> str:
    """The call target as written (`torch.load`, `pd.read_pickle`); '' for a computed one (`f()()`)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def unsafe_uses(source: str, name: str = "<snippet>") -> list[str]:
    """Each unpickling import or call and each risky keyword in `source`, as 'name:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNPICKLING_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLING_MODULES:
            found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            target = _dotted(node.func)
            if any(target == c or target.endswith("." + c) for c in PICKLE_CALLS):
                found.append(f"{where}: {target}(...)")
            if target in ("__import__", "importlib.import_module") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and str(arg.value).split(".")[0] in UNPICKLING_MODULES:
                    found.append(f"{where}: {target}({arg.value!r})")
            for kw in node.keywords:
                if kw.arg in RISKY_KEYWORDS and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is RISKY_KEYWORDS[kw.arg]
                ):
                    found.append(f"{where}: {target}(..., {kw.arg}={ast.unparse(kw.value)})")
    return found


def _repo_files() -> list[Path]:
    """Every file in the checkout, less version control, virtual environments, caches and run outputs."""
    files = []
    for top, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs
                   if d not in SKIP_DIRS and not d.endswith(".egg-info") and not d.startswith("workdir")]
        files += [Path(top) / n for n in names]
    return sorted(files)


def _notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text()).get("cells", [])
    lines = []
    for cell in cells:
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            # IPython magics and shell escapes are not Python; a `!pip` line cannot unpickle anything itself.
            lines += ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the scanner


def test_scanner_flags_every_forbidden_form():
    # Built from pieces, so that this file's own text holds none of the forms it forbids.
    snippet = [
        "import " + "pickle", "import os, " + "dill as d", "from " + "joblib import load", "import " + "cloudpickle",
        "from " + "_pickle import loads", "import " + "shelve", "import " + "marshal",
        "torch." + "load('m.pt')", "torch." + "load('m.pt', weights_only=False)",
        "np.load('a.npy', allow_pickle=" + "True)",
        "pd." + "read_pickle('f')", "__import__('" + "pickle')", "importlib.import_module('" + "dill')",
        "AutoModel.from_pretrained('p', trust_remote_code=" + "True)", "f(trust_remote_code=flag)",
        "AutoModel.from_pretrained('p', use_safetensors=" + "False)",
    ]
    flagged = {int(use.split(":")[1]) for use in unsafe_uses("\n".join(snippet))}
    assert flagged == set(range(1, len(snippet) + 1))
    harmless = "\n".join([
        "import json, numpy as np", "np.load('a.npy')", "np.load('a.npy', allow_pickle=False)",
        "AutoTokenizer.from_pretrained('p', local_files_only=True, trust_remote_code=False)",
        "msg = 'never ' + 'pickle'", "load(x)", "torch.save(x, 'y')", "safe_open('m.safetensors', framework='np')",
    ])
    assert unsafe_uses(harmless) == []


def test_config_pattern_flags_remote_code_settings():
    assert REMOTE_CODE_SETTING.search("load_tokenizer.trust_remote_code = " + "True")
    assert REMOTE_CODE_SETTING.search('{"trust_remote_code": ' + "true}")
    assert not REMOTE_CODE_SETTING.search("load_tokenizer.trust_remote_code = False")


# ------------------------------------------------------------------------------------------------ the repository


def test_no_source_unpickles_or_trusts_remote_code():
    files = _repo_files()
    sources = [p for p in files if p.suffix == ".py"]  # SOURCE_ROOTS and any script elsewhere in the tree
    for root in SOURCE_ROOTS:
        assert not (REPO / root).is_dir() or any(REPO / root in p.parents for p in sources), root
    assert Path(__file__).resolve() in sources
    found = [use for p in sources for use in unsafe_uses(p.read_text(), str(p.relative_to(REPO)))]
    for nb in (p for p in files if p.suffix == ".ipynb"):
        found += unsafe_uses(_notebook_code(nb), str(nb.relative_to(REPO)))
    assert found == []


def test_no_config_or_script_trusts_remote_code():
    files = [p for p in _repo_files() if p.suffix in CONFIG_SUFFIXES or p.parent.name == ".ci"]
    assert any(p.suffix == ".gin" for p in files)
    found = [f"{p.relative_to(REPO)}: {m.group()}" for p in files
             for m in REMOTE_CODE_SETTING.finditer(p.read_text(errors="replace"))]
    assert found == []


# ------------------------------------------------------------------------------------------------ the loader

def _canary_pickle(canary: Path) -> bytes:
    """A protocol-0 pickle that, if ever unpickled, calls builtins.open(canary, "w"): harmless, but visible."""
    return b"c__builtin__\nopen\n(V" + str(canary).encode() + b"\nVw\ntR."


TINY_QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 96, "hidden_size": 64,
              "intermediate_size": 112, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 256, "rope_theta": 1000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt", "model.ckpt",
                                     "pytorch_model-00001-of-00002.bin"])
def test_load_hf_refuses_pickle_checkpoints_and_points_to_safetensors(tmp_path, weights):
    hf_config.config_from_hf(TINY_QWEN2)  # the config is valid: the refusal is about the weights alone
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(TINY_QWEN2))
    canary = tmp_path / "unpickled"
    (model_dir / weights).write_bytes(_canary_pickle(canary))
    with pytest.raises(ValueError, match="safetensors") as refused:
        hf.load_hf(model_dir, tokenizer=False)
    assert weights in str(refused.value) and "pickle" in str(refused.value)
    assert not canary.exists()
