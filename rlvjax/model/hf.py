"""Hugging Face directory <-> rlvjax model: one tensor-name table, safetensors, tokenizer (the config mapping is
``hf_config``).

Only safetensors are read or written (no pickle); the tokenizer is loaded with ``local_files_only`` and never with
remote code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import shutil
import uuid
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from huggingface_hub import split_state_dict_into_shards_factory
from safetensors import safe_open
from safetensors.numpy import save_file

from rlvjax import atomic
from rlvjax.model.hf_config import config_from_hf, config_to_hf
from rlvjax.model.transformer import ModelConfig, Transformer

# (HF tensor-name regex, our param path template, transpose). Linear weights are [out, in] in torch, [in, out] here.
WEIGHT_TABLE: tuple[tuple[str, str, bool], ...] = (
    (r"model\.embed_tokens\.weight", "embed_tokens/embedding", False),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.weight", "layers/{0}/self_attn/{1}_proj/kernel", True),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.bias", "layers/{0}/self_attn/{1}_proj/bias", False),
    (r"model\.layers\.(\d+)\.self_attn\.([qk]_norm)\.weight", "layers/{0}/self_attn/{1}/weight", False),
    (r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", "layers/{0}/mlp/{1}_proj/kernel", True),
    (r"model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight", "layers/{0}/{1}/weight", False),
    (r"model\.norm\.weight", "norm/weight", False),
    (r"lm_head\.weight", "lm_head/kernel", True),
)
# Buffers some exporters write that carry no learned state.
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def hf_to_path(name: str) -> tuple[str, bool] | None:
    """``(param path, transpose)`` of an HF tensor name from ``WEIGHT_TABLE``; None for a name it does not map."""
    for pattern, template, transpose in WEIGHT_TABLE:
        m = re.fullmatch(pattern, name)
        if m:
            return template.format(*m.groups()), transpose
    return None


def _safetensors_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{index} is not a shard index with a weight_map ({type(e).__name__}: {e}); download "
                             "or export the model again") from None
        missing = [s for s in shards if not (path / s).exists()]
        if missing:
            raise FileNotFoundError(f"{index} names shards that are not in {path}: {missing}")
        return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickled = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
    if pickled:
        raise ValueError(
            f"{path} holds only pickle checkpoints {pickled}; rlvjax never unpickles weights — convert them to "
            "safetensors (e.g. transformers: model.save_pretrained(dir, safe_serialization=True))"
        )
    raise FileNotFoundError(f"no *.safetensors weights in {path}; point at a directory saved with "
                            "save_pretrained(safe_serialization=True)")


@contextlib.contextmanager
def _open_safetensors(file: Path):
    """``safe_open`` of ``file``, a truncated or corrupt one (an interrupted download or copy) in one line."""
    try:
        handle = safe_open(str(file), framework="np")
    except Exception as e:  # safetensors raises its own SafetensorError for a bad header
        raise ValueError(f"{file} is not a readable safetensors file ({str(e).splitlines()[0][:160]}); an "
                         "interrupted download or copy? Fetch it again") from None
    with handle as f:
        yield f


def export_stamp(path) -> dict[str, str]:
    """The metadata :func:`save_hf` stamped on the weights in directory ``path`` (``rlvjax_export_id``, a new id
    for every export, and ``rlvjax_step``, the training step it holds); ``{}`` when there are no weights there or
    they were written by another tool."""
    try:
        with _open_safetensors(_safetensors_files(Path(path))[0]) as f:
            return dict(f.metadata() or {})
    except (OSError, ValueError):
        return {}


def _flat_state(model_state) -> dict[str, nnx.Variable]:
    return {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(model_state)}


HUB_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja")  # weights, config, tokenizer; no pickles


def resolve_model_dir(name: str) -> Path:
    """A local model directory as given; else ``name`` as a Hugging Face hub id (``org/model``), downloaded through
    ``huggingface_hub`` (safetensors, configs and tokenizer only) or read from its cache when offline. A hub id
    that is neither cached nor reachable is one line saying so."""
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        return path
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(huggingface_hub.snapshot_download(name, allow_patterns=list(HUB_FILES)))
    except LocalEntryNotFoundError:
        raise FileNotFoundError(f"model {name!r} is not a local directory and not in the Hugging Face cache, and "
                                "the hub cannot be reached (HF_HUB_OFFLINE set, or no network); download it once "
                                "online or pass a local directory") from None
    except (HfHubHTTPError, ValueError) as e:
        raise FileNotFoundError(f"model {name!r} is not a local directory and the hub refused it "
                                f"({str(e).splitlines()[0]}); check the id, or pass a local directory") from None


RELATIVE_FIX = "run the command where it names the model, or give its absolute path"


def not_a_model_dir(path, fix: str = RELATIVE_FIX) -> str:
    """Why ``path`` is not an HF model directory, for an error line: a GGUF file (and its conversion), no such
    directory (a relative path: where it was read from, and ``fix``), or no config.json in it."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return (f"{path} is a GGUF file, not an HF model directory; convert it once: python -c \"import rlvjax; "
                f"from rlvjax.model.gguf import load_gguf; rlvjax.save_hf(*load_gguf('{path}'), 'DIR')\" and pass "
                "DIR")
    if not path.exists():
        where = "" if path.is_absolute() else f" (a relative path reads from the current directory, {Path.cwd()}: " \
                                              f"{fix})"
        return f"{path}: no such model directory{where}"
    return f"{path} is not an HF model directory (no config.json); point at a folder with config.json and *.safetensors"


def check_floating(loader: str, **dtypes) -> None:
    """One line when a dtype given to ``loader`` is not a floating one (None loaded f32 arrays labelled float64, and
    so exported; 'auto' failed in numpy)."""
    for name, value in dtypes.items():
        try:
            floating = value is not None and jnp.issubdtype(jnp.dtype(value), jnp.floating)
        except TypeError:
            floating = False
        if not floating:
            raise ValueError(f"{loader}: {name}={value!r} is not a floating dtype; pass e.g. jnp.float32 or "
                             "'bfloat16'")


def load_hf(path, dtype=jnp.float32, *, compute_dtype=None, tokenizer: bool = True):
    """Load an HF Qwen2/Qwen3/Llama/Mistral directory into ``(Transformer, tokenizer)``, weights in ``dtype``,
    computing in ``compute_dtype`` (None: ``dtype``; e.g. f32 weights with bfloat16 compute).

    Every tensor is checked against the table: an unknown name, a missing parameter or a wrong shape raises an
    error naming the tensor. ``tokenizer=False`` skips the tokenizer (returns None in its place).
    """
    check_floating("load_hf", dtype=dtype, **({"compute_dtype": compute_dtype} if compute_dtype is not None else {}))
    path = resolve_model_dir(str(path))
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(not_a_model_dir(path))
    try:
        hf = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_file} is not JSON ({e}); download or export the model again") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{config_file} is not a JSON object; download or export the model again")
    cfg = config_from_hf(hf, dtype, compute_dtype)
    abstract = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    targets = _flat_state(state)
    loaded: dict[str, np.ndarray] = {}
    head = None  # a stored lm_head of a tied config
    for file in _safetensors_files(path):
        with _open_safetensors(file) as f:
            for name in f.keys():
                if _IGNORED.fullmatch(name):
                    continue
                mapped = hf_to_path(name)
                if mapped is None:
                    raise ValueError(f"unknown tensor {name!r} in {file.name}: not in rlvjax's weight table; is "
                                     "config.json's model_type the one these weights were saved with?")
                param, transpose = mapped
                if param == "lm_head/kernel" and cfg.tie_word_embeddings:
                    head = f.get_tensor(name)  # tied: the head is the embedding, if this copy agrees
                    continue
                if param in loaded:
                    raise ValueError(f"tensor {name!r} is in {file.name} and in another *.safetensors file of {path}; "
                                     "keep one copy of the weights in the directory")
                if param not in targets:
                    raise ValueError(f"tensor {name!r} in {file.name} has no parameter {param!r} in this config; "
                                     "use the config.json saved with these weights")
                array = f.get_tensor(name)
                array = array.T if transpose else array
                expected = targets[param].get_value().shape
                if array.shape != tuple(expected):
                    raise ValueError(
                        f"tensor {name!r} has shape {array.shape} after mapping, expected {tuple(expected)} "
                        "from config.json; use the config.json saved with these weights"
                    )
                loaded[param] = array.astype(jnp.dtype(dtype))
    embedding = loaded.get("embed_tokens/embedding")
    if head is not None and embedding is not None and not np.array_equal(head.astype(embedding.dtype), embedding):
        # transformers would keep this head (it unties what differs); rlvjax would tie it away: say so
        raise ValueError(f"{config_file} says tie_word_embeddings=true, but the weights hold an lm_head.weight that "
                         "differs from the embedding; set \"tie_word_embeddings\": false in config.json to load that "
                         "head (transformers loads it either way)")
    missing = sorted(set(targets) - set(loaded))
    if missing:
        raise ValueError(f"{path} is missing tensors for parameters {missing[:5]}{'...' if len(missing) > 5 else ''}"
                         f" ({len(missing)} of {len(targets)}); an incomplete download or export? Save the model "
                         "again with all its weights")
    for name, variable in targets.items():
        variable.set_value(jnp.asarray(loaded[name]))
    model = nnx.merge(graphdef, state)
    if not tokenizer:
        return model, None
    tok = load_tokenizer(path)
    check_tokenizer(tok, cfg, path)
    return model, tok


def check_tokenizer(tokenizer, cfg: ModelConfig, path) -> None:
    """Raises a one-line error when ``tokenizer`` (loaded from ``path``) has ids the model cannot embed."""
    if len(tokenizer) > cfg.vocab_size:  # its last ids would embed as NaN
        raise ValueError(f"{path}'s tokenizer has {len(tokenizer)} tokens, more than the model's vocab_size="
                         f"{cfg.vocab_size}; use the tokenizer saved with these weights")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_tokenizer(path):
    if Path(path).is_dir() and not any((Path(path) / name).exists() for name in TOKENIZER_FILES):
        # AutoTokenizer would build an empty tokenizer from config.json's model_type alone
        raise ValueError(f"no tokenizer in {path} (none of {', '.join(TOKENIZER_FILES)}); save one there with "
                         "tokenizer.save_pretrained")
    try:
        if _generic_tokenizer(Path(path)):  # tokenizer.json's own pipeline, whatever model_type config.json names
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        else:  # (imported here: AutoTokenizer's import is ~2 s of a command's start-up)
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"no usable tokenizer in {path} ({e}); save one there with tokenizer.save_pretrained") from e
    if not tokenizer("1 + 1 = 2", add_special_tokens=False)["input_ids"]:
        # a tokenizer_config.json without its vocabulary file: AutoTokenizer builds one of special tokens only
        raise ValueError(f"no usable tokenizer in {path} (it encodes text to no tokens: a tokenizer_config.json "
                         "without its vocabulary file?); save one there with tokenizer.save_pretrained")
    setattr(tokenizer, MODEL_EOS, model_eos_ids(path))  # the sampler stops there too (policy_tokens.stop_ids)
    return tokenizer


MODEL_EOS = "rlvjax_model_eos_ids"  # a loaded tokenizer's attribute: its model's own eos ids (model_eos_ids)


def model_eos_ids(path) -> tuple[int, ...]:
    """The ids the model's files end generation at, as transformers' ``generate`` reads them: ``eos_token_id`` (an
    id or a list) of ``generation_config.json``, else of ``config.json``. Llama-3.1-Instruct lists
    ``<|end_of_text|>``, ``<|eom_id|>`` and ``<|eot_id|>`` there, its tokenizer only the last: rlvjax sampled on past
    the other two, where transformers and vLLM stop."""
    for name in ("generation_config.json", "config.json"):
        try:
            value = json.loads((Path(path) / name).read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        if value is not None:
            ids = value if isinstance(value, list) else [value]
            return tuple(sorted({i for i in ids if isinstance(i, int) and not isinstance(i, bool) and i >= 0}))
    return ()


GENERIC_TOKENIZERS = ("PreTrainedTokenizerFast", "TokenizersBackend")


def _generic_tokenizer(path: Path) -> bool:
    """A ``tokenizer.json`` whose ``tokenizer_config.json`` names no model's own class. ``AutoTokenizer`` then
    picks config.json's model type's class (a random qwen2 model trained with another tokenizer: Qwen2Tokenizer),
    which rebuilds the pre-tokenizer from the vocabulary: "\n\n" was encoded otherwise than in training."""
    try:
        declared = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return False
    return declared in GENERIC_TOKENIZERS and (path / "tokenizer.json").is_file()


TOKENIZER_PROBE = "Step 1: 12 + 7 = 19.\n\nStep 2:  \\boxed{19}\n\n\nIs the answer correct? Yes"


def _warn_if_auto_reads_otherwise(path: Path, tokenizer, shown: Path) -> None:
    """A warning when transformers' ``AutoTokenizer`` (what transformers and vLLM users load an export with) encodes
    text otherwise than ``tokenizer``: rlvjax reloads the export's tokenizer.json as it is (``load_tokenizer``)."""
    from transformers import AutoTokenizer

    if not _generic_tokenizer(path):
        return
    try:
        auto = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError):
        return
    if auto(TOKENIZER_PROBE).input_ids != tokenizer(TOKENIZER_PROBE).input_ids:
        logging.warning("%s: transformers' AutoTokenizer loads this export's tokenizer as %s, which encodes text "
                        "otherwise than the model was trained with (config.json's model type picks the class); "
                        "rlvjax.load_hf reads it right, elsewhere load it with PreTrainedTokenizerFast.from_pretrained",
                        shown, type(auto).__name__)


def save_hf(model: Transformer, tokenizer, path, *, files: dict[str, str] | None = None,
            overwrite: bool | None = None, max_shard_size: int | str = "5GB", step: int | None = None,
            stamp: dict[str, str] | None = None, dtype: str | None = None) -> None:
    """Write ``config.json``, the weights, the tokenizer and ``files`` (``{name: text}``, e.g.
    ``policy_tokens.export_files``); the directory appears whole or not at all (``replace_dir``). An existing
    ``path`` is replaced when it is an earlier export or empty (``overwrite=None``), whatever it holds
    (``overwrite=True``, for callers that asked the user), or never if non-empty (``False``). Weights over
    ``max_shard_size`` (bytes or "5GB", transformers' default) are split into ``model-0000i-of-0000n.safetensors``
    with a ``model.safetensors.index.json``, as ``save_pretrained`` writes them; only one shard's tensors are on the
    host at a time. The weights' metadata (:func:`export_stamp`) carry an id new with every export, ``step``, the
    training step exported, and ``stamp``. ``dtype`` ("bfloat16", "float32"; None: the model's own) is the files'
    (a run of a bf16 checkpoint keeps f32 weights: its export was twice the checkpoint's size)."""
    path = Path(path).expanduser()  # as load_hf reads it ("~/x" made a ./~/x)
    if dtype is not None:  # "int8" wrote weights of zeros, jnp.bfloat16 a config.json JSON cannot hold
        check_floating("save_hf", dtype=dtype)
        dtype = jnp.dtype(dtype).name
    check_replaceable(path, only_a_model=overwrite is None)  # before the weights are written, not after
    cfg = model.config if dtype is None else dataclasses.replace(model.config, dtype=dtype)
    params = _flat_state(nnx.state(model, nnx.Param))
    weights = {hf_name: hf_to_path(hf_name) for hf_name in hf_tensor_names(cfg)}
    split = split_state_dict_into_shards_factory(
        {hf_name: params[param].get_value() for hf_name, (param, _) in weights.items()},
        get_storage_size=lambda array: array.size * jnp.dtype(cfg.dtype).itemsize,
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=max_shard_size)

    def host(hf_name: str) -> np.ndarray:
        param, transpose = weights[hf_name]
        array = np.asarray(jax.device_get(params[param].get_value().astype(cfg.dtype)))
        return np.ascontiguousarray(array.T if transpose else array)

    tmp = atomic.staging_dir(path)
    try:
        metadata = {"format": "pt", "rlvjax_export_id": uuid.uuid4().hex,
                    **({"rlvjax_step": str(step)} if step is not None else {}), **(stamp or {})}
        for filename, names in split.filename_to_tensors.items():
            save_file({name: host(name) for name in names}, str(tmp / filename), metadata=metadata)
        if split.is_sharded:
            index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        (tmp / "config.json").write_text(json.dumps(config_to_hf(cfg, tokenizer), indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
            _portable_tokenizer_class(tmp / "tokenizer_config.json")
            _warn_if_auto_reads_otherwise(tmp, tokenizer, path)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        from rlvjax.checkpoint import DiskFullError
        from rlvjax.cli import out_of_space

        if out_of_space(e):
            raise DiskFullError(f"the disk under {path.parent} filled up while writing {path.name}; nothing was "
                                "written there: free some space and run the command again (a training run's: with "
                                "--resume)") from e
        raise
    atomic.replace_dir(tmp, path, overwrite=overwrite is not False)


def _portable_tokenizer_class(path: Path) -> None:
    """transformers v5 names a plain fast tokenizer's class ``TokenizersBackend``, which v4 cannot resolve; both
    resolve ``PreTrainedTokenizerFast``, the same class in v5."""
    if path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
        if config.get("tokenizer_class") == "TokenizersBackend":
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
            path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def check_replaceable(path: Path, *, only_a_model: bool = True) -> None:
    """A save replaces ``path`` whole (``atomic.check_replaceable``) and, ``only_a_model``, is refused for a folder
    holding anything but an earlier export, stamped (``export_stamp``) by ``save_hf`` (transformers'
    ``save_pretrained`` only ever adds files; a default ``save_hf`` deleted a downloaded model's own)."""
    atomic.check_replaceable(path)
    if only_a_model and path.is_dir() and any(path.iterdir()) and not (
            (path / "config.json").is_file() and "rlvjax_export_id" in export_stamp(path)):
        raise ValueError(f"{path} holds files that are not an earlier rlvjax export (a model another tool saved keeps "
                         "its README, license and files of its own), which the save would delete; save into a new or "
                         "empty directory, or an earlier export")


def hf_tensor_names(cfg: ModelConfig) -> list[str]:
    """The tensors an HF checkpoint of this config holds, in the HF naming."""
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    for i in range(cfg.num_layers):
        layer = f"model.layers.{i}."
        names += [f"{layer}self_attn.{x}_proj.weight" for x in "qkvo"]
        names += [f"{layer}self_attn.{x}_proj.bias" for x in "qkv" if cfg.qkv_bias]
        names += [f"{layer}self_attn.o_proj.bias"] if cfg.o_bias else []
        names += [f"{layer}self_attn.{x}_norm.weight" for x in "qk" if cfg.qk_norm]
        names += [f"{layer}mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
        names += [f"{layer}input_layernorm.weight", f"{layer}post_attention_layernorm.weight"]
    return names if cfg.tie_word_embeddings else names + ["lm_head.weight"]
