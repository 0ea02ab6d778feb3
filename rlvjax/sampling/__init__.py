"""The sampling engine (``engine.py``: refill, shrinking, filled-length attention, fused verifier score) and the
token choice it draws with (``choice.py``). Rollouts, evaluation, VinePPO and the bench all sample through here;
test-time search decodes step by step with ``stepwise.py``'s decoder (same keys, resumable, resampled rows)."""

from rlvjax.sampling.choice import (MIN_TEMPERATURE, SamplingParams, bucket_width, categorical, choose, left_pad,
                                   suppress)
from rlvjax.sampling.engine import MIN_BATCH, SampleOutput, cache_slots, generate, prefill, prompt_window, sample

__all__ = ["MIN_BATCH", "MIN_TEMPERATURE", "SampleOutput", "SamplingParams", "bucket_width", "cache_slots",
           "categorical", "choose", "generate", "left_pad", "prefill", "prompt_window", "sample", "suppress"]
