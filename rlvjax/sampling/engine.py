"""The sampling engine: RL rollouts, evaluation pools and VinePPO's value pass all generate through ``generate``.

A *request* is one (prompt, sample index) pair; ``B`` prompts x ``G`` samples are ``Q = B * G`` requests. ``rows``
of them decode at once in one jitted loop, and the work follows the useful tokens:

- **One prefill per prompt.** The prompts are prefilled once, before the loop; a request's row starts from a copy of
  its prompt's keys/values, so the ``G`` samples of a prompt share that prefill.
- **Continuous refill.** When fewer rows are given than requests, a finished row takes the next queued request
  inside the loop (rows are refilled, and scored, in groups of ``rows / 8`` so that the copy is batched), so no row
  idles until the batch ends.
- **Shrinking.** Once the queue is empty, each time half of the rows have finished the live ones are compacted into
  a batch of half the size (down to ``MIN_ROWS``), so a ragged batch does not keep stepping finished rows.
- **Filled-length attention.** Each row's slot is its position (``KVCache`` keeps a length per row, its slots in
  blocks), and a decode step reads only the blocks up to the longest live row (``transformer.cached_attention``).
- **Fused verifier score.** A finished row appends ``score_suffix`` (the verify prompt) to its own live cache and
  reads the next-token log-probs of ``score_ids`` (Yes/No) before its row is reused: one short prefill, not a second
  pass over the sequence.
- **Sharded by rows.** Where the cache's layout splits rows over devices, each device runs all of the above on its
  own share of the requests (``shard_map``): the prefill of its prompts, its queue, refill, shrinking and scores.

Each token of request ``q`` is drawn with ``fold_in(fold_in(rng, t), q)`` (``t`` its index in the completion), so a
request's sample does not depend on which row it ran in, on refill, shrinking, or the batch's padding. Returned
log-probs are those of the sampling distribution before truncation, ``log_softmax(logits / temperature)`` (raw
logits when greedy), the quantity the trainer recomputes for the PPO ratio. A finished row's cache holds exactly
``prompt + completion`` without the stop token, which is what the verify prompt is appended to.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvjax.model.transformer import KVCache, Transformer
from rlvjax.parallel import axis_names
from rlvjax.sampling.choice import SamplingParams, choose, left_pad

MIN_ROWS = 8  # the batch stops halving below this many rows
MIN_BATCH = 2  # rows a batch has at least (a request per device, or ``rows=1``, leaves one free)


class SampleOutput(NamedTuple):
    tokens: jax.Array  # [B, G, N] int32, pad_id after a row ends
    lengths: jax.Array  # [B, G] generated tokens, the stop token included
    logprobs: jax.Array  # [B, G, N] float32 log-prob of each sampled token, 0 after a row ends
    finished: jax.Array  # [B, G] ended on a stop id (False: truncated at its token limit)
    score_logprobs: jax.Array | None = None  # [B, G, len(score_ids)] next-token log-probs after score_suffix


class _Rows(NamedTuple):
    """The decoding batch; a row is live (decoding), parked (finished, its score pending) or free."""

    req: jax.Array  # [R] the request a row holds (or last held)
    n: jax.Array  # [R] tokens sampled for it so far, the pending one included
    token: jax.Array  # [R] the last sampled token, not yet in the cache
    live: jax.Array  # [R]
    parked: jax.Array  # [R]
    cache: KVCache


class _State(NamedTuple):
    rows: _Rows
    next: jax.Array  # the next queued request
    tokens: jax.Array  # [Q, N]
    logprobs: jax.Array  # [Q, N]
    lengths: jax.Array  # [Q]
    scores: jax.Array  # [Q, len(score_ids)]
    weights: object  # the model's state, carried so that XLA keeps per-step work (e.g. casts) inside the loop


def cache_slots(prompt_width: int, max_new_tokens: int, score_tokens: int) -> int:
    """Slots of a row: the prompt, the completion (its last token enters only with the score) and the scored
    suffix."""
    return prompt_width + max_new_tokens + score_tokens


def generate(model: Transformer, ids, mask, rng, *, num_samples: int, max_new_tokens: int,
             params: SamplingParams, score_suffix: Sequence[int] = (), score_ids: Sequence[int] = (),
             rows: int | None = None, limits=None, cache_sharding=None,
             prefill_rows: int | None = None) -> SampleOutput:
    """Pure engine over prompts ``ids/mask [B, P]`` (left- or right-padded); call it under ``jit`` (``sample`` does).

    ``rows`` requests decode at once (None: all ``B * num_samples``; at least ``MIN_BATCH`` rows run). ``limits
    [B * num_samples]`` caps each request's new tokens (at most ``max_new_tokens``; None: all ``max_new_tokens``).
    ``prefill_rows`` prompts are prefilled at a time (None: all; see ``prefill``).

    ``cache_sharding`` (a ``NamedSharding`` of the ``[rows, kv_heads, slots, head_dim]`` cache arrays, from
    ``parallel.cache_sharding``): where it splits rows over devices, the requests are split evenly over them and
    each device runs the whole engine on its share (``shard_map``): its prompts' prefill, its own queue, refill,
    shrinking and scoring, ``rows`` and ``prefill_rows`` divided among the devices. Each token's key depends only
    on its request, so the samples equal one device's. Kv heads split over ``tensor`` keep that layout throughout
    the loop (pinned, so that XLA updates the cache in place); the weights are whatever the caller laid out, and
    must not be split over the devices the rows are.
    """
    b = ids.shape[0]
    q_total = b * num_samples
    limits = (jnp.full((q_total,), max_new_tokens, jnp.int32) if limits is None
              else jnp.minimum(limits, max_new_tokens).astype(jnp.int32))
    run = functools.partial(_engine, num_samples=num_samples, max_new_tokens=max_new_tokens, params=params,
                            score_suffix=tuple(score_suffix), score_ids=tuple(score_ids))
    spec = None if cache_sharding is None else cache_sharding.spec
    split = () if spec is None else tuple(a for a in axis_names(spec[0]) if cache_sharding.mesh.shape[a] > 1)
    if not split:
        tokens, logprobs, lengths, scores = run(model, ids, mask, rng, limits, first=0, rows=rows,
                                                prefill_rows=prefill_rows, layout=cache_sharding)
    else:
        shards = math.prod(cache_sharding.mesh.shape[a] for a in split)
        if q_total % shards:
            raise ValueError(f"{q_total} samples do not split evenly over the {shards} devices the rows are on")
        local = q_total // shards
        window = prompt_window(local, b, num_samples)
        if prefill_rows is not None:  # a divisor of the shard's prompts, or all at once
            prefill_rows = max(1, prefill_rows // shards)
            prefill_rows = prefill_rows if window % prefill_rows == 0 else None
        graphdef, weights = nnx.split(model)
        inner = jax.sharding.PartitionSpec(None, *spec[1:]) if any(axis_names(a) for a in spec[1:]) else None

        def shard(weights, ids, mask, rng, limits):
            return run(nnx.merge(graphdef, weights), ids, mask, rng, limits,
                       first=jax.lax.axis_index(split) * local,
                       rows=None if rows is None else -(-rows // shards),
                       prefill_rows=prefill_rows, layout=inner)

        P = jax.sharding.PartitionSpec
        tokens, logprobs, lengths, scores = jax.shard_map(
            shard, mesh=cache_sharding.mesh, in_specs=(P(), P(), P(), P(), P(split)), out_specs=P(split),
            axis_names=frozenset(split), check_vma=False)(weights, ids, mask, rng, limits)
    stop = jnp.asarray(params.stop_ids or (-1,), jnp.int32)
    finished = jnp.isin(jnp.take_along_axis(tokens, lengths[:, None] - 1, axis=1)[:, 0], stop)
    g, n_max = num_samples, max_new_tokens
    return SampleOutput(tokens.reshape(b, g, n_max), lengths.reshape(b, g), logprobs.reshape(b, g, n_max),
                        finished.reshape(b, g), scores.reshape(b, g, -1) if score_ids else None)


def prompt_window(requests: int, prompts: int, g: int) -> int:
    """How many consecutive prompts ``requests`` consecutive requests (``g`` per prompt) can come from: the prompts
    a device prefills when the requests are split over devices."""
    if requests == prompts * g:
        return prompts
    return requests // g if requests % g == 0 else min(prompts, (requests - 1) // g + 2)


def _engine(model: Transformer, ids, mask, rng, limits, *, first, num_samples: int, max_new_tokens: int,
            params: SamplingParams, score_suffix: tuple, score_ids: tuple, rows: int | None,
            prefill_rows: int | None, layout) -> tuple:
    """``generate`` on one device for the requests ``first .. first + len(limits)`` of ``ids``' prompts (``first``
    may be traced; ``layout``: the cache's sharding, or None, kept throughout the loop). Returns ``(tokens [Q, N],
    logprobs [Q, N], lengths [Q], scores [Q, len(score_ids)])`` of those requests."""
    g, n_max = num_samples, max_new_tokens
    q_total = limits.shape[0]
    # The prompts these requests come from: a window of ``ids`` (all of it on one device). With whole prompts per
    # device (``first`` a multiple of ``g``) the window starts at ``first // g``.
    window = prompt_window(q_total, ids.shape[0], g)
    start = jnp.minimum(first // g, ids.shape[0] - window)
    ids, mask = (jax.lax.dynamic_slice_in_dim(x, start, window) for x in (ids, mask))
    b, p = ids.shape
    # Never one row: with a unit batch dimension XLA computes each cache write twice (for the attention's matmuls
    # and for the cache it carries), each on its own copy: the row's whole cache copied every decode step.
    r_top = max(MIN_BATCH, q_total if rows is None else min(rows, q_total))
    v = len(score_suffix)
    scoring = v > 0
    stop = jnp.asarray(params.stop_ids or (-1,), jnp.int32)
    suffix = jnp.asarray(score_suffix, jnp.int32)
    slots = cache_slots(p, n_max, v)
    graphdef = nnx.graphdef(model)
    mixed = model.config.jnp_compute_dtype != model.config.jnp_dtype

    def prompt_of(req):  # a request's prompt within the window
        return (first + jnp.minimum(req, q_total - 1)) // g - start

    def pin(c: KVCache) -> KVCache:
        if layout is None:
            return c
        fix = lambda x: jax.lax.with_sharding_constraint(x, layout)
        return KVCache(jax.tree.map(fix, c.k), jax.tree.map(fix, c.v), c.length)

    def pick(logits, req, n):
        keys = jax.vmap(lambda t, q: jax.random.fold_in(jax.random.fold_in(rng, t), q))(n, first + req)
        return choose(logits, keys, params)

    def record(s: _State, req, n, token, logp, ok) -> _State:
        at = jnp.where(ok, req, q_total)  # out of range: dropped
        return s._replace(tokens=s.tokens.at[at, n].set(token, mode="drop"),
                          logprobs=s.logprobs.at[at, n].set(logp, mode="drop"),
                          lengths=s.lengths.at[at].set(n + 1, mode="drop"))

    def ended(token, req, n):  # n: tokens sampled so far, ``token`` included
        return jnp.isin(token, stop) | (n >= limits[jnp.minimum(req, q_total - 1)])

    # Prefill: prompts moved to the left of their row (slot = position), one pass per prompt.
    order = jnp.argsort(~mask.astype(bool), axis=1, stable=True)
    ids = jnp.take_along_axis(ids, order, axis=1)
    prompt_len = jnp.sum(mask.astype(jnp.int32), axis=1)
    last, prompt_k, prompt_v = prefill(model, ids, prompt_len, prefill_rows)
    of_prompts = lambda prompt: (tuple(x[prompt] for x in prompt_k), tuple(x[prompt] for x in prompt_v))

    def model_of(s: _State) -> Transformer:
        # Under mixed precision XLA would hoist what it derives from the loop-invariant weights out of the loop and
        # keep it for the whole generation (the CPU backend's f32 copies of bf16 weights for its matmuls, one per
        # layer); the barrier makes the weights opaque per iteration. Single-dtype models keep XLA's hoisting.
        return nnx.merge(graphdef, jax.lax.optimization_barrier(s.weights) if mixed else s.weights)

    def refill(s: _State, m: int) -> _State:
        """Up to ``m`` free rows take the next queued requests: a copy of the prompt's cache and a first token."""
        r = s.rows
        free = ~r.live & ~r.parked
        idx = jnp.argsort(~free, stable=True)[:m]
        req = s.next + jnp.arange(m, dtype=jnp.int32)
        ok = free[idx] & (req < q_total)
        prompt = prompt_of(req)
        at = jnp.where(ok, idx, r.req.shape[0])
        cache = r.cache.put_prefix(at, *of_prompts(prompt), prompt_len[prompt])
        token, logp = pick(model_of(s).logits(last[prompt]), req, jnp.zeros_like(req))
        s = record(s, req, jnp.zeros_like(req), token, logp, ok)
        done = ended(token, req, jnp.ones_like(req))
        rows_ = _Rows(r.req.at[at].set(req, mode="drop"), r.n.at[at].set(1, mode="drop"),
                      r.token.at[at].set(token, mode="drop"), r.live.at[at].set(~done, mode="drop"),
                      r.parked.at[at].set(done & scoring, mode="drop"), pin(cache))
        return s._replace(rows=rows_, next=s.next + jnp.sum(ok, dtype=jnp.int32))

    def score(s: _State, m: int) -> _State:
        """Up to ``m`` parked rows append ``[pending token if truncated] + score_suffix`` to a copy of their cache
        and record the next-token log-probs of ``score_ids``; the rows become free."""
        r = s.rows
        idx = jnp.argsort(~r.parked, stable=True)[:m]
        ok = r.parked[idx]
        cache = r.cache.rows(idx)
        pending = r.token[idx]
        keep = ~jnp.isin(pending, stop)  # a truncated row's last token is not in its cache yet
        lead = jnp.concatenate([pending[:, None], jnp.broadcast_to(suffix, (m, v))], axis=1)
        tail = jnp.concatenate([jnp.broadcast_to(suffix, (m, v)), jnp.full((m, 1), params.pad_id, jnp.int32)], 1)
        count = v + keep.astype(jnp.int32)
        real = (jnp.arange(v + 1)[None, :] < count[:, None]) & ok[:, None]  # a filler row reads no blocks
        step_model = model_of(s)
        h, _ = step_model.hidden(jnp.where(keep[:, None], lead, tail), real, cache)
        h = jnp.take_along_axis(h, (count - 1)[:, None, None], axis=1)[:, 0]
        logp = jax.nn.log_softmax(step_model.logits(h).astype(jnp.float32))[:, jnp.asarray(score_ids, jnp.int32)]
        at = jnp.where(ok, r.req[idx], q_total)
        return s._replace(scores=s.scores.at[at].set(logp, mode="drop"),
                          rows=r._replace(parked=r.parked.at[idx].set(False)))

    def decode(s: _State) -> _State:
        r = s.rows
        step_model = model_of(s)
        h, cache = step_model.hidden(r.token[:, None], r.live[:, None], r.cache)
        token, logp = pick(step_model.logits(h[:, 0]), r.req, r.n)
        s = record(s, r.req, r.n, token, logp, r.live)
        n = r.n + r.live.astype(jnp.int32)
        done = r.live & ended(token, r.req, n)
        return s._replace(rows=_Rows(r.req, n, jnp.where(r.live, token, r.token), r.live & ~done,
                                     r.parked | (done & scoring), pin(cache)))

    def outputs(s: _State) -> tuple:
        return s.tokens, s.logprobs, s.lengths, s.scores

    def level(s: _State, size: int) -> tuple:
        """Decode a batch of ``size`` rows until it is done or, with the queue empty, half of it is; then the
        smaller batch (recursively). Returns ``outputs``."""
        m = max(1, size // 8)
        refills = size == r_top and q_total > r_top
        half = size // 2
        shrinks = half >= MIN_ROWS

        def counts(s):
            r = s.rows
            return (jnp.sum(r.live, dtype=jnp.int32), jnp.sum(r.parked, dtype=jnp.int32),
                    jnp.sum(~r.live & ~r.parked, dtype=jnp.int32), q_total - s.next)

        def cond(s):
            live, parked, _, queued = counts(s)
            work = (live > 0) | (parked > 0) | (queued > 0)
            return work & ~((queued == 0) & (live <= half)) if shrinks else work

        def service(s):
            if scoring:
                s = jax.lax.cond(jnp.any(s.rows.parked), lambda s: score(s, m), lambda s: s, s)
            if refills:
                s = jax.lax.cond(s.next < q_total, lambda s: refill(s, m), lambda s: s, s)
            return s

        def due(s):
            live, parked, free, queued = counts(s)
            due = (parked >= m) | ((live == 0) & (parked > 0))
            if refills:
                due |= (queued > 0) & ((jnp.minimum(free, queued) >= jnp.minimum(m, queued)) | (live == 0))
            return due

        # Decode steps run in an inner loop until rows are due for a score or refill; the outer loop services them.
        # (A ``lax.cond`` around each step would make XLA copy the loop state every step: 17% of a decode on CPU.)
        # Before the batch shrinks, the same loop scores the rows still parked: one copy of the scoring pass per
        # level (each copy is a forward pass to compile).
        if scoring or refills:
            steps = lambda s: jax.lax.while_loop(lambda s: cond(s) & ~due(s) & jnp.any(s.rows.live), decode, s)
            more = (lambda s: cond(s) | jnp.any(s.rows.parked)) if scoring else cond
            s = jax.lax.while_loop(more, lambda s: service(steps(s)), s)
        else:
            s = jax.lax.while_loop(cond, decode, s)
        if not shrinks:
            return outputs(s)

        # The live rows move into a half-size batch, gathered here (not inside the ``cond`` below, whose operand
        # would keep the full cache alive next to the whole copy), and decode on only if any is still live.
        keep = jnp.argsort(~s.rows.live, stable=True)[:half]
        r = s.rows
        s = s._replace(rows=_Rows(r.req[keep], r.n[keep], r.token[keep], r.live[keep], r.parked[keep],
                                  pin(r.cache.rows(keep))))
        return jax.lax.cond(jnp.any(s.rows.live), lambda s: level(s, half), outputs, s)

    empty = jnp.zeros((r_top,), bool)
    cache = pin(KVCache.init(model.config, r_top, slots)) if r_top != q_total else None
    state = _State(
        rows=_Rows(jnp.zeros((r_top,), jnp.int32), jnp.zeros((r_top,), jnp.int32), jnp.zeros((r_top,), jnp.int32),
                   empty, empty, cache),
        next=jnp.zeros((), jnp.int32), tokens=jnp.full((q_total, n_max), params.pad_id, jnp.int32),
        logprobs=jnp.zeros((q_total, n_max), jnp.float32), lengths=jnp.zeros((q_total,), jnp.int32),
        scores=jnp.zeros((q_total, len(score_ids)), jnp.float32), weights=nnx.state(model))
    if r_top == q_total:  # every request has its row: its prompt's cache, in order
        req = jnp.arange(q_total, dtype=jnp.int32)
        prompt = prompt_of(req)
        cache = pin(KVCache.from_prefix(*of_prompts(prompt), prompt_len[prompt], slots))
        token, logp = pick(model.logits(last)[prompt], req, jnp.zeros_like(req))
        state = record(state, req, jnp.zeros_like(req), token, logp, jnp.ones_like(req, bool))
        done = ended(token, req, jnp.ones_like(req))
        state = state._replace(rows=_Rows(req, jnp.ones_like(req), token, ~done, done & scoring, cache),
                               next=jnp.asarray(q_total, jnp.int32))
    else:
        state = refill(state, r_top)
    return level(state, r_top)


def prefill(model: Transformer, ids, lengths, rows: int | None = None) -> tuple[jax.Array, tuple, tuple]:
    """Prompts ``ids [B, W]`` (real tokens first, ``lengths [B]`` of them) -> each prompt's last hidden state
    ``[B, D]`` and its keys and values per layer ``[B, kv_heads, W, head_dim]``.

    ``rows`` prompts go at a time under ``lax.map`` (rows ``j, j + B/rows, ...`` together, so a row-sharded batch
    stays evenly split): the attention scores of one step, not of the whole batch, are alive. ``rows`` must divide
    ``B``; None prefills all.
    """
    b, w = ids.shape

    def one(ids_c, len_c):
        real = jnp.arange(w)[None, :] < len_c[:, None]
        cache = KVCache.init(model.config, ids_c.shape[0], w)
        h, c = model.hidden(ids_c, real, cache)
        joined = lambda layers: tuple(map(KVCache.joined, layers))
        return jnp.take_along_axis(h, (len_c - 1)[:, None, None], axis=1)[:, 0], joined(c.k), joined(c.v)

    if rows is None or rows >= b:
        return one(ids, lengths)
    if b % rows:
        raise ValueError(f"prefill_rows={rows} does not divide the {b} prompts")
    split = lambda x: x.reshape(rows, b // rows, *x.shape[1:]).swapaxes(0, 1)
    merge = lambda x: x.swapaxes(0, 1).reshape(b, *x.shape[2:])
    return jax.tree.map(merge, jax.lax.map(lambda a: one(*a), (split(ids), split(lengths))))


@functools.partial(jax.jit, static_argnames=("graphdef", "num_samples", "max_new_tokens", "params",
                                             "score_suffix", "score_ids", "rows"))
def _generate_jit(graphdef, state, ids, mask, rng, limits, *, num_samples, max_new_tokens, params, score_suffix,
                  score_ids, rows):
    return generate(nnx.merge(graphdef, state), ids, mask, rng, num_samples=num_samples,
                    max_new_tokens=max_new_tokens, params=params, score_suffix=score_suffix, score_ids=score_ids,
                    rows=rows, limits=limits)


def sample(model: Transformer, prompts_ids, *, num_samples: int = 1, max_new_tokens: int, temperature: float = 1.0,
           top_p: float = 1.0, top_k: int = 0, seed: int = 0, stop_ids: Sequence[int] = (), prompt_mask=None,
           pad_id: int = 0, suppress_ids: Sequence[int] = (), score_suffix: Sequence[int] = (),
           score_ids: Sequence[int] = (), bucket: int | None = None, rows: int | None = None,
           limits=None) -> SampleOutput:
    """Sample ``num_samples`` completions per prompt; ``temperature=0`` is greedy.

    ``prompts_ids``: ragged lists of ids, or a ``[B, T]`` array (left- or right-padded, with ``prompt_mask``).
    With ``score_suffix`` and ``score_ids`` (e.g. the verify prompt and the Yes/No ids), each finished sequence
    is scored on the live cache and ``score_logprobs`` is filled. ``suppress_ids`` are never sampled. ``rows`` and
    ``limits`` (``[B * num_samples]`` or ``[B, num_samples]`` token caps) are ``generate``'s.
    Deterministic for a fixed seed, whatever the padding width or ``rows``: each token has its own key.
    """
    # tokenizer.eos_token_id: an id, or None for a tokenizer without one
    stop_ids = [stop_ids] if stop_ids is None or isinstance(stop_ids, (int, np.integer)) else stop_ids
    for name, value in (("max_new_tokens", max_new_tokens), ("num_samples", num_samples), ("top_k", top_k),
                        ("seed", seed), ("pad_id", pad_id), *((f"stop_ids[{i}]", s) for i, s in enumerate(stop_ids))):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):  # 2.0 failed in XLA, 2.5 truncated
            raise ValueError(f"{name}={value!r} must be an int" + (" (a tokenizer without that special token?)"
                                                                  if value is None and "stop" in name else ""))
    if max_new_tokens < 1 or num_samples < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} and num_samples={num_samples} must both be >= 1")
    if not 0 <= seed < 2**32:  # jax.random.key keeps 32 bits: 2**40 drew seed 0's samples
        raise ValueError(f"seed={seed} must be in [0, 2**32)")
    for name, value in (("rows", rows), ("bucket", bucket)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name}={value!r} must be an int >= 1 (or None: "
                             f"{'every request at once' if name == 'rows' else 'bucketed widths'})")
    if bool(len(score_suffix)) != bool(len(score_ids)):
        raise ValueError("score_suffix and score_ids go together: give both (verify prompt and Yes/No ids) or none")
    if both := sorted({int(i) for i in stop_ids} & {int(i) for i in suppress_ids}):  # no row would ever stop there
        raise ValueError(f"token {both[0]} is in stop_ids and in suppress_ids: a suppressed token is never sampled, "
                         "so no completion would end at it; drop it from suppress_ids")
    params = SamplingParams(float(temperature), float(top_p), int(top_k), tuple(int(i) for i in stop_ids), pad_id,
                            tuple(int(i) for i in suppress_ids))
    ids, mask = left_pad(prompts_ids, prompt_mask, pad_id=pad_id, bucket=bucket)
    vocab = model.config.vocab_size
    for name, given in (("prompt", ids[mask]), ("stop_ids", stop_ids), ("suppress_ids", suppress_ids),
                        ("score_suffix", score_suffix), ("score_ids", score_ids), ("pad_id", [pad_id])):
        values = np.asarray(given, np.int64).ravel()
        outside = values[(values < 0) | (values >= vocab)]
        if outside.size:
            raise ValueError(f"{name} holds token id {outside[0]}, outside the model's vocabulary [0, {vocab}); use "
                             "ids from the model's own tokenizer")
    if limits is not None:
        limits = np.asarray(limits)
        if limits.size and not np.issubdtype(limits.dtype, np.integer):  # 1.9 was cut to 1
            raise ValueError(f"limits must be whole token counts, got {limits.dtype} values")
        limits = limits.astype(np.int32).reshape(-1)
        if limits.shape[0] != ids.shape[0] * num_samples or limits.min() < 1:
            raise ValueError(f"limits must hold one token cap >= 1 per sample ({ids.shape[0] * num_samples}), got "
                             f"{limits.shape[0]}{f' with minimum {limits.min()}' if limits.size else ''}")
        limits = jnp.asarray(limits)
    graphdef, state = nnx.split(model)
    return _generate_jit(graphdef, state, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(seed), limits,
                         num_samples=num_samples, max_new_tokens=max_new_tokens, params=params,
                         score_suffix=tuple(int(i) for i in score_suffix), score_ids=tuple(int(i) for i in score_ids),
                         rows=rows)
