"""rlvjax: train one LLM to be both a math reasoner and its own verifier (RL^V), in JAX."""

from rlvjax.model.hf import load_hf, save_hf
from rlvjax.model.transformer import KVCache, ModelConfig, Transformer

__all__ = ["load_hf", "save_hf", "KVCache", "ModelConfig", "Transformer"]
