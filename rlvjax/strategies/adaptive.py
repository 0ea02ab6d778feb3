"""Adaptive parallel sampling: sample a problem in rounds and stop once its verifier-weighted vote is settled.

The stopping rule reads only the model's own answers and verifier scores, never a gold answer: after each round
(``AdaptiveRule.round_size`` samples, ``min_samples`` in the first) a problem's samples so far are resampled with
replacement ``bootstraps`` times, and the problem stops when the share of resamples whose weighted vote picks another
class than the current leader is at most ``delta``. Easy problems (agreeing, confident samples) stop early; hard ones
go on, up to ``max_samples`` each (the difficulty-aware allocation of Snell et al. 2024, with difficulty read from the
verifier). With an overall cap (``mean_samples`` per problem on average), each round goes to the least settled
problems first until the cap is spent.

``allocate`` runs the rule over any source of samples. ``run`` draws them live from the engine (one jitted sampler
per round size; every round of every problem has its own keys). Samples are i.i.d., so a pool of K samples per
problem taken in order *is* a run of adaptive sampling: ``simulate`` replays the rule on an evaluated pool, giving
what ``run`` would give on those samples, beside the fixed-N votes of the same pool (``replays``: in several orders,
as a report averages them). Where math equivalences do not chain (``50%`` equals ``0.5`` and ``50``, which differ),
``simulate`` numbers classes over the whole pool and ``run`` over the answers drawn so far, which can group them
differently, and the two can stop at other rounds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from rlvjax.fieldtypes import check_field_types
from rlvjax.strategies.outcome import Outcome, leader_grade, tied_with_max, voted, weighted_leader


@dataclasses.dataclass(frozen=True)
class AdaptiveRule:
    min_samples: int = 4  # samples before the first check
    round_size: int = 4  # samples added between checks
    max_samples: int = 64  # cap per problem
    delta: float = 0.1  # stop when at most this share of bootstrap resamples elects another class
    bootstraps: int = 200  # resamples per check
    mean_samples: float | None = None  # overall cap: at most this many samples per problem on average (None: none)

    def __post_init__(self):
        check_field_types(self)
        checks = [(self.min_samples >= 1, f"min_samples={self.min_samples} must be >= 1 (a budget of 0 samples "
                   "answers nothing)"),
                  (self.round_size >= 1, f"round_size={self.round_size} must be >= 1"),
                  (self.max_samples >= self.min_samples,
                   f"max_samples={self.max_samples} must be >= min_samples={self.min_samples} (a budget of 0 "
                   "samples answers nothing)"),
                  (0 <= self.delta <= 1, f"delta={self.delta} must be in [0, 1]"),
                  (self.bootstraps >= 1, f"bootstraps={self.bootstraps} must be >= 1"),
                  (self.mean_samples is None or self.mean_samples >= self.min_samples,
                   f"mean_samples={self.mean_samples} must be >= min_samples={self.min_samples}: every problem gets "
                   "its first round")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"AdaptiveRule.{message}")


def overturn_probability(classes: np.ndarray, scores: np.ndarray, bootstraps: int, rng: np.random.Generator) -> float:
    """The share of bootstrap resamples of these samples whose weighted vote (``weighted_leader``: a NaN score adds
    0, ties go to the tied class drawn first) is not the current leader (1 when nothing parses: there is no leader
    to keep)."""
    leader = weighted_leader(classes, scores)
    if leader < 0:
        return 1.0
    n = len(classes)
    picks = rng.integers(0, n, size=(bootstraps, n))
    resampled = classes[picks]
    weights = np.where(resampled >= 0, np.nan_to_num(np.asarray(scores, np.float64), nan=0.0)[picks], 0.0)
    num = int(classes.max()) + 1
    totals, first = np.zeros((bootstraps, num)), np.full((bootstraps, num), n)
    at = (np.arange(bootstraps)[:, None], np.maximum(resampled, 0))
    np.add.at(totals, at, weights)
    np.minimum.at(first, at, np.where(resampled >= 0, np.arange(n), n))  # where each class is first drawn
    voted_for = first < n
    # A resample with no parsed answer elects nothing (-1): it overturns whichever class leads.
    tied = voted_for & tied_with_max(np.where(voted_for, totals, -np.inf))
    elected = np.where(voted_for.any(axis=1), np.argmin(np.where(tied, first, n), axis=1), -1)
    return float(np.mean(elected != leader))


def allocate(rule: AdaptiveRule, num_problems: int, draw: Callable[[np.ndarray, int], None],
             view: Callable[[int], tuple[np.ndarray, np.ndarray]], seed: int = 0) -> np.ndarray:
    """Runs ``rule``: ``draw(problems, n)`` adds ``n`` samples to each of ``problems``; ``view(i)`` is problem
    ``i``'s ``(class ids, scores)`` so far. Returns the samples drawn per problem."""
    rng = np.random.default_rng(seed)
    drawn = np.zeros(num_problems, np.int64)
    total = math.inf if rule.mean_samples is None else int(rule.mean_samples * num_problems)

    def grant(problems: np.ndarray, n: int) -> None:
        draw(problems, n)
        drawn[problems] += n

    settled = np.zeros(num_problems, bool)  # a problem that stopped stays stopped
    grant(np.arange(num_problems), rule.min_samples)
    while True:
        open_ = np.flatnonzero((drawn < rule.max_samples) & ~settled)
        risk = np.array([overturn_probability(*view(i), rule.bootstraps, rng) for i in open_])
        settled[open_[risk <= rule.delta]] = True
        order = np.argsort(-risk, kind="stable")  # the least settled first, for the overall cap
        todo = open_[order][risk[order] > rule.delta]
        sizes = np.minimum(rule.round_size, rule.max_samples - drawn[todo])
        within, left = np.zeros(len(todo), bool), total - drawn.sum()
        for j, size in enumerate(sizes):  # in that order, every round that still fits (a short last one may)
            within[j], left = (True, left - size) if size <= left else (False, left)
        todo, sizes = todo[within], sizes[within]
        if not len(todo):
            return drawn
        for n in np.unique(sizes):
            grant(todo[sizes == n], int(n))


def within(rule: AdaptiveRule, k: int) -> AdaptiveRule:
    """``rule`` with its caps at most a pool of ``k`` samples per problem: what a replay on that pool runs."""
    if rule.max_samples <= k:
        return rule
    return dataclasses.replace(rule, max_samples=k, min_samples=min(rule.min_samples, k), mean_samples=(
        None if rule.mean_samples is None else max(min(rule.mean_samples, k), min(rule.min_samples, k))))


def simulate(classes: np.ndarray, scores: np.ndarray, correct: np.ndarray, lengths: np.ndarray, rule: AdaptiveRule,
             seed: int = 0) -> Outcome:
    """The rule replayed on ``[P, K]`` pools (class ids, verifier scores, grades, completion tokens), each problem's
    samples taken in order (caps above K are K); the vote is scored at each problem's stop."""
    p, k = classes.shape
    rule = within(rule, k)
    counts = np.zeros(p, np.int64)

    def draw(problems, n):
        counts[problems] += n

    used = allocate(rule, p, draw, lambda i: (classes[i, :counts[i]], scores[i, :counts[i]]), seed)
    return Outcome(correct=np.array([leader_grade(c[:n], s[:n], g[:n])
                                     for c, s, g, n in zip(classes, scores, correct, used)]),
                   samples=used, tokens=np.array([int(np.sum(t[:n])) for t, n in zip(lengths, used)]),
                   verifier_passes=used)


REPLAY_ORDERS = 8  # sample orders a report replays the rule in (each an equally valid run), averaged


def replays(classes: np.ndarray, scores: np.ndarray, correct: np.ndarray, lengths: np.ndarray, rule: AdaptiveRule,
            *, seed: int = 0, orders: int = REPLAY_ORDERS) -> list[Outcome]:
    """``simulate`` on ``orders`` orders of each problem's samples: the pool's own first, then random permutations
    (seeded by ``seed``). Samples are i.i.d., so each order is a run; one run's accuracy varies with it (sd 0.03
    over 200 orders of a 64-problem pool, and a third of them never reached the fixed-N accuracy that the pool's
    own order did), while the fixed-N curves a report reads it against are means over random subsets."""
    p, k = classes.shape
    rng = np.random.default_rng([seed, k])
    out = []
    for o in range(orders):
        order = np.tile(np.arange(k), (p, 1))
        order = order if o == 0 else rng.permuted(order, axis=1)
        ordered = [np.take_along_axis(np.asarray(x), order, axis=1) for x in (classes, scores, correct, lengths)]
        out.append(simulate(*ordered, rule, seed=seed))
    return out


def round_seed(seed: int, round_index: int) -> int:
    """The engine seed of a live run's ``round_index``-th round (each round's samples have their own keys)."""
    return int(np.random.SeedSequence([seed, round_index]).generate_state(1)[0] >> 1)


def run(policy, records: list[dict], rule: AdaptiveRule, *, seed: int = 0, mesh=None,
        rows: int | None = None) -> Outcome:
    """Adaptive sampling of ``policy`` (a ``strategies.policy.Policy``) on ``records``, live through the engine
    (with the fused verifier score), ``rows`` decoding at once (None: a round's samples of a batch all together)."""
    from rlvjax import parallel, testtime
    from rlvjax.pool import PoolSampler, sample_pool

    mesh = mesh or parallel.make_mesh(parallel.MeshConfig())
    conventions = policy.conventions
    keys = ("answers", "scores", "correct", "lengths")
    got = [{key: [] for key in keys} for _ in records]
    samplers, classes, rounds = {}, {}, [0]

    def draw(problems, n):
        if n not in samplers:
            samplers[n] = PoolSampler.for_model(policy.model, policy.tokenizer, policy.rl, mesh, num_samples=n,
                                                rows=rows, verify=policy.verify)
        sampler, params = samplers[n]
        pool = sample_pool(sampler, params, policy.tokenizer, [records[i] for i in problems], policy.reward,
                           seed=round_seed(seed, rounds[0]))
        rounds[0] += 1
        pool["scores"] = conventions.scores(pool["yes_logp"], pool["no_logp"])
        for row, i in enumerate(problems):
            for key in keys:
                got[i][key] += list(pool[key][row])
            classes.pop(i, None)

    def view(i):
        if i not in classes:
            classes[i] = testtime.answer_classes(got[i]["answers"], grouping=policy.reward.grouping(
                conventions.grouping))
        return classes[i], np.asarray(got[i]["scores"])

    used = allocate(rule, len(records), draw, view, seed)
    votes = [voted(*view(i), np.asarray(g["correct"], float), g["answers"]) for i, g in enumerate(got)]
    return Outcome(correct=np.array([grade for grade, _ in votes]), samples=used,
                   tokens=np.array([sum(g["lengths"]) for g in got]), verifier_passes=used,
                   answers=tuple(answer for _, answer in votes))
