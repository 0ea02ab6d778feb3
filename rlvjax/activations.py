"""What the backward pass keeps per training row: the activation model behind ``rlvjax.memory``'s update and warm
start phases (``activation_bytes_per_row``), with how the ``tensor`` axis splits a width (``tensor_split``) and which
remat policies keep every layer's activations (``keeps_activations``). Estimates of what XLA keeps alive, checked
against compiled memory in tests/test_memory.py and tests/test_dry_run.py."""

from __future__ import annotations

import math

from rlvjax.model.transformer import ModelConfig


def layer_activations_per_token(cfg: ModelConfig, seq_len: int, tensor: int) -> int:
    """Bytes one decoder layer keeps per token for its backward pass: in the compute dtype the residual stream and
    the two norm outputs (4D), the q/k/v projections, their rotated copies and the attention output (3q + 3kv), the
    MLP's gate, up, silu(gate) and product (4F); in f32 the two norms' upcast inputs (2D) and, per query token, the
    attention scores, probabilities and their masked copy (3 x H x T); with Qwen3's query/key norms also their
    outputs and upcast inputs (q + kv in each: 3.1 kB a token a layer compiled, 3.07 planned, head_dim 64). Heads and
    MLP split over ``tensor`` where the partition rules split their weights (``tensor_split``), the scores' heads as
    XLA splits them (``score_head_split``: 12 heads over 8 devices, 3 a device; planned whole, 12, the update was 2.3x
    its compiled memory at Qwen2.5-Math's widths; planned 2, 14 heads over 8 were 0.6x: XLA kept 7)."""
    it = cfg.jnp_compute_dtype.itemsize
    d, h, hd = cfg.hidden_size, cfg.num_heads, cfg.kv_dim
    split = lambda n: tensor_split(n, tensor)
    q, kv = split(h * hd), split(cfg.num_kv_heads * hd)
    per_token = it * (4 * d + 3 * q + 3 * kv + 4 * split(cfg.intermediate_size))
    per_token += (it + 4) * (q + kv) if cfg.qk_norm else 0
    heads = h // score_head_split(cfg, tensor) if q < h * hd else h
    return per_token + 4 * 2 * d + heads * seq_len * 3 * 4


def score_head_split(cfg: ModelConfig, tensor: int) -> int:
    """How many ways XLA splits the attention scores' heads over ``tensor``. The query heads split over the largest
    factor of ``tensor`` that divides them (12 heads over 8: 4 ways, 3 a device, the head dimension 2 ways), and the
    scores keep the queries' ``[kv_heads, groups]`` layout, so only a split that tiles it holds: whole kv heads a
    device, or whole groups of one kv head (12 / 2 kv over 4: each device one half of a kv head's 6 queries). Any other
    split is dropped (24 heads / 3 kv over 8: the 8-way split gives a device queries of two kv heads, so every device
    kept all 24 heads' scores; planned at 3 a device, the update was 2.1x its plan at 2 layers)."""
    h, kv = cfg.num_heads, cfg.num_kv_heads
    tiles = lambda f: kv % f == 0 or (f % kv == 0 and (h // kv) % (f // kv) == 0)
    return max(f for f in range(1, tensor + 1) if math.gcd(h, tensor) % f == 0 and tiles(f))


def tensor_split(n: int, tensor: int) -> int:
    """A width of ``n`` per device over the ``tensor`` axis: split where it divides, whole otherwise, as
    ``parallel.spec_for`` splits a weight's dimension (a vocabulary of 8190 over 4 devices stays whole: so do its
    logits, twice the memory of 8192's split ones)."""
    return n // tensor if n % tensor == 0 else n


def keeps_activations(remat: str) -> bool:
    """Whether a remat policy keeps (some of) every layer's activations through the backward pass: "none", and the
    saveable policies, planned as keeping them all (compiled, 4 layers, 256 new tokens: everything_saveable 1.01x
    "none", dots_saveable 0.57x, dots_with_no_batch_dims_saveable 0.42x: planned on the safe side); "full" and
    nothing_saveable keep each layer's input alone."""
    return remat not in ("full", "nothing_saveable")


def activation_bytes_per_row(cfg: ModelConfig, seq_len: int, completion_len: int, tensor: int = 1, *,
                             remat: str = "none", logprob_chunk: int = 0) -> int:
    """Bytes the backward pass keeps for one training row of ``seq_len`` tokens.

    Without remat (or under a policy that saves some, ``keeps_activations``) every layer's activations
    (``layer_activations_per_token``); with remat "full" or nothing_saveable each layer's input in the
    compute dtype and one layer's activations at a time. Then the completion logits ``[N or chunk, V]`` in f32 with
    their softmax and gradient, and the ``[T, T]`` attention mask.
    """
    it = cfg.jnp_compute_dtype.itemsize
    layer = seq_len * layer_activations_per_token(cfg, seq_len, tensor)
    layers = cfg.num_layers * layer if keeps_activations(remat) else \
        cfg.num_layers * seq_len * cfg.hidden_size * it + layer
    positions = min(logprob_chunk or completion_len, completion_len)
    # f32 logits and their gradient, and in a chunk recomputed under jax.checkpoint also their exponentials.
    copies = 3 if positions < completion_len else 2
    logits = positions * tensor_split(cfg.vocab_size, tensor) * copies * 4
    return layers + logits + seq_len * seq_len
