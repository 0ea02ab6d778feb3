"""Batched sampler: one prefill per prompt, then a jitted ``lax.while_loop`` decode over a state pytree.

Prompts are left-padded to a bucketed length so every row writes the same cache slot each step. A finished row
feeds nothing (its slot becomes a hole in the cache), so after the loop each row's cache holds exactly
``prompt + completion`` without the stop token — which is what the fused verifier score appends its prompt to.

Returned log-probs are those of the sampling distribution before truncation, ``log_softmax(logits / temperature)``
(raw logits when greedy), the quantity the trainer recomputes for the PPO ratio.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvjax.model.transformer import KVCache, Transformer


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_ids: tuple[int, ...] = ()
    pad_id: int = 0
    suppress_ids: tuple[int, ...] = ()  # never sampled (padding, control tokens); see ``suppress``

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 means greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 disables it)")


class SampleOutput(NamedTuple):
    tokens: jax.Array  # [B, G, N] int32, pad_id after a row ends
    lengths: jax.Array  # [B, G] generated tokens, the stop token included
    logprobs: jax.Array  # [B, G, N] float32 log-prob of each sampled token, 0 after a row ends
    finished: jax.Array  # [B, G] ended on a stop id (False: truncated at max_new_tokens)
    score_logprobs: jax.Array | None = None  # [B, G, len(score_ids)] next-token log-probs after score_suffix


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
        if arr.ndim != 2:
            raise ValueError(f"prompt ids must be [batch, length], got shape {arr.shape}")
        keep = np.ones(arr.shape, bool) if prompt_mask is None else np.asarray(prompt_mask).astype(bool)
        rows = [row[k] for row, k in zip(arr, keep)]
    else:
        if prompt_mask is not None:
            raise ValueError("prompt_mask goes with a [batch, length] array, not with ragged lists of ids")
        rows = [np.asarray(r, np.int64) for r in prompts]
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

    def first_above(cum, mass, level):  # first index whose cumulative mass exceeds level; past rounding, the last
        hit = cum > level[:, None]  # index with mass (a zero-mass index is never past a rise in ``cum``)
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


def _choose(logits: jax.Array, keys: jax.Array, params: SamplingParams) -> tuple[jax.Array, jax.Array]:
    """Pick one token per row (``keys``: one PRNG key per row); returns (token, its log-prob)."""
    logits = suppress(logits.astype(jnp.float32), params.suppress_ids)
    scaled = logits / params.temperature if params.temperature else logits
    # Only the chosen token's log-prob is kept, so no [R, V] log_softmax: one max, one exp and one sum over the
    # vocabulary serve both the log-normaliser and (untruncated sampling) the draw itself.
    top = jnp.max(scaled, axis=-1, keepdims=True)
    weights = jnp.exp(scaled - top)
    log_norm = top[:, 0] + jnp.log(jnp.sum(weights, axis=-1))
    if params.temperature == 0:
        token = jnp.argmax(logits, axis=-1)
    elif not params.top_k and params.top_p == 1:
        token = _categorical_weights(keys, weights)
    else:
        if params.top_k:
            values, index = jax.lax.top_k(scaled, min(params.top_k, scaled.shape[-1]))  # sorted descending
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


class _LoopState(NamedTuple):
    step: jax.Array
    token: jax.Array  # [R] last sampled token, not yet in the cache
    done: jax.Array  # [R]
    tokens: jax.Array  # [R, N]
    logprobs: jax.Array  # [R, N]
    lengths: jax.Array  # [R]
    cache: KVCache
    weights: object  # the model's state, carried so that XLA keeps per-step work (e.g. casts) inside the loop


def generate(model: Transformer, ids, mask, rng, *, num_samples: int, max_new_tokens: int,
             params: SamplingParams, score_suffix: Sequence[int] = (), score_ids: Sequence[int] = (),
             cache_sharding=None, prefill_rows: int | None = None) -> SampleOutput:
    """Pure sampler over left-padded ``ids/mask [B, P]``; call it under ``jit`` (``sample`` does).

    ``prefill_rows`` prompts are prefilled at a time (None: all; see ``prefill``).
    ``cache_sharding`` (a ``NamedSharding`` of the ``[rows, kv_heads, slots, head_dim]`` cache arrays, from
    ``parallel.cache_sharding``) pins the cache's layout for the whole loop, so that XLA keeps updating it in place.
    """
    b, p = ids.shape
    g, n = num_samples, max_new_tokens
    rows = jnp.arange(b * g)
    stop = jnp.asarray(params.stop_ids or (-1,), jnp.int32)

    def pick(logits, step):
        keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(rng, step), rows)
        return _choose(logits, keys, params)

    def pin(c: KVCache) -> KVCache:
        if cache_sharding is None:
            return c
        rows = jax.sharding.NamedSharding(cache_sharding.mesh, jax.sharding.PartitionSpec(cache_sharding.spec[0]))
        fix = lambda x: jax.lax.with_sharding_constraint(x, cache_sharding)
        return c._replace(k=tuple(map(fix, c.k)), v=tuple(map(fix, c.v)),
                          mask=jax.lax.with_sharding_constraint(c.mask, rows))

    last, cache = prefill(model, ids, mask, p + n + len(score_suffix), prefill_rows, repeat=g)
    cache = pin(cache)
    token, logp = pick(jnp.repeat(model.logits(last), g, axis=0), 0)
    done = jnp.isin(token, stop)
    state = _LoopState(
        step=jnp.ones((), jnp.int32), token=token, done=done,
        tokens=jnp.full((b * g, n), params.pad_id, jnp.int32).at[:, 0].set(token),
        logprobs=jnp.zeros((b * g, n), jnp.float32).at[:, 0].set(logp),
        lengths=jnp.ones((b * g,), jnp.int32), cache=cache, weights=nnx.state(model),
    )
    graphdef = nnx.graphdef(model)
    mixed = model.config.jnp_compute_dtype != model.config.jnp_dtype

    def cond(s: _LoopState):
        return (s.step < n) & ~jnp.all(s.done)

    def body(s: _LoopState):
        # Under mixed precision XLA would hoist what it derives from the loop-invariant weights out of the loop and
        # keep it for the whole generation (the CPU backend's f32 copies of bf16 weights for its matmuls, one per
        # layer); the barrier makes the weights opaque per iteration. Single-dtype models keep XLA's hoisting.
        weights = jax.lax.optimization_barrier(s.weights) if mixed else s.weights
        step_model = nnx.merge(graphdef, weights)
        h, cache = step_model.hidden(s.token[:, None], ~s.done[:, None], s.cache)
        token, logp = pick(step_model.logits(h[:, 0]), s.step)
        token = jnp.where(s.done, params.pad_id, token)
        logp = jnp.where(s.done, 0.0, logp)
        return _LoopState(
            step=s.step + 1, token=token, done=s.done | jnp.isin(token, stop),
            tokens=jax.lax.dynamic_update_slice(s.tokens, token[:, None], (0, s.step)),
            logprobs=jax.lax.dynamic_update_slice(s.logprobs, logp[:, None], (0, s.step)),
            lengths=s.lengths + (~s.done).astype(jnp.int32), cache=pin(cache), weights=s.weights,
        )

    s = jax.lax.while_loop(cond, body, state)
    scores = None
    if len(score_suffix):
        scores = score_continuation(model, s.cache, s.token, ~s.done, jnp.asarray(score_suffix, jnp.int32),
                                    jnp.asarray(score_ids, jnp.int32))
        scores = scores.reshape(b, g, -1)
    finished = jnp.isin(jnp.take_along_axis(s.tokens, s.lengths[:, None] - 1, axis=1)[:, 0], stop)
    return SampleOutput(s.tokens.reshape(b, g, n), s.lengths.reshape(b, g), s.logprobs.reshape(b, g, n),
                        finished.reshape(b, g), scores)


def prefill(model: Transformer, ids, mask, slots: int, rows: int | None = None, *,
            repeat: int = 1) -> tuple[jax.Array, KVCache]:
    """Each prompt's last hidden state ``[B, D]`` and a cache of ``slots`` slots holding the prompts, each row
    ``repeat`` times in a row (one prefill, ``repeat`` samples; no full-size copy of the unrepeated cache).

    Attention reads the ``P`` prompt slots only (not all ``slots``), and ``rows`` prompts go at a time under
    ``lax.map`` (rows ``j, j + B/rows, ...`` together, so a row-sharded batch stays evenly split): the ``[rows, H, P,
    P]`` scores of one step, not of the whole batch, are alive. ``rows`` must divide ``B``; None prefills all.
    """
    b, p = ids.shape

    def one(ids_c, mask_c):
        h, c = model.hidden(ids_c, mask_c, KVCache.init(model.config, ids_c.shape[0], p))
        return h[:, -1], c.k, c.v

    if rows is None or rows >= b:
        last, k, v = one(ids, mask)
    else:
        if b % rows:
            raise ValueError(f"prefill_rows={rows} does not divide the {b} prompts")
        split = lambda x: x.reshape(rows, b // rows, *x.shape[1:]).swapaxes(0, 1)
        merge = lambda x: x.swapaxes(0, 1).reshape(b, *x.shape[2:])
        last, k, v = jax.tree.map(merge, jax.lax.map(lambda a: one(*a), (split(ids), split(mask))))
    def grow(x, slot_axis):
        widths = [(0, 0)] * x.ndim
        widths[slot_axis] = (0, slots - p)
        return jnp.pad(jnp.repeat(x, repeat, axis=0), widths)

    return last, KVCache(tuple(grow(x, 2) for x in k), tuple(grow(x, 2) for x in v), grow(mask.astype(bool), 1),
                         jnp.asarray(p, jnp.int32))


def score_continuation(model: Transformer, cache: KVCache, pending, pending_mask, suffix, target_ids) -> jax.Array:
    """Append ``[pending?] + suffix`` to each row's cached sequence; next-token log-probs of ``target_ids``.

    ``pending [R]`` is a token sampled but not yet in the cache (kept where ``pending_mask``); ``suffix [V]`` is
    shared by all rows (e.g. the verification prompt). Costs one prefill of ``1 + V`` tokens, not a second pass.
    Returns ``[R, len(target_ids)]`` from the model's raw (temperature 1) distribution.
    """
    r = pending.shape[0]
    chunk = jnp.concatenate([pending[:, None], jnp.broadcast_to(suffix, (r, suffix.shape[0]))], axis=1)
    chunk_mask = jnp.concatenate([pending_mask[:, None], jnp.ones((r, suffix.shape[0]), bool)], axis=1)
    h, _ = model.hidden(chunk, chunk_mask, cache)
    logp = jax.nn.log_softmax(model.logits(h[:, -1]).astype(jnp.float32))
    return logp[:, target_ids]


@functools.partial(jax.jit, static_argnames=("graphdef", "num_samples", "max_new_tokens", "params",
                                             "score_suffix", "score_ids"))
def _generate_jit(graphdef, state, ids, mask, rng, *, num_samples, max_new_tokens, params, score_suffix, score_ids):
    return generate(nnx.merge(graphdef, state), ids, mask, rng, num_samples=num_samples,
                    max_new_tokens=max_new_tokens, params=params, score_suffix=score_suffix, score_ids=score_ids)


def sample(model: Transformer, prompts_ids, *, num_samples: int = 1, max_new_tokens: int, temperature: float = 1.0,
           top_p: float = 1.0, top_k: int = 0, seed: int = 0, stop_ids: Sequence[int] = (), prompt_mask=None,
           pad_id: int = 0, suppress_ids: Sequence[int] = (), score_suffix: Sequence[int] = (),
           score_ids: Sequence[int] = (), bucket: int | None = None) -> SampleOutput:
    """Sample ``num_samples`` completions per prompt; ``temperature=0`` is greedy.

    ``prompts_ids``: ragged lists of ids, or a ``[B, T]`` array (left- or right-padded, with ``prompt_mask``).
    With ``score_suffix`` and ``score_ids`` (e.g. the verify prompt and the Yes/No ids), each finished sequence
    is scored on the live cache and ``score_logprobs`` is filled. ``suppress_ids`` are never sampled.
    Deterministic for a fixed seed: each row draws from its own key, so a row's sample does not depend on the
    batch's padding width.
    """
    if max_new_tokens < 1 or num_samples < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} and num_samples={num_samples} must both be >= 1")
    if bool(len(score_suffix)) != bool(len(score_ids)):
        raise ValueError("score_suffix and score_ids go together: give both (verify prompt and Yes/No ids) or none")
    params = SamplingParams(float(temperature), float(top_p), int(top_k), tuple(int(i) for i in stop_ids), pad_id,
                            tuple(int(i) for i in suppress_ids))
    ids, mask = left_pad(prompts_ids, prompt_mask, pad_id=pad_id, bucket=bucket)
    graphdef, state = nnx.split(model)
    return _generate_jit(graphdef, state, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(seed),
                         num_samples=num_samples, max_new_tokens=max_new_tokens, params=params,
                         score_suffix=tuple(int(i) for i in score_suffix), score_ids=tuple(int(i) for i in score_ids))
