"""Shared test setup: offline hubs, float32 on CPU, and tiny random HF checkpoints built with transformers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tests compile more than they run: XLA's CPU backend skips LLVM's optimisations (cold cache, 2 cores:
# test_steps.py 190 -> 137 s, test_pipeline.py 209 -> 188 s though its longest training ran 78 -> 88 s).
# Subprocesses inherit it (``xla_flags`` keeps it where a test fakes devices).
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Two tiers: `pytest -m "not slow"` (~3 min on 2 cores, for the inner loop) and the full suite that CI runs. Slow:
# these modules whole (subprocesses, notebooks, multi-host, end-to-end training) and tests marked one by one.
SLOW_MODULES = {"test_cli", "test_dry_run", "test_export", "test_grader_fuzz", "test_install", "test_launch",
                "test_multihost", "test_notebooks", "test_pipeline", "test_reliability", "test_train"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer over ``vocab_size`` ids (specials first) that transformers can save and reload."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = specials + ["Yes", "No"] + [f"w{i}" for i in range(vocab_size - len(specials) - 2)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


HF_CONFIGS = {
    # GQA (4 heads over 2 kv heads), qkv bias, untied head.
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=False, num_key_value_heads=2),
    # Tied embeddings, Qwen2.5-1.5B style.
    "qwen2_tied": dict(model_type="qwen2", tie_word_embeddings=True, num_key_value_heads=2),
    # Llama with llama3 rope scaling, o/qkv bias and a head_dim that is not hidden/heads.
    "llama": dict(model_type="llama", tie_word_embeddings=False, num_key_value_heads=1, attention_bias=True,
                  head_dim=24, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "llama_tied": dict(model_type="llama", tie_word_embeddings=True, num_key_value_heads=4),
    # Qwen3: query/key norms, a head_dim that is not hidden/heads, tied (Qwen3-0.6B to 4B style), no biases.
    "qwen3": dict(model_type="qwen3", tie_word_embeddings=True, num_key_value_heads=2, head_dim=24),
    # Mistral: no biases, GQA, no sliding window (Mistral-7B-v0.2 on), untied.
    "mistral": dict(model_type="mistral", tie_word_embeddings=False, num_key_value_heads=2, sliding_window=None),
}


def xla_flags(devices: int) -> str:
    """``XLA_FLAGS`` for a subprocess that fakes ``devices`` CPU devices, keeping the tests' own flags."""
    return f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}"


def make_hf_model(kind: str, seed: int = 0):
    import torch
    import transformers

    spec = dict(HF_CONFIGS[kind])
    model_type = spec.pop("model_type")
    family = {"qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama", "mistral": "Mistral"}[model_type]
    common = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=256, rope_theta=1000.0, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    common.update(spec)
    config_cls, model_cls = getattr(transformers, f"{family}Config"), getattr(transformers, f"{family}ForCausalLM")
    torch.manual_seed(seed)
    model = model_cls(config_cls(**common)).eval()
    with torch.no_grad():  # random init has zero biases and unit norms; perturb them so the mapping is exercised
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """``hf_checkpoint(kind)`` -> (directory, torch model); built once per kind per session."""
    built = {}

    def build(kind: str):
        if kind not in built:
            model = make_hf_model(kind)
            path = tmp_path_factory.mktemp(kind)
            model.save_pretrained(path)
            word_tokenizer(model.config.vocab_size).save_pretrained(path)
            built[kind] = (path, model)
        return built[kind]

    return build


@pytest.fixture(autouse=True)
def _registries_as_rlvjax_left_them():
    """Each test sees only rlvjax's own rewards, estimators and tasks, whatever an earlier test in the worker
    registered (a test listing the names failed after one that registered its own, in some orders)."""
    from rlvjax.data import tasks
    from rlvjax.rewards import registry
    from rlvjax.rl import advantages

    saved = [(table, dict(table)) for table in (tasks._TASKS, registry._REGISTRY, advantages._REGISTRY)]
    steps = set(advantages._STEP_LEVEL)
    yield
    for table, entries in saved:
        table.clear()
        table.update(entries)
    advantages._STEP_LEVEL.intersection_update(steps)
