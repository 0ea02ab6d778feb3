"""Host-side statistics of one batch of rollouts: reward, advantages, lengths, and the verifier's judgement of the
rollouts as sampled (before the update) against the grader's."""

from __future__ import annotations

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random correct rollout outscores a random wrong one (ties count half); NaN when a class
    is missing. The Mann-Whitney U statistic with average ranks."""
    labels = labels.astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based average rank of each tie block
    return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def within_problem_auroc(scores: np.ndarray, correct: np.ndarray) -> float:
    """Mean per-problem AUROC over the problems (rows of ``[P, K]``) with both right and wrong samples; NaN when
    there are none. Best-of-N and the weighted vote rank samples of one problem against each other, so this, not
    the pooled AUROC (which a verifier also earns by telling easy problems from hard ones), is what they use."""
    per_problem = [auroc(s, c) for s, c in zip(scores, correct.astype(bool)) if 0 < c.sum() < c.size]
    return float(np.mean(per_problem)) if per_problem else float("nan")


def calibration_error(p_yes: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of p(Yes) as a probability of correctness, over equal-width bins (a NaN p(Yes)
    is 0, as ``testtime.as_weights`` has it; it fell in no bin)."""
    p_yes = np.nan_to_num(np.asarray(p_yes, dtype=np.float64), nan=0.0)
    index = np.minimum((p_yes * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = index == b
        if inside.any():
            total += inside.mean() * abs(p_yes[inside].mean() - correct[inside].mean())
    return float(total)


def verifier_stats(yes_logp: np.ndarray, no_logp: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean of the per-class recalls; a class absent from the batch is left out), the
    mean normalised p(Yes) and the AUROC by it. A rollout the verifier could not score (Yes and No both at -inf:
    p(Yes) NaN) counts as p(Yes) = 0, a "No", as the votes weigh it (``testtime.as_weights``): a NaN made the mean
    NaN and ranked first in the AUROC."""
    with np.errstate(invalid="ignore", over="ignore"):
        margin = np.asarray(yes_logp, np.float64) - no_logp  # NaN where both are -inf
        margin = np.where(np.isnan(margin), -np.inf, margin)
        p_yes = 1.0 / (1.0 + np.exp(-margin))
    said_yes = margin > 0
    correct = correct.astype(bool)
    recalls = [np.mean(said_yes[correct]) if correct.any() else None,
               np.mean(~said_yes[~correct]) if (~correct).any() else None]
    recalls = [r for r in recalls if r is not None]
    return {"verifier_accuracy": float(np.mean(said_yes == correct)),
            "verifier_balanced_accuracy": float(np.mean(recalls)), "verifier_p_yes": float(np.mean(p_yes)),
            "verifier_auroc": auroc(margin, correct)}


def rollout_stats(rewards: np.ndarray, correct: np.ndarray, advantages: np.ndarray, lengths: np.ndarray,
                  finished: np.ndarray, verify_logprobs: np.ndarray) -> dict[str, float]:
    """``rewards``, ``correct`` (the verifier's label), ``advantages`` (a rollout's: VinePPO's per-token mean,
    whose token-level figures it logs as ``vineppo/token_advantage_*``), ``lengths``, ``finished``: ``[B, G]``;
    ``verify_logprobs``: ``[B, G, 2]``."""
    return {
        "reward_mean": float(rewards.mean()),
        "pass_rate": float(np.mean(correct.any(axis=1))),  # problems with at least one correct sample
        "verify_yes_labels": float(np.mean(correct)),  # rollouts the verifier is taught to call correct
        "zero_variance_groups": float(np.mean(rewards.min(axis=1) == rewards.max(axis=1))),
        "advantage_mean": float(advantages.mean()),
        "advantage_std": float(advantages.std()),
        "advantage_abs_max": float(np.abs(advantages).max()),
        "completion_length": float(lengths.mean()),
        "truncation_rate": float(1.0 - finished.mean()),
        **verifier_stats(verify_logprobs[..., 0].ravel(), verify_logprobs[..., 1].ravel(), correct.ravel()),
    }
