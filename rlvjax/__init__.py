"""rlvjax: train one LLM to be both a math reasoner and its own verifier (RL^V), in JAX."""

import os

# rlvjax uses transformers for tokenizers and configs only: its "PyTorch was not found" advice does not apply.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# XLA's CPU backend runs matmuls through oneDNN: the sampling engine decodes 1.2-1.3x faster on CPU (SmolLM2-135M;
# docs/benchmarks.md). Read when JAX creates its CPU backend, so it applies unless JAX already computed something;
# an explicit --xla_cpu_use_onednn in XLA_FLAGS wins. Other backends ignore xla_cpu_ flags.
if "xla_cpu_use_onednn" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_onednn=true").strip()

from rlvjax.model.hf import load_hf, save_hf
from rlvjax.model.transformer import KVCache, ModelConfig, Transformer

__all__ = ["load_hf", "save_hf", "KVCache", "ModelConfig", "Transformer"]
