"""Adaptive parallel sampling: sample a problem in rounds and stop once its verifier-weighted vote is settled.

The stopping rule reads only the model's own answers and verifier scores, never a gold answer: after each round
(``AdaptiveRule.round_size`` samples, at least ``min_samples`` in all) the samples so far are resampled with
replacement ``bootstraps`` times, and the problem stops when the share of resamples whose weighted vote picks another
class than the current leader is at most ``delta``. Easy problems (agreeing, confident samples) stop early; hard ones
go on, up to ``max_samples`` each. (The difficulty-aware allocation of Snell et al. 2024, with difficulty read from
the verifier.)

Samples are i.i.d., so a pool of K samples per problem taken in order *is* a run of adaptive sampling: ``simulate``
replays the rule on an evaluated pool (``eval_samples.jsonl``) and prices each problem in generated tokens, to put
adaptive sampling beside fixed-N voting at equal token budgets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rlvjax.fieldtypes import check_field_types


@dataclasses.dataclass(frozen=True)
class AdaptiveRule:
    min_samples: int = 4  # samples before the first check
    round_size: int = 4  # samples added between checks
    max_samples: int = 64  # cap per problem
    delta: float = 0.1  # stop when at most this share of bootstrap resamples elects another class
    bootstraps: int = 200  # resamples per check

    def __post_init__(self):
        check_field_types(self)
        checks = [(self.min_samples >= 1, f"min_samples={self.min_samples} must be >= 1"),
                  (self.round_size >= 1, f"round_size={self.round_size} must be >= 1"),
                  (self.max_samples >= self.min_samples,
                   f"max_samples={self.max_samples} must be >= min_samples={self.min_samples} (a budget of 0 "
                   "samples answers nothing)"),
                  (0 <= self.delta <= 1, f"delta={self.delta} must be in [0, 1]"),
                  (self.bootstraps >= 1, f"bootstraps={self.bootstraps} must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"AdaptiveRule.{message}")


def weighted_leader(classes: np.ndarray, scores: np.ndarray) -> int:
    """The class with the largest summed score (lowest id on ties); -1 when no answer parses."""
    valid = classes >= 0
    if not valid.any():
        return -1
    return int(np.argmax(np.bincount(classes[valid], weights=scores[valid])))


def overturn_probability(classes: np.ndarray, scores: np.ndarray, bootstraps: int, rng: np.random.Generator) -> float:
    """The share of bootstrap resamples of these samples whose weighted vote is not the current leader (1 when
    nothing parses: there is no leader to keep)."""
    leader = weighted_leader(classes, scores)
    if leader < 0:
        return 1.0
    n = len(classes)
    picks = rng.integers(0, n, size=(bootstraps, n))
    resampled, weights = classes[picks], np.where(classes[picks] >= 0, scores[picks], 0.0)
    num = int(classes.max()) + 1
    totals = np.zeros((bootstraps, num))
    np.add.at(totals, (np.arange(bootstraps)[:, None], np.maximum(resampled, 0)), weights)
    return float(np.mean(np.argmax(totals, axis=1) != leader))


def samples_needed(classes: np.ndarray, scores: np.ndarray, rule: AdaptiveRule, rng: np.random.Generator) -> int:
    """How many of a problem's samples, taken in order, the rule draws before it stops (at most ``max_samples``
    and the pool's size)."""
    cap = min(rule.max_samples, len(classes))
    n = min(rule.min_samples, cap)
    while n < cap and overturn_probability(classes[:n], scores[:n], rule.bootstraps, rng) > rule.delta:
        n = min(n + rule.round_size, cap)
    return n


def simulate(classes: np.ndarray, scores: np.ndarray, correct: np.ndarray, lengths: np.ndarray, rule: AdaptiveRule,
             seed: int = 0) -> dict:
    """The rule replayed on ``[P, K]`` pools (class ids, verifier scores, grades, completion tokens): per problem
    the samples drawn and the weighted vote's answer at the stop. Returns ``accuracy`` (a winning class scores the
    mean grade of its members, as the curves do), ``samples`` (per problem) and ``tokens`` (all problems)."""
    rng = np.random.default_rng(seed)
    used, accuracy, tokens = [], [], 0
    for c, s, g, n_tokens in zip(classes, scores, correct, lengths):
        n = samples_needed(c, s, rule, rng)
        leader = weighted_leader(c[:n], s[:n])
        accuracy.append(float(np.mean(g[:n][c[:n] == leader])) if leader >= 0 else 0.0)
        used.append(n)
        tokens += int(np.sum(n_tokens[:n]))
    return {"accuracy": float(np.mean(accuracy)), "samples": np.asarray(used), "tokens": tokens}
