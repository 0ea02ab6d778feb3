"""RL^V losses (DESIGN.md steps 4-5): PPO-clip policy loss, KL estimators, one-position verification CE.

Every loss returns `(loss_sum, count, diagnostics)`. The objective is `loss_sum / count`; summing both over
micro-batches before dividing gives exactly the full-batch value, whatever the aggregation.

Diagnostics follow one convention so they also accumulate exactly (see `merge_diagnostics` / `mean_diagnostics`):
`diagnostics["count"]` is the number of items the sums run over (valid tokens for `policy_loss`, supervised
sequences for `verify_loss`), keys ending in `_sum` are sums over those items, keys ending in `_max` are maxima.
"""

from typing import Callable

import jax
import jax.numpy as jnp

# ----------------------------------------------------------------------------------------------------------------
# Aggregations: how per-token losses become (sum, count). Token mean weighs long completions more; the sequence
# mean weighs every completion equally; Dr.GRPO divides token sums by a constant to avoid the length bias.


def _token_mean(per_token, mask, max_len):
    return jnp.sum(per_token * mask), jnp.sum(mask)


def _seq_mean_token_mean(per_token, mask, max_len):
    tokens = jnp.sum(mask, axis=-1)
    seq_means = jnp.sum(per_token * mask, axis=-1) / jnp.maximum(tokens, 1.0)
    return jnp.sum(seq_means), jnp.sum(tokens > 0).astype(per_token.dtype)


def _seq_mean_token_sum_norm(per_token, mask, max_len):
    if max_len is None:
        raise ValueError("aggregation 'seq_mean_token_sum_norm' (Dr.GRPO) needs max_len, the constant normaliser")
    tokens = jnp.sum(mask, axis=-1)
    return jnp.sum(per_token * mask) / max_len, jnp.sum(tokens > 0).astype(per_token.dtype)


AGGREGATIONS: dict[str, Callable] = {
    "token_mean": _token_mean,
    "seq_mean_token_mean": _seq_mean_token_mean,
    "seq_mean_token_sum_norm": _seq_mean_token_sum_norm,
}


def aggregate(per_token, mask, aggregation: str = "token_mean", max_len=None):
    """(sum, count) of a [B, T] per-token loss under a named aggregation. Sequences with no valid token (batch
    padding) count for nothing in the sequence-level modes."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; valid names: {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[aggregation](per_token, mask, max_len)


# ----------------------------------------------------------------------------------------------------------------
# KL(pi || pi_ref) per token, estimated from samples of pi.


def _k1(logp, ref_logp):
    return logp - ref_logp


def _k3(logp, ref_logp):
    # exp(d) - d - 1 >= 0, unbiased, low variance (Schulman's k3); expm1 keeps precision when d ~ 0.
    d = ref_logp - logp
    return jnp.expm1(d) - d


KL_ESTIMATORS: dict[str, Callable] = {"k1": _k1, "k3": _k3}


def kl_penalty(logp, ref_logp, estimator: str = "k3"):
    """Per-token KL estimate: `k1` = logp - ref, `k3` = exp(ref - logp) - (ref - logp) - 1."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; valid names: {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](logp, ref_logp)


# ----------------------------------------------------------------------------------------------------------------


def policy_loss(logp, old_logp, advantages, mask, *, eps_low=0.2, eps_high=0.2, aggregation="token_mean",
                max_len=None, ref_logp=None, beta=0.0, kl_estimator="k3"):
    """PPO-clip loss: -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) + beta * KL per token.

    logp / old_logp / ref_logp / mask: [B, T] log-probs of the sampled completion tokens (mask = 1 on them);
    advantages: [B, T] or [B] (one per completion, broadcast over its tokens). Only `logp` carries gradient:
    old_logp, advantages and ref_logp are constants of the update. `ref_logp` alone (beta = 0) still reports KL.
    Diagnostics (sums over valid tokens, see module doc): pg_loss_sum (loss without KL), kl_sum, ratio_sum,
    ratio_max, clipped_low_sum / clipped_high_sum / clipped_sum (tokens whose gradient the clip removes; their
    means are the clip fractions), logp_gap_sum (|logp - old_logp|: on epoch one's first minibatch, the
    sampler-vs-trainer gap).
    A micro-batch with no valid token returns count 0: divide only after summing over micro-batches.
    """
    if ref_logp is None and not (isinstance(beta, (int, float)) and beta == 0):
        raise ValueError("beta != 0 needs ref_logp, the reference policy's log-probs")
    dtype = jnp.promote_types(jnp.result_type(logp), jnp.float32)
    logp = jnp.asarray(logp, dtype)
    old_logp = jax.lax.stop_gradient(jnp.asarray(old_logp, dtype))
    mask = jnp.asarray(mask, dtype)
    advantages = jax.lax.stop_gradient(jnp.asarray(advantages, dtype))
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    advantages = jnp.broadcast_to(advantages, logp.shape)

    ratio = jnp.exp(logp - old_logp)
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    pg = -jnp.minimum(ratio * advantages, clipped * advantages)
    kl = jnp.zeros_like(logp)
    if ref_logp is not None:
        kl = kl_penalty(logp, jax.lax.stop_gradient(jnp.asarray(ref_logp, dtype)), kl_estimator)
    loss_sum, count = aggregate(pg + beta * kl, mask, aggregation, max_len)

    clip_low = (ratio < 1.0 - eps_low) & (advantages < 0)
    clip_high = (ratio > 1.0 + eps_high) & (advantages > 0)
    valid = mask > 0
    stats = jax.lax.stop_gradient
    diagnostics = {
        "count": jnp.sum(mask),
        "pg_loss_sum": stats(jnp.sum(pg * mask)),
        "kl_sum": stats(jnp.sum(kl * mask)),
        "ratio_sum": stats(jnp.sum(ratio * mask)),
        "ratio_max": stats(jnp.max(jnp.where(valid, ratio, 0.0))),
        "clipped_low_sum": jnp.sum(clip_low * mask),
        "clipped_high_sum": jnp.sum(clip_high * mask),
        "clipped_sum": jnp.sum((clip_low | clip_high) * mask),
        "logp_gap_sum": stats(jnp.sum(jnp.abs(logp - old_logp) * mask)),
    }
    return loss_sum, count, diagnostics


def class_balanced_weights(positive):
    """``[B]`` weights that give the positive and the negative rows half the total weight each (``B / 2``); all 1
    when the batch holds one class only. As ``verify_loss``'s mask they make its mean a class-balanced CE."""
    positive = jnp.asarray(positive, bool)
    rows = positive.size
    num_pos = jnp.sum(positive)
    weights = jnp.where(positive, rows / (2.0 * jnp.maximum(num_pos, 1)),
                        rows / (2.0 * jnp.maximum(rows - num_pos, 1)))
    return jnp.where((num_pos > 0) & (num_pos < rows), weights, 1.0).astype(jnp.float32)


def verify_loss(logits, targets, mask=None, *, yes_id=None, no_id=None, diagnostics_mask=None):
    """Verification cross-entropy at one position per sequence: -log softmax(logits)[target].

    logits: [B, V], already gathered at the last verify-prompt position; targets: [B] token ids (Yes / No);
    mask: [B] row weights (0 drops a sequence, e.g. batch padding; see `class_balanced_weights`). Diagnostics are
    sums over the rows of ``diagnostics_mask`` ([B] weights; None: ``mask``): `nll_sum` of the cross-entropy,
    `accuracy_sum` counts predictions equal to the target, where the prediction is the argmax over {yes_id, no_id}
    when both are given (the verifier's decision; ties go to No) and over the whole vocabulary otherwise; with the
    ids, `label_mass_sum` sums p(Yes) + p(No), showing whether the model answers in the label tokens.
    """
    logits = jnp.asarray(logits)
    logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    targets = jnp.asarray(targets, jnp.int32)
    mask = jnp.ones(targets.shape, logp.dtype) if mask is None else jnp.asarray(mask, logp.dtype)
    nll = -jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]
    count = jnp.sum(mask)

    logp = jax.lax.stop_gradient(logp)
    if yes_id is not None and no_id is not None:
        predicted = jnp.where(logp[:, yes_id] > logp[:, no_id], yes_id, no_id)
    else:
        predicted = jnp.argmax(logp, axis=-1)
    seen = mask if diagnostics_mask is None else jnp.asarray(diagnostics_mask, logp.dtype)
    diagnostics = {"count": jnp.sum(seen), "accuracy_sum": jnp.sum((predicted == targets) * seen),
                   "nll_sum": jnp.sum(jax.lax.stop_gradient(nll) * seen)}
    if yes_id is not None and no_id is not None:
        label_mass = jnp.exp(logp[:, yes_id]) + jnp.exp(logp[:, no_id])
        diagnostics["label_mass_sum"] = jnp.sum(label_mass * seen)
    return jnp.sum(nll * mask), count, diagnostics


# ----------------------------------------------------------------------------------------------------------------
# Diagnostics accumulation, following the naming convention in the module docstring.


def merge_diagnostics(a: dict, b: dict) -> dict:
    """Combine the diagnostics of two micro-batches: maxima by max, everything else (sums, count) by sum."""
    return {k: jnp.maximum(a[k], b[k]) if k.endswith("_max") else a[k] + b[k] for k in a}


def mean_diagnostics(diagnostics: dict) -> dict:
    """Loggable values: `x_sum` becomes `x` = x_sum / count (0 when count is 0); `_max` and `count` pass through."""
    denom = jnp.maximum(diagnostics["count"], 1.0)
    return {k.removesuffix("_sum"): v / denom if k.endswith("_sum") else v for k, v in diagnostics.items()}
