"""rlvjax: train one LLM to be both a math reasoner and its own verifier (RL^V), in JAX."""

import os

# rlvjax uses transformers for tokenizers and configs only: its "PyTorch was not found" advice does not apply.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from rlvjax.config import Config
from rlvjax.model.hf import load_hf, save_hf
from rlvjax.model.transformer import KVCache, ModelConfig, Transformer
from rlvjax.rlv_config import RLVConfig
from rlvjax.trainer import RLVTrainer

__all__ = ["Config", "RLVConfig", "RLVTrainer", "load_hf", "save_hf", "KVCache", "ModelConfig", "Transformer"]
