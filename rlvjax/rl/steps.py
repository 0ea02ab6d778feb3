"""TrainState and the pure RL^V steps: ``rollout_step`` (sample + fused verifier score) and ``update_step``
(``L_RL + lambda * L_V`` with exact micro-batch accumulation, PPO epochs and minibatches).

One training sequence serves both losses. Row layout: ``[prompt (left-padded) | completion without its stop token,
then holes | verify prompt]``. Holes are masked out of attention and positions, so the verify prompt sits right after
the completion, and the logits at the last completion position still predict the stop token for the policy loss.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rlvjax import parallel, sampling
from rlvjax.rl import advantages as advantages_lib
from rlvjax.rl import losses, verifier
from rlvjax.rl.config import RLConfig


@flax.struct.dataclass
class TrainState:
    params: Any  # pure dict of arrays, paths as in model/hf.py's table
    opt_state: Any
    ref_params: Any  # frozen initial policy when beta > 0, else None
    step: jax.Array
    rng: jax.Array  # raw uint32 key data, so Orbax can store it


def init_state(params, tx: optax.GradientTransformation, *, seed: int, keep_reference: bool) -> TrainState:
    # The reference gets buffers of its own: the update donates the state, and one buffer cannot be donated twice.
    reference = jax.tree.map(jnp.copy, params) if keep_reference else None
    return TrainState(params=params, opt_state=tx.init(params), ref_params=reference,
                      step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(jax.random.key(seed)))


class Rollouts(NamedTuple):
    prompt_ids: jax.Array  # [B, P] left-padded
    prompt_mask: jax.Array  # [B, P]
    tokens: jax.Array  # [B, G, N]
    lengths: jax.Array  # [B, G]
    logprobs: jax.Array  # [B, G, N] sampler log-probs at the sampling temperature
    finished: jax.Array  # [B, G]
    verify_logprobs: jax.Array  # [B, G, 2] log p(Yes), log p(No) from the fused score, before the update


class UpdateBatch(NamedTuple):
    input_ids: jax.Array  # [R, P + N + V]
    input_mask: jax.Array
    targets: jax.Array  # [R, N] completion tokens, the stop token included
    target_mask: jax.Array  # [R, N]
    old_logp: jax.Array  # [R, N]
    advantages: jax.Array  # [R, N]
    verify_target: jax.Array  # [R] yes / no token id
    verify_mask: jax.Array  # [R] each row's L_V weight: 1, class-balanced per minibatch by _minibatch_grads


@dataclasses.dataclass(frozen=True)
class StepSetup:
    """What the jitted steps close over: model structure, optimizer, config, verifier tokens."""

    graphdef: Any
    tx: Any
    rl: RLConfig
    verify_suffix: tuple[int, ...]
    yes_id: int
    no_id: int
    stop_ids: tuple[int, ...]
    pad_id: int
    suppress_ids: tuple[int, ...] = ()  # never sampled; masked alike in the trainer's log-probs
    constrain_rows: Any = None  # keeps the update's activations split by rows (``parallel.rows_constraint``)
    # Samples per prompt of a sampling that is not the rollout (a pool, an eval: no estimator compares them, so
    # RLConfig's group_size >= 2 rule does not apply); 0: RLConfig.group_size
    num_samples: int = 0

    @property
    def samples_per_prompt(self) -> int:
        return self.num_samples or self.rl.group_size


def rollout_step(step_setup: StepSetup, params, prompt_ids, prompt_mask, rng, limits=None, *, mesh=None,
                 rows: int | None = None) -> Rollouts:
    """G samples per prompt, their log-probs, and p(Yes)/p(No) scored on the live cache (fused verifier).
    ``rows`` samples decode at once, the others queued for continuous refill (None: all of them). ``limits``
    ``[P * G]`` caps each sample's new tokens below ``RLConfig.max_new_tokens`` (None: none).
    With ``mesh``, the KV cache keeps ``parallel.cache_sharding``'s layout throughout the decode loop and the
    weights ``parallel.sampling_shardings``'."""
    rl = step_setup.rl
    model = nnx.merge(step_setup.graphdef, params)
    compute = model.config.jnp_compute_dtype
    prompts, width = prompt_ids.shape
    # Laid out for every sample: where that splits rows over devices, each device runs the engine on its share.
    cache_sharding = (None if mesh is None else
                      parallel.cache_sharding(mesh, prompts * step_setup.samples_per_prompt, model.config.num_kv_heads))
    if compute != model.config.jnp_dtype or mesh is not None:
        # Sampling weights: cast once, then laid out for decoding (no FSDP split: a decode step would gather every
        # weight again), as Tunix and verl sample from a separate copy of the weights.
        params = jax.tree.map(lambda w: w.astype(compute), params)
        if mesh is not None:
            params = jax.lax.with_sharding_constraint(params, parallel.sampling_shardings(params, mesh,
                                                                                           cache_sharding))
        model = nnx.merge(step_setup.graphdef, params)
    params_s = dataclasses.replace(rl.sampling_params, stop_ids=step_setup.stop_ids, pad_id=step_setup.pad_id,
                                   suppress_ids=step_setup.suppress_ids)
    out = sampling.generate(model, prompt_ids, prompt_mask, rng,
                            num_samples=step_setup.samples_per_prompt, max_new_tokens=rl.max_new_tokens,
                            params=params_s,
                            score_suffix=step_setup.verify_suffix, score_ids=(step_setup.yes_id, step_setup.no_id),
                            rows=rows, limits=limits, cache_sharding=cache_sharding,
                            prefill_rows=prefill_rows(prompts, width, mesh))
    return Rollouts(prompt_ids, prompt_mask, out.tokens, out.lengths, out.logprobs, out.finished,
                    out.score_logprobs)


def build_update_batch(step_setup: StepSetup, rollouts: Rollouts, token_advantages, correct) -> UpdateBatch:
    """Flatten ``[B, G]`` rollouts into training rows (see the module docstring for the layout), each labelled Yes
    where ``correct`` ``[B, G]`` (``Rewards``' verdict); with ``RLConfig.verify_prefixes = m``, m more blocks of
    ``B * G`` verify-only rows follow, one per cut."""
    b, g, n = rollouts.tokens.shape
    rows = b * g
    tokens = rollouts.tokens.reshape(rows, n)
    lengths = rollouts.lengths.reshape(rows)
    body_len = lengths - rollouts.finished.reshape(rows).astype(jnp.int32)  # completion without its stop token
    body_mask = jnp.arange(n)[None, :] < body_len[:, None]
    suffix = jnp.broadcast_to(jnp.asarray(step_setup.verify_suffix, jnp.int32), (rows, len(step_setup.verify_suffix)))
    prompt_ids = jnp.repeat(rollouts.prompt_ids, g, axis=0)
    prompt_mask = jnp.repeat(rollouts.prompt_mask, g, axis=0)
    target_mask = jnp.arange(n)[None, :] < lengths[:, None]
    verify_target = verifier.verify_labels(correct.reshape(rows), step_setup.yes_id, step_setup.no_id)
    m = step_setup.rl.trained_prefixes
    # Partial solutions (RLConfig.verify_prefixes): the first c_j tokens of each body, verify rows only.
    cuts = [jnp.maximum(body_len * j // (m + 1), jnp.minimum(body_len, 1)) for j in range(1, m + 1)]
    bodies = [body_mask] + [jnp.arange(n)[None, :] < c[:, None] for c in cuts]
    none = jnp.zeros_like(target_mask)
    verify_target = jnp.tile(verify_target, 1 + m)
    return UpdateBatch(
        input_ids=jnp.concatenate([jnp.concatenate([prompt_ids, jnp.where(b, tokens, step_setup.pad_id), suffix],
                                                   axis=1) for b in bodies]),
        input_mask=jnp.concatenate([jnp.concatenate([prompt_mask, b, jnp.ones_like(suffix, bool)], axis=1)
                                    for b in bodies]),
        targets=jnp.tile(tokens, (1 + m, 1)), target_mask=jnp.concatenate([target_mask] + [none] * m),
        old_logp=jnp.tile(rollouts.logprobs.reshape(rows, n), (1 + m, 1)),
        advantages=jnp.concatenate([token_advantages.reshape(rows, n) * target_mask] + [none.astype(jnp.float32)] * m),
        verify_target=verify_target,
        verify_mask=jnp.ones(((1 + m) * rows,), jnp.float32),  # RLConfig.verify_balance: per minibatch, below
    )


def group_advantages(rl: RLConfig, rewards) -> jax.Array:
    """``[B, G]`` advantages of the configured group estimator (a user's is checked for that shape: ``[1, G]`` or
    ``[B, 1]`` broadcast over the rows without a word)."""
    if advantages_lib.uses_step_values(rl.algorithm):
        raise ValueError(f"{rl.algorithm} advantages come from rl/vineppo.py's value pass, not from group rewards")
    if rl.algorithm == "grpo":
        return advantages_lib.grpo(rewards, eps=rl.advantage_eps)
    try:
        adv = jnp.asarray(advantages_lib.get(rl.algorithm)(rewards))
    except TypeError as e:  # numpy on traced arrays, a step estimator without its registration's step_values
        raise ValueError(f"advantage estimator {rl.algorithm!r} raised TypeError: {e}; a group estimator is "
                         "fn(rewards [problems, samples]) run under jit (use jax.numpy, not numpy or float()); a step "
                         "estimator is registered with rlvjax.rl.advantages.register(name, step_values=True)") from None
    if adv.shape != rewards.shape:
        raise ValueError(f"advantage estimator {rl.algorithm!r} returned shape {adv.shape}; a group estimator returns "
                         f"one advantage per rollout, [problems, samples] = {rewards.shape}")
    return adv.astype(jnp.float32)


def prepare_update(step_setup: StepSetup, rollouts: Rollouts, rewards, correct) -> tuple[UpdateBatch, jax.Array]:
    """Advantages of the graded rollouts (``rewards``, ``correct``: ``[B, G]``, as ``Rewards`` grades them) and the
    training rows built from them; returns ``(batch, advantages)``."""
    adv = group_advantages(step_setup.rl, rewards)
    token_adv = jnp.broadcast_to(adv[..., None], rollouts.tokens.shape)
    return build_update_batch(step_setup, rollouts, token_adv, correct), adv


def target_logprobs(model, h, targets, *, temperature: float, suppress_ids=(), chunk_size: int = 0):
    """``log softmax(logits / temperature)[target]`` ``[R, N]`` in f32 from the hidden states ``h [R, N, D]``.

    ``chunk_size`` > 0 builds the ``[R, chunk, V]`` logits of one chunk of positions at a time, under ``lax.scan``
    and ``jax.checkpoint``: the backward pass recomputes each chunk's logits instead of keeping all ``[R, N, V]``
    (0.6 GB per 1024-token row at Qwen's 151,936-token vocabulary). Same values and gradients either way.
    """
    def logprobs(h_c, t_c):
        logits = sampling.suppress(model.logits(h_c), suppress_ids) / temperature
        return jnp.take_along_axis(logits, t_c[..., None], axis=-1)[..., 0] - jax.nn.logsumexp(logits, axis=-1)

    r, n = targets.shape
    if not chunk_size or chunk_size >= n:
        return logprobs(h, targets)
    chunks = -(-n // chunk_size)
    pad = chunks * chunk_size - n
    h = jnp.pad(h, ((0, 0), (0, pad), (0, 0))).reshape(r, chunks, chunk_size, -1).swapaxes(0, 1)
    t = jnp.pad(targets, ((0, 0), (0, pad))).reshape(r, chunks, chunk_size).swapaxes(0, 1)
    _, out = jax.lax.scan(lambda c, x: (c, jax.checkpoint(logprobs)(*x)), None, (h, t))
    return out.swapaxes(0, 1).reshape(r, chunks * chunk_size)[:, :n]


def policy_and_verify_logits(step_setup: StepSetup, params, batch: UpdateBatch):
    """Trainer-side ``log pi(target)`` at the sampling temperature ``[R, N]`` and the verify logits ``[R, V]``."""
    rl = step_setup.rl
    model = nnx.merge(step_setup.graphdef, params)
    n = batch.targets.shape[1]
    p = batch.input_ids.shape[1] - n - len(step_setup.verify_suffix)
    h, _ = model.hidden(batch.input_ids, batch.input_mask, remat=rl.remat, constrain=step_setup.constrain_rows)
    logp = target_logprobs(model, h[:, p - 1: p + n - 1], batch.targets, temperature=rl.temperature,
                           suppress_ids=step_setup.suppress_ids, chunk_size=rl.logprob_chunk_size)
    logp = jnp.where(batch.target_mask, logp, 0.0)  # padding may be a suppressed id: -inf outside the targets
    return logp, model.logits(h[:, -1])


def _loss(params, ref_params, step_setup: StepSetup, batch: UpdateBatch, policy_count, verify_count):
    rl = step_setup.rl
    logp, verify_logits = policy_and_verify_logits(step_setup, params, batch)
    ref_logp = None
    if ref_params is not None:
        ref_logp = jax.lax.stop_gradient(policy_and_verify_logits(step_setup, ref_params, batch)[0])
    pl_sum, _, pdiag = losses.policy_loss(
        logp, batch.old_logp, batch.advantages, batch.target_mask, eps_low=rl.eps_low, eps_high=rl.eps_high,
        aggregation=rl.loss_aggregation, max_len=rl.max_new_tokens, ref_logp=ref_logp, beta=rl.beta,
        kl_estimator=rl.kl_estimator)
    # The diagnostics read the rollouts' own rows, unweighted: the partial solutions (RLConfig.verify_prefixes:
    # verify rows without policy targets) and verify_balance's weights are the objective's, not the verifier's
    # accuracy on its rollouts (a lambda = 0 baseline builds no partial rows: its verify_* read other rows, review)
    complete = (batch.verify_mask > 0) & jnp.any(batch.target_mask > 0, axis=1)
    vl_sum, _, vdiag = losses.verify_loss(verify_logits, batch.verify_target, batch.verify_mask,
                                          yes_id=step_setup.yes_id, no_id=step_setup.no_id, diagnostics_mask=complete)
    loss = pl_sum / jnp.maximum(policy_count, 1.0) + rl.lambda_verify * vl_sum / jnp.maximum(verify_count, 1.0)
    return loss, (pl_sum, vl_sum, pdiag, vdiag)


def _minibatch_grads(step_setup: StepSetup, params, ref_params, batch: UpdateBatch):
    """Gradients of the minibatch objective, accumulated over micro-batches: exact, since the normalising counts
    depend only on masks and are computed for the whole minibatch first."""
    rl = step_setup.rl
    rows = batch.targets.shape[0]
    if rl.verify_balance:  # Yes and No weigh half each in every optimizer step, whichever rows its minibatch drew
        batch = batch._replace(verify_mask=losses.class_balanced_weights(batch.verify_target == step_setup.yes_id))
    policy_count = losses.aggregate(jnp.zeros(batch.target_mask.shape), batch.target_mask, rl.loss_aggregation,
                                    rl.max_new_tokens)[1]
    verify_count = jnp.sum(batch.verify_mask)
    micro = rl.micro_batch_size or rows
    if rows % micro:
        raise ValueError(f"minibatch of {rows} rows is not a multiple of micro_batch_size={micro}")
    # Micro-batch m takes rows m, m + M, m + 2M, ...: a reshape that keeps the (sharded) row axis in place.
    split = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(micro, rows // micro, *x.shape[1:]), 0, 1), batch)
    grad_fn = jax.grad(_loss, has_aux=True)

    def accumulate(carry, mb):
        grads, pl, vl, pdiag, vdiag = carry
        g, (pl_sum, vl_sum, pd, vd) = grad_fn(params, ref_params, step_setup, mb, policy_count, verify_count)
        return (jax.tree.map(jnp.add, grads, g), pl + pl_sum, vl + vl_sum, losses.merge_diagnostics(pdiag, pd),
                losses.merge_diagnostics(vdiag, vd)), None

    # Zeros of the accumulator's structure (maxima start at 0: ratios are positive), then one scan over all.
    shapes = jax.eval_shape(lambda mb: grad_fn(params, ref_params, step_setup, mb, policy_count, verify_count),
                            jax.tree.map(lambda x: x[0], split))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (shapes[0], *shapes[1]))
    (grads, pl, vl, pdiag, vdiag), _ = jax.lax.scan(accumulate, zeros, split)
    stats = {"policy_loss": pl / jnp.maximum(policy_count, 1.0), "verify_loss": vl / jnp.maximum(verify_count, 1.0)}
    return grads, stats, pdiag, vdiag


def update_step(step_setup: StepSetup, state: TrainState, batch: UpdateBatch) -> tuple[TrainState, dict]:
    """``num_ppo_epochs`` x ``num_minibatches`` optimizer steps on one batch of rollouts, under one ``lax.scan``
    (each epoch visits the rows in a fresh random order, ``num_minibatches`` slices of it)."""
    rl = step_setup.rl
    rows = batch.targets.shape[0]
    if rows % rl.num_minibatches:
        raise ValueError(f"{rows} rollouts do not split into num_minibatches={rl.num_minibatches}")
    rng, perm_key = jax.random.split(jax.random.wrap_key_data(state.rng))
    size, updates_per_batch = rows // rl.num_minibatches, rl.updates_per_step

    def optimizer_step(carry, mb):
        params, opt_state = carry
        grads, stats, pdiag, vdiag = _minibatch_grads(step_setup, params, state.ref_params, mb)
        updates, opt_state = step_setup.tx.update(grads, opt_state, params)
        stats["grad_norm"] = optax.tree.norm(grads)
        return (optax.apply_updates(params, updates), opt_state), (stats, pdiag, vdiag)

    if updates_per_batch == 1:  # the whole batch, in its order: no gather
        (params, opt_state), history = optimizer_step((state.params, state.opt_state), batch)
        history = jax.tree.map(lambda x: x[None], history)
    else:
        orders = jnp.stack([jax.random.permutation(jax.random.fold_in(perm_key, epoch), rows)
                            for epoch in range(rl.num_ppo_epochs)]).reshape(updates_per_batch, size)
        (params, opt_state), history = jax.lax.scan(
            lambda carry, order: optimizer_step(carry, jax.tree.map(lambda x: jnp.take(x, order, axis=0), batch)),
            (state.params, state.opt_state), orders)
    # Epoch one's first minibatch is on-policy: its losses, verifier diagnostics and log-prob gap (the sampler's
    # against the trainer's) describe the data. The other policy diagnostics (ratios, clip fractions, KL, pg_loss;
    # count: their tokens) cover every optimizer step: after the first, the policy has moved and the clip acts.
    first_stats, first_pdiag, first_vdiag = jax.tree.map(lambda x: x[0], history)
    every = {k: jnp.max(v) if k.endswith("_max") else jnp.sum(v) for k, v in history[1].items()}
    policy = {**losses.mean_diagnostics(every), "logp_gap": losses.mean_diagnostics(first_pdiag)["logp_gap"]}
    if state.ref_params is None:  # no reference policy (beta = 0): no KL to report, rather than a flat 0
        del policy["kl"]
    verify = losses.mean_diagnostics(first_vdiag)
    # Epoch one's first minibatch may hold partial solutions alone (verify_prefixes with several minibatches): then
    # the verifier was not measured there, NaN, not a perfect-looking 0 (review)
    verify = {k: v if k == "count" else jnp.where(verify["count"] > 0, v, jnp.nan) for k, v in verify.items()}
    # verify_loss: the verifier's cross-entropy on the rollouts, as a lambda = 0 baseline measures it; the L_V it
    # trains on beside it where that differs (partial solutions, class-balanced weights)
    trained = {"verify_loss_trained": first_stats["verify_loss"]} if rl.trained_prefixes or rl.verify_balance else {}
    metrics = {**first_stats, "verify_loss": verify.pop("nll"), **trained,
               **{f"policy/{k}": v for k, v in policy.items()}, **{f"verify/{k}": v for k, v in verify.items()},
               "nonfinite_updates": opt_state.total_notfinite}
    if updates_per_batch > 1:
        metrics["last_policy_loss"] = history[0]["policy_loss"][-1]
    new_state = state.replace(params=params, opt_state=opt_state, step=state.step + 1,
                              rng=jax.random.key_data(rng))
    return new_state, metrics


class JittedSteps(NamedTuple):
    rollout: Any  # (params, prompt_ids, prompt_mask, rng) -> Rollouts
    prepare: Any  # (rollouts, rewards, correct) -> (UpdateBatch, advantages): group estimators
    build: Any  # (rollouts, token_advantages, correct) -> UpdateBatch: precomputed (VinePPO) advantages
    update: Any  # (state, batch) -> (state, metrics); donates the state


PREFILL_TOKENS = 4096  # prompt tokens a device prefills at once


def prefill_rows(prompts: int, width: int, mesh=None) -> int | None:
    """Prompts prefilled together: about ``PREFILL_TOKENS`` per device, a divisor of ``prompts`` and a multiple of
    the devices the rows are split over (None: all at once)."""
    devices = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
    target = devices * max(1, PREFILL_TOKENS // width)
    if target >= prompts:
        return None
    fits = [r for r in range(devices, target + 1, devices) if prompts % r == 0]
    return fits[-1] if fits else None


def jit_rollout(step_setup: StepSetup, mesh, params_sharding, rows: int | None = None):
    """``rollout_step`` jitted for ``mesh``: params laid out by ``params_sharding``, prompts and rollouts by rows over
    the data axes (training rollouts and evaluation pools alike); ``rows``: ``rollout_step``'s. It takes
    ``(params, ids, mask, rng, limits)``, ``limits`` None for none."""
    by_rows, by_rows_3d = (parallel.batch_sharding(mesh, d) for d in (2, 3))
    return jax.jit(functools.partial(rollout_step, step_setup, mesh=mesh, rows=rows),
                   in_shardings=(params_sharding, by_rows, by_rows, None, None),
                   out_shardings=Rollouts(by_rows, by_rows, by_rows_3d, by_rows, by_rows_3d, by_rows, by_rows_3d))


def jit_steps(step_setup: StepSetup, mesh, state: TrainState) -> JittedSteps:
    """The steps jitted with explicit shardings: params by the partition rules, rows over the data axes."""
    state_sharding = parallel.shardings(state, mesh)
    by_rows_1d, by_rows = (parallel.batch_sharding(mesh, d) for d in (1, 2))
    step_setup = dataclasses.replace(step_setup, constrain_rows=parallel.rows_constraint(mesh))
    batch_sharding = UpdateBatch(by_rows, by_rows, by_rows, by_rows, by_rows, by_rows, by_rows_1d, by_rows_1d)
    return JittedSteps(
        rollout=jit_rollout(step_setup, mesh, state_sharding.params),
        prepare=jax.jit(functools.partial(prepare_update, step_setup), out_shardings=(batch_sharding, by_rows)),
        build=jax.jit(functools.partial(build_update_batch, step_setup), out_shardings=batch_sharding),
        update=jax.jit(functools.partial(update_step, step_setup), in_shardings=(state_sharding, batch_sharding),
                       out_shardings=(state_sharding, None), donate_argnums=(0,)),
    )
