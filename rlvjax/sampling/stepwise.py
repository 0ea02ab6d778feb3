"""Step-wise decoding for test-time search: rows advance to the next step boundary or token budget, are scored by
the verifier on their live caches, and can be resampled (rows copied onto others) between advances.

The engine (``engine.py``) runs a whole generation in one jitted loop; search needs to stop in the middle, look at
every row and decide which go on. ``Decoder`` keeps the rows (their KV caches, the pending token, what was sampled)
between three jitted calls:

- ``advance``: each row decodes until it samples a step delimiter (kept as its pending token), a stop id, its token
  cap for this call (``limits``), or ``max_new_tokens``.
- ``score``: the verify prompt is appended to each row's cache, after its pending token, and the next-token
  log-probs of ``score_ids`` (Yes/No) are read; the extended cache is dropped, so the rows are as they were (the
  appended slots lie past each row's length). A finished row is scored on exactly what the engine scores.
- ``take``: rows ``index`` replace the rows (particle resampling); each row keeps its own identity for the keys.

Token ``t`` of row ``q`` is drawn with ``fold_in(fold_in(rng, t), ident[q])``, the engine's keys: rows started with
``ident = arange`` and advanced without resampling produce the engine's samples for the same ``rng``, whatever the
budgets they were advanced in (a truncated row goes on from its cache exactly as if it had never paused).
The decoder runs on one device (its rows are not laid out over a mesh, unlike the engine's).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rlvjax.model.transformer import KVCache, Transformer
from rlvjax.sampling.choice import SamplingParams, choose
from rlvjax.sampling.engine import cache_slots, prefill


class Rows(NamedTuple):
    cache: KVCache
    ident: jax.Array  # [R] the row's identity in the token keys (kept by ``take``)
    token: jax.Array  # [R] the last sampled token, not yet in the cache
    n: jax.Array  # [R] tokens sampled, the pending one included
    live: jax.Array  # [R] may grow: not ended on a stop id nor at max_new_tokens
    tokens: jax.Array  # [R, max_new_tokens] pad after a row's n
    logprobs: jax.Array  # [R, max_new_tokens]


class Decoder(NamedTuple):
    """The step-wise decoder of one model (``graphdef``) and sampling setup; the parameters are passed per call."""

    graphdef: object
    params: SamplingParams
    max_new_tokens: int
    score_suffix: tuple[int, ...]
    score_ids: tuple[int, ...]

    def start(self, state, ids, mask, rng, num_samples: int) -> Rows:
        """``num_samples`` rows per prompt of ``ids/mask [B, P]`` (one prefill each), their first token sampled."""
        return _start(self, state, ids, mask, rng, num_samples)

    def advance(self, state, rows: Rows, rng, limits, delimiters: Sequence[int] = ()) -> Rows:
        """Rows decode until a token of ``delimiters``, a stop id, ``limits [R]`` tokens in all, or the cap."""
        return _advance(self, state, rows, rng, jnp.asarray(limits, jnp.int32),
                        tuple(int(i) for i in delimiters))

    def score(self, state, rows: Rows) -> jax.Array:
        """``[R, len(score_ids)]`` next-token log-probs after ``prompt + sampled tokens + score_suffix``."""
        return _score(self, state, rows)

    def finished(self, rows: Rows) -> jax.Array:
        """``[R]`` ended on a stop id (the stop token is the pending one, outside the cache)."""
        return ~rows.live & _stopped(self, rows.token)

    def take(self, rows: Rows, index) -> Rows:
        """Rows ``index [R]`` in place of the rows; identities stay with the positions."""
        return _take(rows, jnp.asarray(index, jnp.int32))


def _model(decoder: Decoder, state) -> Transformer:
    return nnx.merge(decoder.graphdef, state)


def _stopped(decoder: Decoder, token) -> jax.Array:
    return jnp.isin(token, jnp.asarray(decoder.params.stop_ids or (-1,), jnp.int32))


def _pick(decoder: Decoder, model: Transformer, h, rng, ident, t):
    keys = jax.vmap(lambda t, q: jax.random.fold_in(jax.random.fold_in(rng, t), q))(t, ident)
    return choose(model.logits(h), keys, decoder.params)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _start(decoder: Decoder, state, ids, mask, rng, num_samples: int) -> Rows:
    model = _model(decoder, state)
    b, p = ids.shape
    order = jnp.argsort(~mask.astype(bool), axis=1, stable=True)  # real tokens first: slot = position
    lengths = jnp.sum(mask.astype(jnp.int32), axis=1)
    last, k, v = prefill(model, jnp.take_along_axis(ids, order, axis=1), lengths)
    slots = cache_slots(p, decoder.max_new_tokens, len(decoder.score_suffix))
    repeat = lambda layers: tuple(jnp.repeat(x, num_samples, axis=0) for x in layers)
    cache = KVCache.from_prefix(repeat(k), repeat(v), jnp.repeat(lengths, num_samples), slots)
    r = b * num_samples
    ident = jnp.arange(r, dtype=jnp.int32)
    token, logp = _pick(decoder, model, jnp.repeat(last, num_samples, axis=0), rng, ident, jnp.zeros_like(ident))
    n_max = decoder.max_new_tokens
    tokens = jnp.full((r, n_max), decoder.params.pad_id, jnp.int32).at[:, 0].set(token)
    logprobs = jnp.zeros((r, n_max), jnp.float32).at[:, 0].set(logp)
    live = ~_stopped(decoder, token) & (n_max > 1)
    return Rows(cache, ident, token, jnp.ones_like(ident), live, tokens, logprobs)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _advance(decoder: Decoder, state, rows: Rows, rng, limits, delimiters: tuple[int, ...]) -> Rows:
    model = _model(decoder, state)
    delimiter = jnp.asarray(delimiters or (-1,), jnp.int32)
    index = jnp.arange(rows.n.shape[0])

    def step(carry):
        rows, go = carry
        h, cache = model.hidden(rows.token[:, None], go[:, None], rows.cache)
        token, logp = _pick(decoder, model, h[:, 0], rng, rows.ident, rows.n)
        at = jnp.where(go, rows.n, decoder.max_new_tokens)  # out of range: dropped
        n = rows.n + go.astype(jnp.int32)
        live = rows.live & ~(go & _stopped(decoder, token)) & (n < decoder.max_new_tokens)
        rows = Rows(cache, rows.ident, jnp.where(go, token, rows.token), n, live,
                    rows.tokens.at[index, at].set(token, mode="drop"),
                    rows.logprobs.at[index, at].set(logp, mode="drop"))
        return rows, go & live & (n < limits) & ~jnp.isin(token, delimiter)

    go = rows.live & (rows.n < limits)
    return jax.lax.while_loop(lambda c: jnp.any(c[1]), step, (rows, go))[0]


@functools.partial(jax.jit, static_argnums=(0,))
def _score(decoder: Decoder, state, rows: Rows) -> jax.Array:
    model = _model(decoder, state)
    r, v = rows.n.shape[0], len(decoder.score_suffix)
    suffix = jnp.broadcast_to(jnp.asarray(decoder.score_suffix, jnp.int32), (r, v))
    keep = ~_stopped(decoder, rows.token)  # the pending token is part of the solution unless it is the stop
    lead = jnp.concatenate([rows.token[:, None], suffix], axis=1)
    tail = jnp.concatenate([suffix, jnp.full((r, 1), decoder.params.pad_id, jnp.int32)], axis=1)
    count = v + keep.astype(jnp.int32)
    h, _ = model.hidden(jnp.where(keep[:, None], lead, tail), jnp.arange(v + 1)[None, :] < count[:, None],
                        rows.cache)  # the extended cache is dropped: the rows stay as they were
    h = jnp.take_along_axis(h, (count - 1)[:, None, None], axis=1)[:, 0]
    return jax.nn.log_softmax(model.logits(h).astype(jnp.float32))[:, jnp.asarray(decoder.score_ids, jnp.int32)]


@jax.jit
def _take(rows: Rows, index) -> Rows:
    moved = jax.tree.map(lambda x: x[index], rows._replace(ident=jnp.zeros_like(rows.ident)))
    return moved._replace(ident=rows.ident)
