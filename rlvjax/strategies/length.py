"""Verifier-chosen length (sequential scaling): a problem's samples are generated under growing token budgets, and the
problem stops being extended once the verifier is confident in its vote.

At each budget of ``LengthRule.budgets`` the samples that have finished vote (weighted by their verifier scores);
samples still truncated do not. The problem stops when the vote's *confidence*, the winning class's summed score over
all ``samples`` of the problem (finished or not), reaches ``threshold``, or at the last budget. Truncated samples of
a problem that goes on are extended from their live caches, not regenerated (the step-wise decoder pauses a row at its
budget and resumes it with the same keys), so a sample under budget ``b`` is the first ``b`` tokens of the sample
under any larger budget: ``replay`` on a pool sampled with the last budget gives what ``run`` gives, exactly, where
the answer grouping is transitive ("string" grouping, and math grouping of most answers). Where math equivalences do
not chain (``50%`` equals ``0.5`` and ``50``, which differ), ``replay`` numbers classes over the samples' final
answers and ``run`` over the answers written so far (a truncated row's partial text included), which can group the
finished ones differently.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rlvjax.fieldtypes import check_field_types
from rlvjax.strategies.outcome import Outcome, leader_grade, voted, weighted_leader


@dataclasses.dataclass(frozen=True)
class LengthRule:
    budgets: tuple[int, ...] = (256, 512, 1024)  # increasing tokens per sample; the last is the cap
    threshold: float = 0.5  # stop extending once the leader's summed score / samples reaches this (0: an answer)
    samples: int = 4  # parallel samples per problem

    def __post_init__(self):
        check_field_types(self)
        budgets = self.budgets
        checks = [(len(budgets) > 0 and min(budgets) >= 1,
                   f"budgets={budgets} must be token budgets >= 1 (a budget of 0 generates nothing)"),
                  (list(budgets) == sorted(set(budgets)), f"budgets={budgets} must increase"),
                  (0 <= self.threshold <= 1, f"threshold={self.threshold} must be in [0, 1]"),
                  (self.samples >= 1, f"samples={self.samples} must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"LengthRule.{message}")


def confidence(classes: np.ndarray, scores: np.ndarray, voting: np.ndarray) -> float:
    """The weighted vote's confidence among the ``voting`` samples: the leader's summed score (a NaN score adding
    0, as in the vote) over all samples."""
    leader = weighted_leader(np.where(voting, classes, -1), scores)
    weights = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0)
    return 0.0 if leader < 0 else float(np.sum(weights[voting & (classes == leader)]) / len(classes))


def settles(rule: LengthRule, classes: np.ndarray, scores: np.ndarray, voting: np.ndarray) -> bool:
    """Whether the vote among the ``voting`` samples stops the problem before its last budget: it has a leader (a
    finished sample states an answer) as confident as ``rule.threshold``. A threshold of 0 stops at the first answer,
    not at the first budget (where nothing had finished, the problem ended with no answer)."""
    return bool(weighted_leader(np.where(voting, classes, -1), scores) >= 0
                and confidence(classes, scores, voting) >= rule.threshold)


def _stop(rule: LengthRule, classes, scores, finished, lengths) -> int:
    """The index of the budget at which a problem stops."""
    for j, budget in enumerate(rule.budgets):
        if settles(rule, classes, scores, finished & (lengths <= budget)):
            return j
    return len(rule.budgets) - 1


def replay(classes, scores, correct, lengths, finished, rule: LengthRule) -> Outcome:
    """The rule on ``[P, K]`` pools sampled with ``max_new_tokens = budgets[-1]`` (class ids, scores, grades,
    completion tokens, whether each ended on a stop id). Each of the ``K // rule.samples`` disjoint groups of
    ``rule.samples`` samples is one run; grades, tokens and verifier passes (one per sample that votes, scored as it
    finishes) are their means (the first group alone is what ``run`` gives with the pool's keys when ``K ==
    rule.samples``)."""
    k = rule.samples
    if classes.shape[1] < k:
        raise ValueError(f"the pool has {classes.shape[1]} samples per problem; LengthRule.samples={k} needs more")
    groups = classes.shape[1] // k
    correct_, tokens, passes = np.zeros(len(classes)), np.zeros(len(classes)), np.zeros(len(classes))
    for i, row in enumerate(zip(classes, scores, correct, lengths, finished)):
        for c, s, g, n, f in zip(*(x[: groups * k].reshape(groups, k) for x in row)):
            budget = rule.budgets[_stop(rule, c, s, f, n)]
            voting = f & (n <= budget)
            correct_[i] += leader_grade(np.where(voting, c, -1), s, g) / groups
            tokens[i] += np.sum(np.minimum(n, budget)) / groups
            passes[i] += np.sum(voting) / groups
    return Outcome(correct=correct_, samples=np.full(len(classes), k), tokens=tokens, verifier_passes=passes)


def run(policy, records: list[dict], rule: LengthRule, *, seed: int = 0) -> Outcome:
    """The rule live on ``policy`` (a ``strategies.policy.Policy`` whose ``max_new_tokens`` is at least the last
    budget): each batch of problems advances budget by budget, the settled problems' rows frozen."""
    if policy.decoder.max_new_tokens < rule.budgets[-1]:
        raise ValueError(f"LengthRule.budgets end at {rule.budgets[-1]} tokens, past the policy's max_new_tokens="
                         f"{policy.decoder.max_new_tokens}; lower the last budget or raise max_new_tokens")
    k, correct, tokens, passes, answers = rule.samples, [], [], [], []
    for chunk, ids, mask, rng in policy.batches(records, seed):
        rows = policy.decoder.start(policy.state, ids, mask, rng, k)
        settled = np.zeros(len(chunk), bool)
        for j, budget in enumerate(rule.budgets):
            limits = np.where(np.repeat(settled, k), np.asarray(rows.n), budget)
            rows = policy.decoder.advance(policy.state, rows, rng, limits)
            read = policy.read(rows, chunk, policy.decoder.score(policy.state, rows))
            classes = policy.classes(read["answers"])
            for i in np.flatnonzero(~settled):
                voting = read["finished"][i]
                last = j == len(rule.budgets) - 1
                if last or settles(rule, classes[i], read["scores"][i], voting):
                    settled[i] = True
        for i in range(len(chunk)):
            grade, answer = voted(np.where(read["finished"][i], classes[i], -1), read["scores"][i],
                                  read["correct"][i], read["answers"][i])
            correct.append(grade)
            answers.append(answer)
            tokens.append(int(read["lengths"][i].sum()))
            passes.append(int(read["finished"][i].sum()))  # the samples that vote, each scored once as it finished
    return Outcome(correct=np.asarray(correct), samples=np.full(len(records), k), tokens=np.asarray(tokens),
                   verifier_passes=np.asarray(passes), answers=tuple(answers))
