"""The Flax model against transformers (PyTorch, float32) on random tiny Qwen2 and Llama checkpoints."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import rlvjax
from flax import nnx
from rlvjax.model import transformer
from rlvjax.model.transformer import KVCache

KINDS = ["qwen2", "qwen2_tied", "llama", "llama_tied", "qwen3", "mistral"]


def torch_logits(model, ids, mask):
    # Positions from the mask, as generate() does, so left padding does not shift the rotary phases.
    pos = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(pos))
    return out.logits.numpy()


def left_padded_batch(vocab, seed=0):
    rng = np.random.default_rng(seed)
    lengths = [12, 7, 1]
    ids = np.zeros((3, 12), np.int64)
    mask = np.zeros((3, 12), np.int64)
    for row, n in enumerate(lengths):
        ids[row, 12 - n:] = rng.integers(3, vocab, n)
        mask[row, 12 - n:] = 1
    return ids, mask


@pytest.mark.parametrize("kind", KINDS)
def test_logits_match_transformers(hf_checkpoint, kind):
    path, ref = hf_checkpoint(kind)
    model, tok = rlvjax.load_hf(path)
    assert tok.convert_tokens_to_ids("Yes") == 4
    ids, mask = left_padded_batch(ref.config.vocab_size)
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    theirs = torch_logits(ref, ids, mask)
    valid = mask.astype(bool)
    np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=0)
    # Unpadded forward without a mask agrees too.
    full = np.asarray(model(jnp.asarray(ids[:1])))
    np.testing.assert_allclose(full[0], theirs[0], atol=1e-4, rtol=0)


ROPE_SCALINGS = [None, {"rope_type": "linear", "factor": 4.0},
                 {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}]


@pytest.mark.parametrize("theta", [1e4, 4e4, 7.5e4, 1e5, 5e5, 1e6])
@pytest.mark.parametrize("scaling", ROPE_SCALINGS)
def test_rope_frequencies_are_transformers_float32_ones(theta, scaling):
    """Computed in float64, up to 78% of the frequencies differed from transformers' float32 ones (by up to 6 units
    in the last place): a phase error that grows with the position; with numpy's float32 ``pow`` on an AVX-512 host,
    up to 31% (by 2). torch's own ``pow`` (SLEEF's, within 1 ULP) still leaves a few 1-2 ULP apart (up to 9.4% of
    a head's, over 1,440 thetas and head_dims on that host)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from rlvjax.model.hf_config import config_from_hf

    for head_dim in (64, 80, 128, 256):
        hf = dict(vocab_size=8, hidden_size=16 * head_dim, intermediate_size=8, num_hidden_layers=1,
                  num_attention_heads=16, rope_theta=theta, max_position_embeddings=131072,
                  **({"rope_scaling": scaling} if scaling else {}))
        ours = transformer.rope_inv_freq(config_from_hf({"model_type": "llama", **hf}))
        theirs = LlamaRotaryEmbedding(LlamaConfig(**hf)).inv_freq.numpy()
        assert ours.dtype == np.float32 and ours.shape == (head_dim // 2,)
        np.testing.assert_array_max_ulp(ours, theirs, maxulp=2)
        assert np.mean(ours != theirs) <= 0.1, (head_dim, np.flatnonzero(ours != theirs))


def test_logits_match_transformers_at_long_positions(tmp_path):
    """4,096 positions, head_dim 128, theta 1e6 (Qwen2.5's), attention sharpened as a trained model's is: the last
    positions' logits still agree (float64 frequencies were 2.6e-3 off here)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    ref = Qwen2ForCausalLM(Qwen2Config(vocab_size=96, hidden_size=256, intermediate_size=112, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=1, head_dim=128, rope_theta=1e6,
                                       max_position_embeddings=32768)).eval()
    with torch.no_grad():
        for layer in ref.model.layers:
            layer.self_attn.q_proj.weight.mul_(30)
            layer.self_attn.k_proj.weight.mul_(30)
    ref.save_pretrained(tmp_path)
    model, _ = rlvjax.load_hf(tmp_path, tokenizer=False)
    ids = np.random.default_rng(0).integers(3, 96, (1, 4096))
    ours = np.asarray(model(jnp.asarray(ids)))[0, -256:]
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor(ids)).logits.numpy()[0, -256:]
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["qwen2", "llama", "qwen3", "mistral"])
def test_save_hf_round_trip(hf_checkpoint, tmp_path, kind):
    path, ref = hf_checkpoint(kind)
    model, tok = rlvjax.load_hf(path)
    rlvjax.save_hf(model, tok, tmp_path / "export")
    assert_transformers_reads_it_as(tmp_path / "export", ref, seed=1)
    again, _ = rlvjax.load_hf(tmp_path / "export")
    assert again.config == model.config


def assert_transformers_reads_it_as(export, ref, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """transformers loads the exported directory with the reference model's logits; returns the batch compared
    ``(ids, mask, valid)``."""
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(export).eval()
    ids, mask = left_padded_batch(ref.config.vocab_size, seed=seed)
    valid = mask.astype(bool)
    np.testing.assert_allclose(torch_logits(reloaded, ids, mask)[valid], torch_logits(ref, ids, mask)[valid],
                               atol=1e-5, rtol=0)
    return ids, mask, valid


def test_a_large_export_is_sharded_as_save_pretrained_shards(hf_checkpoint, tmp_path):
    from safetensors.numpy import load_file

    path, ref = hf_checkpoint("qwen2")
    model, tok = rlvjax.load_hf(path)
    whole = load_file(path / "model.safetensors")
    total = sum(t.nbytes for t in whole.values())
    rlvjax.save_hf(model, tok, tmp_path / "export", max_shard_size=total // 3)
    index = json.loads((tmp_path / "export" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and not (tmp_path / "export" / "model.safetensors").exists()
    assert index["metadata"]["total_size"] == total and index["weight_map"].keys() == whole.keys()
    for shard in shards:
        tensors = load_file(tmp_path / "export" / shard)
        assert sum(t.nbytes for t in tensors.values()) <= total // 3 or len(tensors) == 1, shard
        assert all(index["weight_map"][name] == shard for name in tensors)
    ids, mask, valid = assert_transformers_reads_it_as(tmp_path / "export", ref, seed=2)
    again, _ = rlvjax.load_hf(tmp_path / "export")
    np.testing.assert_array_equal(np.asarray(again(jnp.asarray(ids), jnp.asarray(mask)))[valid],
                                  np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))[valid])

def test_fields_a_config_leaves_out_take_transformers_defaults():
    import transformers

    from rlvjax.model.hf_config import config_from_hf

    sizes = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4)
    for model_type, family in (("llama", "Llama"), ("qwen2", "Qwen2"), ("qwen3", "Qwen3"), ("mistral", "Mistral")):
        reference = getattr(transformers, f"{family}Config")(**sizes)
        # the head's width where none is given: Qwen3's own default (128), the others' hidden_size / heads
        head_dim = getattr(reference, "head_dim", None) or reference.hidden_size // reference.num_attention_heads
        window = {"sliding_window": None} if model_type == "mistral" else {}  # (its default window is refused)
        # a null field (some exporters write them) is an absent one
        nulls = dict.fromkeys(("max_position_embeddings", "rope_theta", "rms_norm_eps", "tie_word_embeddings",
                               "num_key_value_heads", "rope_scaling") + (("head_dim",) if family != "Qwen3" else ()))
        for cfg in (config_from_hf({"model_type": model_type, **sizes, **window}),
                    config_from_hf({"model_type": model_type, **sizes, **window, **nulls})):
            assert (cfg.max_position_embeddings, cfg.rope_theta, cfg.rms_norm_eps, cfg.tie_word_embeddings,
                    cfg.kv_dim) == (
                reference.max_position_embeddings, reference.rope_parameters["rope_theta"], reference.rms_norm_eps,
                reference.tie_word_embeddings, head_dim), model_type


def test_sliding_windows_are_read_as_transformers_reads_them():
    """Which configs slide is taken from transformers itself (``Qwen2Config.layer_types``): a Qwen2 config that
    turns sliding on without naming a window gets transformers' 4096 (it loaded as full attention, its logits off
    from position 4096 on), an explicit null window is none, and Llama never slides (it was refused)."""
    import transformers

    from rlvjax.model.hf_config import config_from_hf

    sizes = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4)
    for model_type, family in (("qwen2", "Qwen2"), ("qwen3", "Qwen3"), ("llama", "Llama"), ("mistral", "Mistral")):
        reference = getattr(transformers, f"{family}Config")
        for fields in ({"use_sliding_window": True, "max_window_layers": 0},
                       {"use_sliding_window": True, "max_window_layers": 0, "sliding_window": None},
                       {"use_sliding_window": True, "max_window_layers": 1, "sliding_window": 8},
                       {"use_sliding_window": False, "max_window_layers": 0, "sliding_window": 8},
                       # layer_types naming a sliding layer, sliding off: full attention (it was refused; review)
                       {"use_sliding_window": False, "sliding_window": 8,
                        "layer_types": ["sliding_attention", "full_attention"]},
                       {}):
            config = {"model_type": model_type, **sizes, **fields}
            loaded = reference.from_dict(config)
            if family == "Mistral":  # every layer slides where a window is set
                slides = loaded.sliding_window is not None
            elif family == "Llama":  # transformers' Llama attends to every token, whatever its config says
                slides = False
            else:  # a layer slides where layer_types says so, by sliding_window (None: by none)
                slides = "sliding_attention" in (getattr(loaded, "layer_types", None) or ()) and \
                    getattr(loaded, "sliding_window", None) is not None
            if slides:
                with pytest.raises(ValueError, match="^sliding-window attention .*is not supported"):
                    config_from_hf(config)
            else:
                config_from_hf(config)
            expected = (fields.get("sliding_window", 4096) is not None and (
                model_type == "mistral" or model_type.startswith("qwen") and fields.get("max_window_layers", 28) < 2
                and fields.get("use_sliding_window", False)))
            assert slides == expected, (model_type, fields)
        # an absent num_key_value_heads is transformers' default (Qwen 32, Mistral 8, Llama the heads): a Mistral
        # config without it loaded in transformers, and rlvjax refused its weights' shapes (review 2026-12-07)
        wide = {"model_type": model_type, **sizes, "hidden_size": 512, "num_attention_heads": 64,
                "sliding_window": None}
        assert config_from_hf(wide).num_kv_heads == reference.from_dict(wide).num_key_value_heads, model_type


def test_a_config_with_malformed_numbers_is_one_line():
    from rlvjax.model.hf_config import config_from_hf

    sizes = dict(model_type="qwen2", vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
                 num_attention_heads=4)
    # 2.0 heads were taken as they were; '28' raised a TypeError deep in the sliding-window check
    for field, value in (("num_key_value_heads", 2.0), ("head_dim", "16"), ("max_window_layers", "28"),
                         ("rope_theta", -1), ("rms_norm_eps", "1e-6"), ("max_position_embeddings", True)):
        with pytest.raises(ValueError, match=rf"^config.json: {field}={value!r}: head counts, dims and positions "
                                             "must be whole numbers, rope_theta and rms_norm_eps positive numbers"):
            config_from_hf({**sizes, field: value})
    assert config_from_hf({**sizes, "rope_theta": 10000, "num_key_value_heads": 2}).num_kv_heads == 2
    # the same inside rope_parameters (a string theta was a TypeError), and rope parameters that are no object
    with pytest.raises(ValueError, match=r"^config.json: rope_parameters.rope_theta='1e6' must be a positive number"):
        config_from_hf({**sizes, "rope_parameters": {"rope_type": "default", "rope_theta": "1e6"}})
    with pytest.raises(ValueError, match=r"^config.json: rope_scaling / rope_parameters = 'linear' is not an object"):
        config_from_hf({**sizes, "rope_scaling": "linear"})
    null = config_from_hf({**sizes, "rope_theta": 5e5, "rope_parameters": {"rope_type": "default", "rope_theta": None}})
    assert null.rope_theta == 5e5  # a null field is an absent one


def test_old_style_rope_scaling_loads_and_exports_as_transformers_reads_it(hf_checkpoint, tmp_path):
    """A transformers-v4 config names the scaling ``type``; the export must keep it (as ``rope_type``)."""
    import shutil

    from transformers import AutoModelForCausalLM

    path, _ = hf_checkpoint("llama_tied")
    v4 = tmp_path / "v4"
    shutil.copytree(path, v4)
    config = json.loads((v4 / "config.json").read_text())
    config.pop("rope_parameters", None)
    config.update(rope_theta=10000.0, rope_scaling={"type": "linear", "factor": 4.0})
    (v4 / "config.json").write_text(json.dumps(config))
    ref = AutoModelForCausalLM.from_pretrained(v4).eval()
    ids, mask = left_padded_batch(ref.config.vocab_size)
    valid = mask.astype(bool)
    model, tok = rlvjax.load_hf(v4)
    assert dict(model.config.rope_scaling) == {"rope_type": "linear", "factor": 4.0}
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))[valid],
                               torch_logits(ref, ids, mask)[valid], atol=1e-4, rtol=0)
    rlvjax.save_hf(model, tok, tmp_path / "export")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    np.testing.assert_allclose(torch_logits(reloaded, ids, mask)[valid], torch_logits(ref, ids, mask)[valid],
                               atol=1e-5, rtol=0)
    # v4 reads rope_scaling and warns on every load about a rope_theta inside it; the theta is at the top level
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    assert exported["rope_scaling"] == {"rope_type": "linear", "factor": 4.0} and exported["rope_theta"] == 10000.0


@pytest.mark.parametrize("kind, edit", [
    # a rope_scaling added to a transformers-v5 config (its rope_theta inside rope_parameters) replaces
    # rope_parameters whole: transformers then takes rope_theta from the top level (absent: 10000), not from inside
    ("qwen2", {"rope_scaling": {"type": "linear", "factor": 2.0}}),
    ("qwen2", {"rope_scaling": {"rope_type": "default"}}),
    # a top-level original_max_position_embeddings overrides llama3's own (16 here), as transformers loads it
    ("llama", {"original_max_position_embeddings": 64}),
    # llama3 without one anywhere: transformers takes max_position_embeddings (256 here)
    ("llama", {"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "rope_theta": 1000.0}}),
])
def test_rope_fields_in_two_places_are_read_as_transformers_reads_them(hf_checkpoint, tmp_path, kind, edit):
    import shutil

    from transformers import AutoModelForCausalLM

    path, _ = hf_checkpoint(kind)
    edited = tmp_path / "edited"
    shutil.copytree(path, edited)
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, **edit}))
    ref = AutoModelForCausalLM.from_pretrained(edited).eval()
    ids, mask = left_padded_batch(ref.config.vocab_size)
    valid = mask.astype(bool)
    model, _ = rlvjax.load_hf(edited)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))[valid],
                               torch_logits(ref, ids, mask)[valid], atol=1e-4, rtol=0)


@pytest.mark.parametrize("block", [None, 5])
def test_incremental_decoding_equals_full_forward(hf_checkpoint, monkeypatch, block):
    """Rows of different lengths in one cache (each row's slot is its position): a prefill, single tokens and a
    3-token chunk, each row growing by its own count, give the full pass's logits at every real position. With
    ``block`` = 5 the 16-slot cache is stored in blocks of 5, 5, 5 and 1 slots: chunks straddle blocks, and early
    steps skip the blocks no row has reached (merged under the online softmax once they are read)."""
    if block:
        monkeypatch.setattr(transformer, "KV_BLOCK", block)
        monkeypatch.setattr(transformer, "KV_MAX_BLOCKS", 100)
    path, _ = hf_checkpoint("qwen2")
    model, _ = rlvjax.load_hf(path, tokenizer=False)
    rng = np.random.default_rng(2)
    seqs = [rng.integers(3, model.config.vocab_size, n).tolist() for n in (12, 7, 3)]
    cache = KVCache.init(model.config, batch=3, max_len=16)
    assert [b.shape[2] for b in cache.k[0]] == ([5, 5, 5, 1] if block else [16])
    got = [[] for _ in seqs]
    # Each round feeds every row its next `take` tokens (right-padded; a finished row feeds nothing).
    for take in (5, 1, 1, 1, 1, 3, 3):
        chunk_ids = np.zeros((3, take), np.int64)
        real = np.zeros((3, take), bool)
        for row, seq in enumerate(seqs):
            part = seq[int(cache.length[row]):int(cache.length[row]) + take]
            chunk_ids[row, :len(part)], real[row, :len(part)] = part, True
        logits, cache = model.forward(jnp.asarray(chunk_ids), jnp.asarray(real), cache)
        for row in range(3):
            got[row] += list(np.asarray(logits)[row, real[row]])
    assert np.asarray(cache.length).tolist() == [12, 7, 3]
    for row, seq in enumerate(seqs):
        full = np.asarray(model(jnp.asarray([seq])))[0]
        np.testing.assert_allclose(np.stack(got[row]), full, atol=1e-5, rtol=0)


def test_bf16_runs_and_stays_close(hf_checkpoint):
    path, ref = hf_checkpoint("qwen2")
    model, _ = rlvjax.load_hf(path, dtype=jnp.bfloat16, tokenizer=False)
    assert model.layers[0].self_attn.q_proj.kernel.dtype == jnp.bfloat16
    ids, mask = left_padded_batch(ref.config.vocab_size)
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).astype(jnp.float32))
    valid = mask.astype(bool)
    # the tiny model's logits are ~0.16 in scale and bf16's own gap ~0.005: 0.015 fails a dropped norm (0.05-0.06)
    np.testing.assert_allclose(ours[valid], torch_logits(ref, ids, mask)[valid], atol=0.015, rtol=0)


def test_load_errors_name_the_tensor(hf_checkpoint, tmp_path):
    from safetensors.numpy import load_file, save_file

    path, _ = hf_checkpoint("qwen2")
    tensors = load_file(path / "model.safetensors")
    config = (path / "config.json").read_text()

    def variant(name, mutate):
        d = tmp_path / name
        d.mkdir()
        t = dict(tensors)
        cfg = json.loads(config)
        mutate(t, cfg)
        save_file(t, d / "model.safetensors")
        (d / "config.json").write_text(json.dumps(cfg))
        return d

    missing = variant("missing", lambda t, c: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match="layers/1/mlp/up_proj/kernel"):
        rlvjax.load_hf(missing, tokenizer=False)
    shape = variant("shape", lambda t, c: t.update({"model.norm.weight": np.ones(3, np.float32)}))
    with pytest.raises(ValueError, match=r"model\.norm\.weight.*shape"):
        rlvjax.load_hf(shape, tokenizer=False)
    unknown = variant("unknown", lambda t, c: t.update({"model.extra.weight": np.ones(3, np.float32)}))
    with pytest.raises(ValueError, match=r"unknown tensor 'model\.extra\.weight'"):
        rlvjax.load_hf(unknown, tokenizer=False)
    arch = variant("arch", lambda t, c: c.update({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="unsupported architecture"):
        rlvjax.load_hf(arch, tokenizer=False)
    # Config fields that change what the model computes, which rlvjax does not implement, are refused at load.
    refused = {
        "gelu": ({"hidden_act": "gelu"}, r"hidden_act='gelu' is not supported: rlvjax's MLP is SwiGLU"),
        "gptq": ({"quantization_config": {"quant_method": "gptq"}},
                 r"quantized weights \(quantization_config: gptq\) are not supported; use a bf16, f16 or f32"),
        "yarn": ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
                 "unsupported rope_type 'yarn'; rlvjax implements default, linear and llama3: remove the rope scaling "
                 "from config.json"),
        "linear_no_factor": ({"rope_scaling": {"type": "linear"}},
                             r"config.json's rope scaling \{'rope_type': 'linear'\} lacks 'factor'"),
        "sliding": ({"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1, "layer_types": None},
                    "sliding-window attention is not supported"),
        # transformers v5's layer_types list the sliding layer; use_sliding_window=false turns it off there too
        "sliding_layer": ({"layer_types": ["full_attention", "sliding_attention"], "use_sliding_window": True,
                           "sliding_window": 4}, "^sliding-window attention is not supported; set "
                                                 "use_sliding_window=false in config.json$"),
    }
    for name, (fields, message) in refused.items():
        with pytest.raises(ValueError, match=message):
            rlvjax.load_hf(variant(name, lambda t, c, f=fields: c.update(f)), tokenizer=False)
    # Sliding from layer max_window_layers on: none of the 2 layers slides, as in transformers; nor without a window
    # (max_window_layers defaults to 28), nor where config.json's layer_types (transformers v5) say full attention.
    def sliding_config(fields, drop=()):
        def mutate(t, c):
            c.update(use_sliding_window=True, **fields)
            for key in drop:
                c.pop(key)
        return mutate

    for name, mutate in (("no_layer_slides", sliding_config(dict(max_window_layers=2, sliding_window=4),
                                                            ["layer_types"])),
                         ("no_window", sliding_config(dict(sliding_window=None), ["layer_types", "max_window_layers"])),
                         ("default_28", sliding_config(dict(sliding_window=4), ["layer_types", "max_window_layers"])),
                         ("layer_types_full", sliding_config(dict(sliding_window=4, max_window_layers=1)))):
        rlvjax.load_hf(variant(name, mutate), tokenizer=False)
    twice = variant("twice", lambda t, c: None)
    save_file({"model.norm.weight": np.zeros(64, np.float32)}, twice / "zz-extra.safetensors")
    with pytest.raises(ValueError, match=r"tensor 'model\.norm\.weight' is in zz-extra\.safetensors and in another"):
        rlvjax.load_hf(twice, tokenizer=False)
    index = variant("index", lambda t, c: None)
    (index / "model.safetensors.index.json").write_text('{"metadata": {}, ')
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json is not a shard index with a weight_map"):
        rlvjax.load_hf(index, tokenizer=False)
    grown = variant("grown", lambda t, c: None)
    tokenizer = rlvjax.load_hf(path)[1]
    tokenizer.add_tokens(["<extra>"])  # one id past the embedding table
    tokenizer.save_pretrained(grown)
    with pytest.raises(ValueError, match=r"grown's tokenizer has 97 tokens, more than the model's vocab_size=96; use "
                                         "the tokenizer saved with these weights"):
        rlvjax.load_hf(grown)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(config)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="safetensors"):
        rlvjax.load_hf(pickled, tokenizer=False)
    # None loaded f32 arrays labelled float64 (and exported so: twice the memory in transformers); 'auto' and
    # integer types failed deep in numpy or an initializer
    for name, dtype in (("dtype", None), ("dtype", "auto"), ("dtype", "int8"), ("compute_dtype", "bf16")):
        with pytest.raises(ValueError, match=rf"^load_hf: {name}={dtype!r} is not a floating dtype; pass e.g. "):
            rlvjax.load_hf(path, tokenizer=False, **{"dtype": jnp.float32, name: dtype})


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_bfloat16_compute_stays_within_tolerance_of_float32(hf_checkpoint, kind):
    """f32 weights, bf16 matmuls / activations / KV cache, f32 logits: log-probs within 0.02 nats of f32 compute
    (docs/benchmarks.md has the gap on a trained policy), and really computed in bf16 (not equal to f32)."""
    path, ref = hf_checkpoint(kind)
    f32, _ = rlvjax.load_hf(path)
    bf16, _ = rlvjax.load_hf(path, compute_dtype=jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype(jnp.float32)}
    assert KVCache.init(bf16.config, 1, 4).k[0][0].dtype == jnp.bfloat16
    ids, mask = left_padded_batch(ref.config.vocab_size, seed=3)
    valid = mask.astype(bool)
    exact, mixed = (np.asarray(jax.nn.log_softmax(m(jnp.asarray(ids), jnp.asarray(mask))))[valid] for m in (f32, bf16))
    assert mixed.dtype == np.float32
    gap = np.abs(mixed - exact).max()
    assert 0 < gap < 0.02, gap


@pytest.mark.parametrize("kind", ["qwen2", "qwen2_tied"])
def test_bfloat16_compute_sums_embedding_gradients_in_float32(hf_checkpoint, kind):
    """The embedding is looked up in the weights' f32 and then cast: a table cast to bf16 first made the backward
    pass a bf16 scatter-add: here token 7's row was 4.3-4.8% off the f32 one (now 0.6%); under the RL loss of an
    8 x 219-token batch, 24-31% for a token used 800 times."""
    path, ref = hf_checkpoint(kind)
    ids = np.random.default_rng(0).integers(4, ref.config.vocab_size, size=(8, 256))
    ids[:, ::2] = 7  # token 7: 1,024 uses
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(8, 256, ref.config.vocab_size)), jnp.float32)

    def embedding_grad(compute_dtype):
        model, _ = rlvjax.load_hf(path, compute_dtype=compute_dtype, tokenizer=False)
        graphdef, params = nnx.split(model)
        loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(jnp.asarray(ids)) * weights)  # noqa: E731
        return np.asarray(jax.grad(loss)(params)["embed_tokens"]["embedding"][...])

    exact, mixed = embedding_grad(None), embedding_grad(jnp.bfloat16)
    error = np.linalg.norm(mixed[7] - exact[7]) / np.linalg.norm(exact[7])
    assert 0 < error < 0.02, error


def test_bfloat16_compute_sums_norm_and_bias_gradients_in_float32(hf_checkpoint):
    """A norm's weight and a bias meet every token: applied in bf16, their gradient was a bf16 sum over the batch
    (review 2026-12-06): 100,000 tokens' gradient of 1 each came to 8,192, and here, 16 x 512 tokens under a random
    loss, 2.3-4.8% off the f32 compute's (now 0.5-1.1%, as the matrices'). The forward is unchanged by it: a bias
    is added to the f32 product and rounded once, as torch's bf16 linear does (bit-equal here)."""
    import torch
    from rlvjax.model.transformer import Linear, ModelConfig, RMSNorm

    cfg = ModelConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_layers=1, num_heads=2, num_kv_heads=1,
                      compute_dtype="bfloat16")
    linear = Linear(8, 4, use_bias=True, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(0),
                    bias_init=nnx.initializers.normal(1.0))
    ones = jnp.ones((100_000, 8), jnp.float32)
    total = lambda m, x: m(x).astype(jnp.float32).sum()  # noqa: E731
    np.testing.assert_allclose(nnx.grad(total)(linear, ones.astype(jnp.bfloat16)).bias[...], 100_000, rtol=2 ** -8)
    np.testing.assert_allclose(nnx.grad(total)(RMSNorm(8, 1e-6, cfg), ones).weight[...], 100_000, rtol=2 ** -8)
    x = np.asarray(jax.random.normal(jax.random.key(1), (512, 8)) * 3, np.float32)
    kernel, bias = (torch.tensor(np.asarray(a)).bfloat16() for a in (linear.kernel[...], linear.bias[...]))
    expected = torch.nn.functional.linear(torch.tensor(x).bfloat16(), kernel.T, bias).float().numpy()
    np.testing.assert_array_equal(np.asarray(linear(jnp.asarray(x)).astype(jnp.float32)), expected)

    path, ref = hf_checkpoint("qwen2")
    ids = jnp.asarray(np.random.default_rng(0).integers(4, ref.config.vocab_size, size=(16, 512)))
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(16, 512, ref.config.vocab_size)), jnp.float32)

    def grads(compute_dtype):
        model, _ = rlvjax.load_hf(path, compute_dtype=compute_dtype, tokenizer=False)
        graphdef, params = nnx.split(model)
        grad = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(ids) * weights))(params)
        return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(grad)
                if "bias" in jax.tree_util.keystr(k) or "norm" in jax.tree_util.keystr(k)}

    exact, mixed = grads(None), grads(jnp.bfloat16)
    errors = {k: np.linalg.norm(mixed[k] - exact[k]) / np.linalg.norm(exact[k]) for k in exact}
    assert len(errors) >= 8 and all(0 < e < 0.02 for e in errors.values()), errors


def test_a_decode_step_reads_cache_blocks_only_up_to_its_live_rows():
    """A finished row's stale length (900 of 1024 slots) made every step read all blocks up to it; only live rows
    set how far the cache is read. Blocks past the live row hold NaN: read, they would turn its output NaN."""
    from rlvjax.model.transformer import cached_attention

    rng = np.random.default_rng(0)
    blocks = (4, 4, 4)  # slots 0-3, 4-7, 8-11
    k = tuple(jnp.asarray(rng.normal(size=(2, 1, n, 8)), jnp.float32) for n in blocks)
    v = tuple(jnp.asarray(rng.normal(size=(2, 1, n, 8)), jnp.float32) for n in blocks)
    k, v = k[:1] + tuple(jnp.full_like(b, jnp.nan) for b in k[1:]), v[:1] + tuple(jnp.full_like(b, jnp.nan)
                                                                              for b in v[1:])
    q = jnp.asarray(rng.normal(size=(2, 1, 1, 1, 8)), jnp.float32)  # [B, T, kv_heads, groups, D]
    slots = jnp.asarray([[10], [2]])  # row 0: finished at slot 10; row 1: live at slot 2
    live = jnp.asarray([[False], [True]])
    out = np.asarray(jax.jit(cached_attention)(q, k, v, slots, live))[1, 0, 0, 0]
    s = np.asarray(q)[1, 0, 0, 0] @ np.asarray(k[0])[1, 0, :3].T / np.sqrt(8)
    p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    np.testing.assert_allclose(out, p @ np.asarray(v[0])[1, 0, :3], rtol=1e-5, atol=1e-6)
    assert np.isnan(np.asarray(jax.jit(cached_attention)(q, k, v, slots))[1]).all()  # all rows live: read to 10
