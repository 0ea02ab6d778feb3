"""HF ``config.json`` <-> :class:`ModelConfig`, read as transformers reads it (v4 and v5 layouts, rope fields
given in two places, nulls as absent fields), and refused in one line where rlvjax would compute another model."""

from __future__ import annotations

import jax.numpy as jnp

from rlvjax.model.transformer import ModelConfig, rope_inv_freq

ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM",
                 "mistral": "MistralForCausalLM"}
# transformers' defaults where config.json names none (a head_dim not listed: hidden_size / num_attention_heads)
DEFAULT_POSITIONS = {"qwen2": 32768, "qwen3": 32768, "llama": 2048, "mistral": 131072}
DEFAULT_HEAD_DIM = {"qwen3": 128}


KV_HEADS_DEFAULT = {"qwen2": 32, "qwen3": 32, "mistral": 8}  # transformers' config classes' (Llama: the heads)


def kv_default(model_type: str, heads, absent: bool):
    default = KV_HEADS_DEFAULT.get(model_type) if absent else None
    return default if default and isinstance(heads, int) and heads % default == 0 else heads


def config_from_hf(hf: dict, dtype=jnp.float32, compute_dtype=None) -> ModelConfig:
    """Map an HF ``config.json`` dict (transformers v4 or v5 layout) to ``ModelConfig``; ``dtype`` is the weights',
    ``compute_dtype`` (None: ``dtype``) the matmuls', activations' and KV cache's. A null field is an absent one
    (it takes transformers' default), except Qwen2's ``sliding_window``: absent it is transformers' 4096, null no
    window."""
    window = hf.get("sliding_window", 4096)  # Qwen2's default where absent; an explicit null is no window
    # absent, transformers' default where it groups the heads (Qwen2/Qwen3 32, Mistral 8: such a Mistral loaded in
    # transformers, and rlvjax refused the weights' shapes); null, or a default that cannot be, the head count
    kv_absent = "num_key_value_heads" not in hf
    hf = {k: v for k, v in hf.items() if v is not None}
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture model_type={model_type!r} (architectures={hf.get('architectures')}); "
            f"rlvjax loads {sorted(ARCHITECTURES.values())}; pick a checkpoint of one of those families"
        )
    optional = ("num_key_value_heads", "head_dim", "max_position_embeddings", "max_window_layers")
    bad = [f"{k}={hf[k]!r}" for k in optional if k in hf and not (type(hf[k]) is int and hf[k] >= 0)]
    bad += [f"{k}={hf[k]!r}" for k in ("rope_theta", "rms_norm_eps")
            if k in hf and not (type(hf[k]) in (int, float) and hf[k] > 0)]
    if bad:  # 2.0 heads were taken silently, '28' failed with a TypeError
        raise ValueError(f"config.json: {', '.join(bad)}: head counts, dims and positions must be whole numbers, "
                         "rope_theta and rms_norm_eps positive numbers (use the config.json saved with these weights)")
    layers = hf.get("num_hidden_layers")
    if model_type == "llama":  # transformers' Llama has no sliding window, whatever its config.json says
        sliding = False
    elif model_type == "mistral":  # every layer slides once a window is set (absent: transformers' 4096)
        sliding = window is not None
    elif hf.get("layer_types"):  # transformers v5 writes which layers slide, under use_sliding_window (else none do)
        sliding = bool(hf.get("use_sliding_window")) and window is not None and \
            "sliding_attention" in hf["layer_types"]
    else:  # as transformers derives it: layers from max_window_layers (default 28) on slide, if a window is set
        first = hf.get("max_window_layers", 28)
        sliding = bool(hf.get("use_sliding_window")) and window is not None and (
            isinstance(layers, int) and first < layers)
    if sliding and model_type == "mistral":
        raise ValueError(f"sliding-window attention (sliding_window={window}) is not supported: rlvjax attends to "
                         f"every earlier token; set \"sliding_window\": null in config.json (the same model for "
                         f"sequences of up to {window} tokens)")
    if sliding:
        raise ValueError("sliding-window attention is not supported; set use_sliding_window=false in config.json")
    if hf.get("mlp_bias"):
        raise ValueError("mlp_bias=true is not supported by rlvjax's SwiGLU MLP")
    if hf.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ValueError(f"hidden_act={hf['hidden_act']!r} is not supported: rlvjax's MLP is SwiGLU (silu); pick a "
                         "checkpoint whose config.json has hidden_act='silu'")
    quantized = hf.get("quantization_config")
    if quantized:
        method = quantized.get("quant_method", "?") if isinstance(quantized, dict) else "?"
        raise ValueError(f"quantized weights (quantization_config: {method}) are not supported; use a bf16, f16 or "
                         "f32 checkpoint of the model")
    # As transformers reads them: a rope_scaling (v4's name, or added by hand to a v5 config) replaces
    # rope_parameters whole, rope_theta then coming from the top level (v5 moved it into rope_parameters); llama3's
    # original_max_position_embeddings is the top-level one where given, else its own, else max_position_embeddings.
    given = hf["rope_scaling"] if hf.get("rope_scaling") else hf.get("rope_parameters")
    if given is not None and not isinstance(given, dict):  # a string was a "dictionary update sequence" error
        raise ValueError(f"config.json: rope_scaling / rope_parameters = {given!r} is not an object of rope "
                         "parameters (e.g. {\"rope_type\": \"linear\", \"factor\": 2.0}); use the config.json saved "
                         "with these weights")
    rope = _rope(given)
    theta = rope.pop("rope_theta", None)
    theta = hf.get("rope_theta", 10000.0) if theta is None else theta  # a null one is an absent one, as above
    if not (type(theta) in (int, float) and theta > 0):  # a string was a TypeError traceback
        raise ValueError(f"config.json: rope_parameters.rope_theta={theta!r} must be a positive number (use the "
                         "config.json saved with these weights)")
    positions = int(hf.get("max_position_embeddings", DEFAULT_POSITIONS[model_type]))
    if rope.get("rope_type") == "llama3":
        rope["original_max_position_embeddings"] = next(
            (v for v in (hf.get("original_max_position_embeddings"), rope.get("original_max_position_embeddings"))
             if v is not None), positions)
    scaling = {k: v for k, v in rope.items() if v is not None}
    if scaling.get("rope_type") in (None, "default"):
        scaling = {}
    needed = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    bad = [f"{k}={hf.get(k)!r}" for k in needed if not (isinstance(hf.get(k), int) and hf[k] >= 1)]
    if bad:
        raise ValueError(f"config.json: {', '.join(bad)}; each of {', '.join(needed)} must be a whole number >= 1 "
                         "(use the config.json saved with these weights)")
    head_dim = hf.get("head_dim") or DEFAULT_HEAD_DIM.get(model_type)
    if not head_dim and hf["hidden_size"] % hf["num_attention_heads"]:
        raise ValueError(f"config.json: hidden_size={hf['hidden_size']} does not split into "
                         f"num_attention_heads={hf['num_attention_heads']} heads and there is no head_dim")
    # Qwen2: q/k/v biases, none on o; Mistral: none (transformers ignores attention_bias); Llama, Qwen3: all or none
    bias = bool(hf.get("attention_bias", False)) and model_type != "mistral"
    cfg = ModelConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads") or kv_default(model_type, hf["num_attention_heads"], kv_absent),
        head_dim=head_dim or hf["hidden_size"] // hf["num_attention_heads"],
        rope_theta=float(theta),
        rope_scaling=tuple(sorted(scaling.items())),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=True if model_type == "qwen2" else bias,
        o_bias=False if model_type == "qwen2" else bias,
        qk_norm=model_type == "qwen3",
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=positions,
        architecture=model_type,
        dtype=jnp.dtype(dtype).name,
        compute_dtype=None if compute_dtype is None else jnp.dtype(compute_dtype).name,
    )
    try:
        rope_inv_freq(cfg)  # an unsupported or incomplete rope scaling fails here, not at the first forward pass
    except KeyError as e:
        raise ValueError(f"config.json's rope scaling {dict(cfg.rope_scaling)} lacks {e}; use the config.json saved "
                         "with these weights") from None
    return cfg


def _rope(params: dict | None) -> dict:
    """HF rope parameters with transformers v4's ``type`` under its v5 name, ``rope_type``."""
    params = dict(params or {})
    kind = params.pop("type", None)
    if kind is not None and params.get("rope_type") is None:
        params["rope_type"] = kind
    return params


def config_to_hf(cfg: ModelConfig, tokenizer=None) -> dict:
    if cfg.architecture == "qwen2" and not (cfg.qkv_bias and not cfg.o_bias):
        raise ValueError("a qwen2 export needs qkv_bias=True and o_bias=False (the Qwen2 layout)")
    if cfg.architecture in ("llama", "qwen3") and cfg.qkv_bias != cfg.o_bias:
        raise ValueError(f"a {cfg.architecture} export needs qkv_bias == o_bias (HF's single attention_bias flag)")
    if cfg.architecture == "mistral" and (cfg.qkv_bias or cfg.o_bias):
        raise ValueError("a mistral export needs qkv_bias=False and o_bias=False (Mistral has no attention biases)")
    if cfg.qk_norm != (cfg.architecture == "qwen3"):
        raise ValueError(f"a {cfg.architecture} export needs qk_norm={cfg.architecture == 'qwen3'} (only Qwen3 "
                         "normalises queries and keys)")
    rope = {"rope_theta": cfg.rope_theta, "rope_type": "default", **dict(cfg.rope_scaling)}
    hf = {
        "architectures": [ARCHITECTURES[cfg.architecture]],
        "model_type": cfg.architecture,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.kv_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,  # transformers v4 reads this ...
        "rope_parameters": rope,  # ... and v5 this
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "torch_dtype": cfg.dtype,
    }
    if dict(cfg.rope_scaling):  # v4's rope_scaling: without rope_theta, which v4 warns about on every load
        hf["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    if cfg.architecture in ("llama", "qwen3"):
        hf["attention_bias"] = cfg.qkv_bias
    if cfg.architecture == "llama":
        hf["mlp_bias"] = False
    if cfg.architecture == "qwen3":
        hf["use_sliding_window"] = False
    if cfg.architecture == "mistral":
        hf["sliding_window"] = None  # transformers' default is 4096
    if tokenizer is not None:
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(tokenizer, name, None) is not None:
                hf[name] = getattr(tokenizer, name)
    return hf
