"""What a test-time strategy returns: per problem the vote's answer and grade, and what it cost."""

from __future__ import annotations

import dataclasses

import numpy as np


# Summed scores this close (relative) are a tie: the same scores added in another order (a subset of a pool, or the
# pool itself) round differently, and a tie must not be decided by that rounding.
TIE_RTOL = 1e-9


def tied_with_max(totals: np.ndarray, axis: int = -1) -> np.ndarray:
    """Which of ``totals`` tie with the largest along ``axis`` (within ``TIE_RTOL`` of it)."""
    best = totals.max(axis=axis, keepdims=True)
    return totals >= best - TIE_RTOL * np.abs(best)


def weighted_leader(classes: np.ndarray, scores: np.ndarray) -> int:
    """The class with the largest summed score (a NaN score adding 0) among those voted for; -1 when no answer
    parses.

    Ties go to the tied class voted for first, whatever its id (the lowest when ids are numbered by first
    occurrence and every row votes). So when some rows do not vote (-1 here, e.g. still unfinished), the pick does
    not depend on how their answers were numbered: a live run and a replay that numbers classes over other texts
    pick the same class."""
    valid = classes >= 0
    if not valid.any():
        return -1
    votes = classes[valid]
    totals = np.bincount(votes, weights=np.nan_to_num(np.asarray(scores, np.float64)[valid], nan=0.0))
    return int(votes[np.argmax(tied_with_max(totals[votes]))])


def leader_grade(classes: np.ndarray, scores: np.ndarray, correct: np.ndarray) -> float:
    """The weighted vote's grade: the mean grade of the winning class's samples (as the curves score a class), 0
    when nothing parses."""
    leader = weighted_leader(classes, scores)
    return float(np.mean(correct[classes == leader])) if leader >= 0 else 0.0


def voted(classes: np.ndarray, scores: np.ndarray, correct: np.ndarray, answers) -> tuple[float, str | None]:
    """The weighted vote's grade (``leader_grade``) and answer (the first of its class; None when nothing parses)."""
    leader = weighted_leader(classes, scores)
    answer = None if leader < 0 else answers[int(np.argmax(classes == leader))]
    return leader_grade(classes, scores, correct), answer


@dataclasses.dataclass(frozen=True)
class Outcome:
    correct: np.ndarray  # [P] the vote's grade per problem
    samples: np.ndarray  # [P] samples (particles) drawn per problem
    tokens: np.ndarray  # [P] tokens generated per problem, discarded ones included
    # [P] verifier scores per problem: each reads the verify prompt and a sample's last token (``report`` prices them).
    # The scores the strategy needs: a row scored once it finishes (length) or after each advance it made
    # (particle). The live runs score every row of their fixed-shape batch each round, the idle ones too.
    verifier_passes: np.ndarray
    answers: tuple | None = None  # [P] the voted answers (live runs; None where nothing parsed)

    def summary(self) -> dict:
        return {"accuracy": float(np.mean(self.correct)), "tokens_per_problem": float(np.mean(self.tokens)),
                "samples_per_problem": float(np.mean(self.samples)), "max_samples": int(np.max(self.samples)),
                "verifier_passes_per_problem": float(np.mean(self.verifier_passes))}
