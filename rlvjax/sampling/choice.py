"""Token choice for the sampling engine (``engine.py``): temperature, top-k / top-p, suppressed ids, and the
inverse-CDF draw; and the left padding of prompt batches to bucketed widths.

Returned log-probs are those of the sampling distribution before truncation, ``log_softmax(logits / temperature)``
(raw logits when greedy), the quantity the trainer recomputes for the PPO ratio.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np



MIN_TEMPERATURE = 1e-5  # the smallest positive temperature (vLLM samples greedily below it too)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_ids: tuple[int, ...] = ()
    pad_id: int = 0
    suppress_ids: tuple[int, ...] = ()  # never sampled (padding, control tokens); see ``suppress``

    def __post_init__(self):
        if not self.temperature >= 0 or self.temperature == float("inf"):  # NaN too
            raise ValueError(f"temperature={self.temperature} must be a finite number >= 0 (0 means greedy)")
        if 0 < self.temperature < MIN_TEMPERATURE:  # 1e-38 divided into inf and NaN
            raise ValueError(f"temperature={self.temperature} is below {MIN_TEMPERATURE}, where sampling is the "
                             "argmax in float32: pass 0 for greedy, or a larger temperature")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 disables it)")


def bucket_width(longest: int) -> int:
    """The padded width of a prompt batch whose longest prompt has ``longest`` tokens: the next power of two from 16
    up to 256, then the next multiple of 256. Every width is one compilation of the sampler and the update, so a
    run whose prompts reach L tokens compiles at most 5 + ceil((L - 256) / 256) of them (8 for MATH's 1024)."""
    if longest <= 256:
        return max(16, 1 << max(0, longest - 1).bit_length())
    return -(-longest // 256) * 256


def left_pad(prompts, prompt_mask=None, *, pad_id: int = 0, bucket: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ragged lists, or a left- or right-padded ``[B, T]`` array with its mask -> left-padded ``(ids, mask)``.

    The width is ``bucket_width`` of the longest prompt (or a multiple of ``bucket``), so that prompts of similar
    length share one compilation.
    """
    if isinstance(prompts, (np.ndarray, jax.Array)):
        arr = np.asarray(prompts)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"prompt ids must be integers of shape [batch, length], got {arr.dtype} of shape "
                             f"{arr.shape}")
        keep = np.ones(arr.shape, bool) if prompt_mask is None else np.asarray(prompt_mask).astype(bool)
        if keep.shape != arr.shape:
            raise ValueError(f"prompt_mask has shape {keep.shape}, the prompt ids {arr.shape}; give one mask entry "
                             "per id")
        rows = [row[k] for row, k in zip(arr, keep)]
    else:
        if prompt_mask is not None:
            raise ValueError("prompt_mask goes with a [batch, length] array, not with ragged lists of ids")
        rows = [np.asarray(r) for r in prompts]
        if any(r.ndim != 1 or (r.size and not np.issubdtype(r.dtype, np.integer)) for r in rows):
            raise ValueError("prompts must be lists of integer token ids, one list per prompt: [[...]] for a single "
                             "prompt")
        rows = [r.astype(np.int64) for r in rows]
    if not rows:
        raise ValueError("no prompts given")
    if min(len(r) for r in rows) == 0:
        raise ValueError("an empty prompt cannot be sampled from: give every prompt at least one token")
    longest = max(len(r) for r in rows)
    width = bucket_width(longest) if bucket is None else -(-longest // bucket) * bucket
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = True
    return ids, mask


def suppress(logits: jax.Array, suppress_ids: Sequence[int]) -> jax.Array:
    """``logits`` with ``suppress_ids`` set to -inf: the distribution the sampler draws from, renormalised over
    the other tokens. The trainer applies the same mask, so sampler and trainer log-probs agree."""
    if not len(suppress_ids):
        return logits
    return logits.at[..., jnp.asarray(suppress_ids, jnp.int32)].set(-jnp.inf)


def categorical(keys: jax.Array, logits: jax.Array, block: int = 128) -> jax.Array:
    """One draw per row from ``softmax(logits [R, V])`` (``keys``: one PRNG key per row); -inf entries never win.

    Inverts the CDF with a single uniform per row instead of ``jax.random.categorical``'s Gumbel per vocabulary
    entry: V threefry draws per row and step cost several times the lm-head matmul on CPU (docs/benchmarks.md).
    The CDF is summed in two levels (block totals, then within the chosen block), so f32 rounding is relative to a
    block's mass rather than to the whole distribution's.
    """
    return _categorical_weights(keys, jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)), block)


def _categorical_weights(keys: jax.Array, probs: jax.Array, block: int = 128) -> jax.Array:
    """``categorical`` from non-negative, unnormalised weights ``[R, V]``."""
    r, v = probs.shape
    block = min(block, v)
    nb = -(-v // block)
    probs = jnp.pad(probs, ((0, 0), (0, nb * block - v))).reshape(r, nb, block)
    target = jax.vmap(jax.random.uniform)(keys)  # in [0, 1), scaled to the total mass below

    def first_above(cum, mass, level):  # first index with mass whose cumulative mass exceeds level; past
        # rounding, the last index with mass. XLA's CPU cumsum over ~1000 blocks can rise an ulp at zero-mass
        # blocks, where a uniform near 1 drew a token of probability 0 (one outside the top-p nucleus).
        hit = (cum > level[:, None]) & (mass > 0)
        last = cum.shape[-1] - 1 - jnp.argmax((mass > 0)[:, ::-1], axis=-1)
        return jnp.where(jnp.any(hit, axis=-1), jnp.argmax(hit, axis=-1), last)

    block_mass = jnp.sum(probs, axis=-1)
    block_cum = jnp.cumsum(block_mass, axis=-1)
    target = target * block_cum[:, -1]
    b = first_above(block_cum, block_mass, target)
    before = jnp.take_along_axis(block_cum - block_mass, b[:, None], axis=-1)[:, 0]
    inside = jnp.take_along_axis(probs, b[:, None, None], axis=1)[:, 0]
    j = first_above(jnp.cumsum(inside, axis=-1), inside, jnp.maximum(target - before, 0.0))
    return b * block + j


def choose(logits: jax.Array, keys: jax.Array, params: SamplingParams) -> tuple[jax.Array, jax.Array]:
    """Pick one token per row (``keys``: one PRNG key per row); returns (token, its log-prob)."""
    logits = suppress(logits.astype(jnp.float32), params.suppress_ids)
    # Shifted before it is scaled, so the top entry is exactly 0 at any temperature: scaled first, jit rounded the
    # top's logit / T differently in the max and in the exp (T = 1e-10: infinite log-probs, the last id drawn; T =
    # 1e-3: 5e-4 off). The trainer's target_logprobs still divides first (shifted there, XLA planned the beta > 0
    # update differently, 0.74x the memory plan); test_steps checks the first epoch's ratio is 1 between the two.
    scaled = logits - jnp.max(logits, axis=-1, keepdims=True)
    scaled = scaled / params.temperature if params.temperature else scaled
    # Only the chosen token's log-prob is kept, so no [R, V] log_softmax: one exp and one sum over the vocabulary
    # serve both the log-normaliser and (untruncated sampling) the draw itself.
    weights = jnp.exp(scaled)
    log_norm = jnp.log(jnp.sum(weights, axis=-1))
    if params.temperature == 0:
        token = jnp.argmax(logits, axis=-1)
    elif not params.top_k and params.top_p == 1:
        token = _categorical_weights(keys, weights)
    else:
        if params.top_k:
            # sorted descending; exactly top_k candidates: transformers also keeps tokens whose logit ties the k-th
            # (an exact f32 tie: rare), which a fixed-size candidate set cannot
            values, index = jax.lax.top_k(scaled, min(params.top_k, scaled.shape[-1]))
        else:
            index = jnp.argsort(-scaled, axis=-1) if params.top_p < 1 else None
            values = scaled if index is None else jnp.take_along_axis(scaled, index, axis=-1)
        if params.top_p < 1:
            probs = jax.nn.softmax(values, axis=-1)
            before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each candidate
            values = jnp.where(before < params.top_p, values, -jnp.inf)  # the top candidate always survives
        choice = categorical(keys, values)
        token = choice if index is None else jnp.take_along_axis(index, choice[:, None], axis=-1)[:, 0]
    token = token.astype(jnp.int32)
    return token, jnp.take_along_axis(scaled, token[:, None], axis=-1)[:, 0] - log_norm
