"""The notebooks: the quickstart runs end to end on the CPU (shrunk by configs/quickstart_tiny.gin); the TPU
notebook is valid nbformat whose code compiles."""

import ast
import json
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def code_cells(path: Path) -> list[str]:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("name", ["quickstart.ipynb", "tpu_qwen_math.ipynb"])
def test_notebook_is_valid_compiles_and_stores_no_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    # nbformat 4.5 cells carry ids; one without is a warning now and "will become a hard error" in nbformat
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]  # as stored: nbformat.read fills in what is missing
    assert all("id" in cell for cell in cells), "a cell has no id: nbformat.validator.normalize adds them"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "clear outputs before committing"
    for i, source in enumerate(code_cells(NOTEBOOKS / name)):
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("!", "%"))]
        compile("\n".join(lines), f"{name}[cell {i}]", "exec")


def test_tpu_notebook_uses_the_paper_configs():
    source = "\n".join(code_cells(NOTEBOOKS / "tpu_qwen_math.ipynb"))
    # The plan of the run train builds: its dtypes (bf16 compute) and its MemoryConfig's chip budget (it planned an
    # f32 KV cache against the host's memory).
    for needed in ("experiments/rlv_grpo_math.gin", "hardware/tpu_v4_8.gin", "budget.enforce(plan, config.memory)",
                   "experiment.abstract_policy(config.model",
                   "train.train(config, ", "evaluate.final_report(config, "):
        assert needed in source, needed
    # Every rlvjax name it uses exists and every call of one binds to its signature (the cells run only on a TPU VM;
    # a renamed function or keyword would fail after training). Names: what `import rlvjax` and `from rlvjax[.x]
    # import y` bring (it checked only `from rlvjax import module`, and no keywords, review).
    import importlib
    import inspect

    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("!", "%"))))
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update({a.asname or a.name: importlib.import_module(a.name) for a in node.names
                          if a.name.split(".")[0] == "rlvjax"})
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rlvjax":
            module = importlib.import_module(node.module)
            names.update({a.asname or a.name: getattr(module, a.name) if hasattr(module, a.name) else
                          importlib.import_module(f"{node.module}.{a.name}") for a in node.names})
    missing, calls = set(), 0

    def resolve(expr):  # name.attr.attr on an rlvjax name: the object (None: not rlvjax's, or missing)
        if isinstance(expr, ast.Name):
            return names.get(expr.id)
        if isinstance(expr, ast.Attribute) and (owner := resolve(expr.value)) is not None:
            if not hasattr(owner, expr.attr):
                missing.add(ast.unparse(expr))
                return None
            return getattr(owner, expr.attr)
        return None

    for node in ast.walk(tree):
        target = resolve(node.func) if isinstance(node, ast.Call) else None
        if callable(target) and not any(isinstance(a, ast.Starred) for a in node.args) and \
                all(k.arg for k in node.keywords):
            calls += 1
            try:
                inspect.signature(target).bind_partial(*node.args, **{k.arg: None for k in node.keywords})
            except TypeError as e:
                missing.add(f"{ast.unparse(node.func)}: {e}")
        elif isinstance(node, ast.Attribute):
            resolve(node)
    assert calls > 10 and not missing, missing
    # The eval.json keys its last cell reads are those of a report (`r.get("by_levels", {})` would print nothing)
    from rlvjax import reports

    pool = {"answers": np.array([["1", "2"], ["3", "3"]], object), "correct": np.array([[1, 0], [1, 1]], bool),
            "yes_logp": np.log(np.full((2, 2), 0.6)), "no_logp": np.log(np.full((2, 2), 0.4))}
    report = reports.report(pool, [1, 2], num_subsets=2)
    evaluation = reports.assemble({"1": {"m": report}}, {}, train_temperature=1.0, headline_temperature=1.0)
    last = ast.parse(code_cells(NOTEBOOKS / "tpu_qwen_math.ipynb")[-1])
    keys = {n.slice.value for n in ast.walk(last) if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant)}
    keys |= {n.args[0].value for n in ast.walk(last) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "get" and n.args and isinstance(n.args[0], ast.Constant)}
    known = set(evaluation) | set(report) | set(report["by_level"]["1"])
    assert keys and keys <= known, keys - known
    assert "YOUR_ORG" not in source and "CONFIGS /" in source  # installs from a real source, reads the shipped configs
    names = {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    assert {"MODEL_DIR", "TRAIN_FILE", "EVAL_FILE", "mesh"} <= names


def test_quickstart_runs_end_to_end(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("RLVJAX_QUICKSTART_GIN", "quickstart_tiny.gin")
    monkeypatch.setenv("RLVJAX_QUICKSTART_WORKDIR", str(tmp_path / "run"))
    monkeypatch.setenv("RLVJAX_API_STEPS", "2")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    elapsed = time.perf_counter() - start
    outputs = {i: "".join(o.get("text", "") for o in cell.outputs) for i, cell in enumerate(notebook.cells)
               if cell.cell_type == "code"}
    text = "\n".join(outputs.values())
    assert "rlvjax:" in text and "pass@1" in text and "verifier accuracy" in text
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == 1  # scaling.png displayed
    # The Python API section: its own run, report and saved model.
    assert (tmp_path / "run" / "api" / "eval" / "final" / "eval.json").exists()
    assert (tmp_path / "run" / "api_model" / "config.json").exists()
    assert (tmp_path / "run" / "eval.json").exists() and (tmp_path / "run" / "final" / "config.json").exists()
    print(f"quickstart notebook: {elapsed:.0f} s")
