"""Test-time scaling with the model's own verifier: voting strategies and accuracy-vs-N curves.

Answers of one problem are grouped into equivalence classes by mathematical equivalence (not string equality), and
every strategy works on integer class ids: `-1` marks an unparseable answer, which never wins. Everywhere a
per-problem list of answers is accepted, a precomputed integer class-id numpy array is accepted too, so curves over
many subsets never regrade (a list of numbers is answers: ``[-3, -3, 5]`` votes for -3). `answer_classes` numbers
classes by first occurrence, and in the single-problem votes **ties go to the tied answer that appears earliest in
the list** (whatever ids it was given). A NaN verifier score (Yes and No both at -inf, or NaN logits) weighs 0 in
every vote, pick and curve (``as_weights``). Curves instead average over tie-breaks
(see scaling_curve): a fixed pool order must not bias a mean over random subsets.

The choices that papers make differently are named options of :class:`Conventions` (defaults first; the RL^V
authors' evaluation uses the second of each), and ``eval.json`` records which were used.

Numpy only (gin binds Conventions); the grader (`rlvjax.rewards.math`) is only touched when grouping strings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from rlvjax.fieldtypes import check_field_types
from rlvjax.strategies.outcome import tied_with_max, weighted_leader

STRATEGIES = ("majority", "best_of_n", "weighted", "pass_at_k")
CURVE_ATOL = 1e-12  # accuracies (means over problems) this close are equal: the same sum in another order


@dataclasses.dataclass(frozen=True)
class Conventions:
    """How a sampled pool becomes scores, answer classes and best-of-N picks."""

    # "normalized": p(Yes) / (p(Yes) + p(No)), the verifier's decision between its two answers; "raw": p(Yes) over
    # the whole vocabulary, as the RL^V authors' evaluation reads it.
    score: str = "normalized"
    # "math": answers are one class when math-verify finds them equivalent ("1/2" and "0.5"); "string": identical
    # answer strings (surrounding whitespace aside) only, as the authors group them.
    grouping: str = "math"
    # Best-of-N with a sample whose answer cannot be parsed: "last": it ranks below every parseable one (chosen only
    # when nothing else is); "rank": it ranks by its score like any other and, when picked, is wrong.
    unparseable: str = "last"
    # Best-of-N with equal top scores: "random": the expected accuracy over uniformly random tie-breaks; "first": the
    # earliest sample of the pool (an argmax over the pool order). Votes always count a tie of classes as a
    # uniformly random pick among them.
    ties: str = "random"

    def __post_init__(self):
        check_field_types(self)
        for name, allowed in (("score", ("normalized", "raw")), ("grouping", ("math", "string")),
                              ("unparseable", ("last", "rank")), ("ties", ("random", "first"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Conventions.{name}={getattr(self, name)!r}: use one of {allowed}")

    def scores(self, yes_logp, no_logp) -> np.ndarray:
        """Verifier scores in [0, 1] from the log-probabilities of the Yes and No tokens."""
        yes_logp, no_logp = np.asarray(yes_logp, np.float64), np.asarray(no_logp, np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # -inf - -inf: NaN, which as_weights makes 0
            return as_weights(np.exp(yes_logp) if self.score == "raw" else 1.0 / (1.0 + np.exp(no_logp - yes_logp)))


def as_weights(scores) -> np.ndarray:
    """Verifier scores (probabilities) as float64 vote weights, a NaN score as 0 (as ``strategies.particle.weights``
    does), so that the votes, best-of-N picks and curves all treat a sample the verifier could not score alike.
    Anything outside [0, 1] is refused: log-probabilities summed into a vote pick the wrong class."""
    scores = np.asarray(scores, np.float64)
    if np.any((scores < 0) | (scores > 1 + 1e-6)):
        raise ValueError(f"verifier scores must be probabilities in [0, 1], got values in [{np.nanmin(scores):.4g}, "
                         f"{np.nanmax(scores):.4g}]; from Yes/No log-probabilities use Conventions().scores(yes_logp, "
                         "no_logp)")
    return np.where(np.isnan(scores), 0.0, scores)


# ---------------------------------------------------------------------------------------------------------------
# Grouping answers
# ---------------------------------------------------------------------------------------------------------------


MEMBER_CHECKS = 8  # the most frequent keys of a class, besides its first, a new key must also be equivalent to


def answer_classes(answers: Sequence[str | None], equivalent: Callable[[str, str], bool] | None = None,
                   grouping: str = "math") -> np.ndarray:
    """int[len(answers)] class ids numbered by first occurrence (0, 1, ...), -1 for None (unparseable).

    grouping "math": equal normalised strings share a class for free; each further distinct key (the most frequent
    first, so that the classes do not depend on the answers' order) joins the first class whose first key and whose
    ``MEMBER_CHECKS`` most frequent other keys it is `equivalent` to (called as ``equivalent(earlier, later)``), else
    opens a class: keys x (classes + ``MEMBER_CHECKS``) checks, more only where a key equals several classes'
    heads. The default asks the math-verify grader, one batch per key against the class heads, and one per class it
    may join against that class's members (whole numbers are compared without it); an answer that keeps timing out
    (math-verify hangs on it) forms a class of its own and is compared no more.
    grouping "string": identical strings (surrounding whitespace aside) share a class, nothing else does.
    """
    from rlvjax.rewards.answers import normalize_answer
    from rlvjax.rewards.math import default_grader

    # What the grader calls no answer (none stated, empty, or too long to be one) never forms a class, so it never
    # wins.
    answers = [None if no_answer(a) else a for a in answers]
    if grouping == "string":
        seen: dict[str, int] = {}
        return np.array([-1 if a is None else seen.setdefault(a.strip(), len(seen)) for a in answers], dtype=np.int64)

    keys: dict[str, int] = {}
    reps: list[str] = []
    key_ids = []
    for a in answers:
        if a is None:
            key_ids.append(-1)
            continue
        k = normalize_answer(a)
        if k not in keys:
            keys[k] = len(reps)
            reps.append(a)
        key_ids.append(keys[k])
    strikes = np.zeros(len(reps), np.int64)  # failed checks (timeouts) each key is blamed for
    proven = np.zeros(len(reps), bool)  # a key that finished a check: it does not hang math-verify by itself

    def check(earlier: list[int], key: int) -> list[bool]:
        if not earlier:
            return []
        if equivalent is not None:
            return [equivalent(reps[e], reps[key]) for e in earlier]
        same, failed = default_grader().equivalent_or_failed([reps[e] for e in earlier], [reps[key]] * len(earlier))
        proven[[e for e, f in zip(earlier, failed) if not f]] = True
        proven[key] |= not failed.all()
        # Whom a timeout blames: the later key alone when it failed against two or more classes (it hangs
        # math-verify); else whichever of the two has never finished a check. A key with two strikes is compared no
        # more (each timeout costs the whole limit); one that has finished a check is never blamed.
        if failed.sum() >= 2:
            strikes[key] += int(failed.sum())
        else:
            for e in (e for e, f in zip(earlier, failed) if f):
                strikes[[k for k in (e, key) if not proven[k]]] += 1
        return list(same & ~failed)

    # The distinct keys are grouped most frequent first (then by key), so that the classes do not depend on the
    # samples' order: equivalence by the grader is not transitive ("50\%" is both 50 and 0.5), and grouped in order
    # of appearance, [50, 50\%, 0.5] and [0.5, 50\%, 50] split differently. Each key joins the first class whose
    # first key it is equivalent to (one batched check per key against the classes so far: O(keys x classes)
    # checks, not all key pairs), and the class's most frequent other keys too: a class joined through its first
    # key alone held 50 and 0.5, so its vote was graded right for either gold. All its other keys were all pairs
    # again where one value is written many ways (50 forms of 3/4: 1,225 checks; 120 keys in 2 classes: 16 s).
    counts = np.bincount([k for k in key_ids if k >= 0], minlength=len(reps))
    members: list[list[int]] = []  # each class's distinct keys, its first one leading
    class_of_key = np.zeros(len(reps), np.int64)
    key_text = list(keys)
    for k in sorted(range(len(reps)), key=lambda k: (-counts[k], key_text[k])):
        open_ = [c for c, m in enumerate(members) if strikes[m].max() < 2]
        candidates = [c for c, same in zip(open_, check([members[c][0] for c in open_], k)) if same]
        match = (next((c for c in candidates if all(check(members[c][1:1 + MEMBER_CHECKS], k))), None)
                 if strikes[k] < 2 else None)
        if match is None:
            match = len(members)
            members.append([])
        members[match].append(k)
        class_of_key[k] = match
    grouped = np.array([class_of_key[k] if k >= 0 else -1 for k in key_ids], dtype=np.int64)
    first = {}  # numbered by first occurrence
    for c in grouped[grouped >= 0]:
        first.setdefault(int(c), len(first))
    return np.array([first[int(c)] if c >= 0 else -1 for c in grouped], dtype=np.int64)


def no_answer(answer) -> bool:
    """What the grader takes for no answer: None, or a stated answer it reads as none (empty, ``$$``, too long)."""
    from rlvjax.rewards.answers import as_answer

    return answer is None or (isinstance(answer, str) and as_answer(answer, stated=True) is None)


def pool_classes(pool: dict, grouping: str = "math") -> np.ndarray:
    """``[P, K]`` class ids of a graded pool's ``[P, K]`` answers, grouped problem by problem; ``pool["classes"]``
    when the pool already holds them (``rlvjax.evaluate.evaluate_policy`` groups each pool once, under the
    conventions it reports with)."""
    if "classes" in pool:
        return pool["classes"]
    return np.stack([answer_classes(list(row), grouping=grouping) for row in pool["answers"]])


def _as_classes(answers, equivalent, grouping: str = "math") -> np.ndarray:
    """An integer numpy array is class ids, used as given; anything else is answers, grouped with answer_classes
    (numbers as their text)."""
    if _class_ids(answers):
        return answers.astype(np.int64)
    return answer_classes([a if a is None or isinstance(a, str) else str(a) for a in answers], equivalent, grouping)


def _class_ids(answers) -> bool:
    """Whether ``answers`` are class ids (an integer numpy array) rather than answers; a float array is refused (its
    "-1.0" was read as an answer of its own, not as unparseable)."""
    if not isinstance(answers, np.ndarray) or not np.issubdtype(answers.dtype, np.number):
        return False
    if not np.issubdtype(answers.dtype, np.integer):
        raise ValueError(f"answers of dtype {answers.dtype}: class ids must be an integer array (pass "
                         ".astype(int)), answers strings or None")
    return True


def _representative(answers, classes: np.ndarray, winner: int):
    """The answer reported for a winning class: its first occurrence (or the class id when ids were given)."""
    if winner < 0:
        return None
    return answers[int(np.argmax(classes == winner))]


# ---------------------------------------------------------------------------------------------------------------
# Strategies over one problem's answers
# ---------------------------------------------------------------------------------------------------------------


def majority_vote(answers, equivalent=None):
    """The most frequent answer (by equivalence class); ties -> earliest first occurrence; None if none parse."""
    classes = _as_classes(answers, equivalent)
    return _representative(answers, classes, weighted_leader(classes, np.ones(len(classes))))


def weighted_vote(answers, scores, equivalent=None):
    """The answer whose class has the largest sum of verifier scores; ties -> earliest first occurrence."""
    _check_lengths(answers, scores)
    classes = _as_classes(answers, equivalent)
    return _representative(answers, classes, weighted_leader(classes, as_weights(scores)))


def _check_lengths(answers, scores) -> None:
    """One score per answer, said in one line (one score was spread over two answers, and a best-of-N picked)."""
    if np.shape(scores) != np.shape(answers):
        raise ValueError(f"scores has shape {np.shape(scores)} for answers of shape {np.shape(answers)}; pass one "
                         "score per answer")


def best_of_n(answers, scores, unparseable: str = "last"):
    """The answer with the highest verifier score; ties -> earliest index. With ``unparseable="last"`` unparseable
    answers are skipped unless nothing else is there; with ``"rank"`` they compete on their score (and a picked
    one is returned as None). Only parseability matters here, so no grouping (and no grading) is done."""
    if unparseable not in ("last", "rank"):  # "rnak" was taken as "last"
        raise ValueError(f"unparseable={unparseable!r}: use 'last' or 'rank'")
    _check_lengths(answers, scores)
    # What answer_classes (and so the votes and curves) calls no answer: no_answer, or a class id of -1.
    ids = _class_ids(answers)
    parseable = np.array([not (a < 0 if ids else no_answer(a)) for a in answers])
    if not parseable.any():
        return None
    scores = as_weights(scores)
    best = int(np.argmax(scores if unparseable == "rank" else np.where(parseable, scores, -np.inf)))
    return answers[best] if parseable[best] else None


# ---------------------------------------------------------------------------------------------------------------
# Accuracy-vs-N curves over a pool of K samples per problem
# ---------------------------------------------------------------------------------------------------------------


def pass_at_k(num_samples, num_correct, k) -> np.ndarray:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), element-wise, exact integer binomials."""
    n, c, kk = np.broadcast_arrays(np.asarray(num_samples), np.asarray(num_correct), np.asarray(k))
    if any(not np.array_equal(x, np.round(x)) for x in (n, c, kk) if x.dtype.kind in "fc"):
        raise ValueError("pass_at_k counts samples: num_samples, num_correct and k must be whole numbers")
    n, c, kk = (x.astype(np.int64) if x.dtype.kind in "fc" else x for x in (n, c, kk))  # correct.sum() of floats
    if np.any(kk > n) or np.any(c > n) or np.any(c < 0) or np.any(kk < 1):
        raise ValueError("pass_at_k needs 1 <= k <= num_samples and 0 <= num_correct <= num_samples")
    one = np.vectorize(lambda n_, c_, k_: 1.0 - math.comb(n_ - c_, k_) / math.comb(n_, k_), otypes=[np.float64])
    return one(n.astype(object), c.astype(object), kk.astype(object))


def best_of_n_expected(scores: np.ndarray, correct: np.ndarray, parseable: np.ndarray, n: int, *,
                       unparseable: str = "last", ties: str = "random") -> float:
    """Exact mean BoN accuracy over all size-n subsets of one pool: sort by score descending, then
    sum_i c_(i) C(K-i-1, n-1) / C(K, n). ``ties="random"``: each tied block's correctness is replaced by its mean
    (exactly the expectation over random tie orders); ``"first"``: ties keep the pool order. Unparseable samples
    count as incorrect; with ``unparseable="last"`` they rank below all others, with ``"rank"`` by their score. A
    NaN score is 0 (``as_weights``; it used to sort below the unparseable ones)."""
    k = len(scores)
    if unparseable not in ("last", "rank") or ties not in ("random", "first"):  # "rnak" was taken as "rank"
        raise ValueError(f"unparseable={unparseable!r}, ties={ties!r}: use 'last' or 'rank', and 'random' or "
                         "'first'")
    if not 1 <= n <= k or np.shape(correct) != (k,) or np.shape(parseable) != (k,):
        raise ValueError(f"best_of_n_expected needs 1 <= n <= K (n={n}, K={k} scores) and one grade and one "
                         f"parseable flag per score (got {np.shape(correct)}, {np.shape(parseable)})")
    s = as_weights(scores)
    if unparseable == "last":
        s = np.where(parseable, s, -np.inf)
    c = np.where(parseable, np.asarray(correct, dtype=np.float64), 0.0)
    order = np.argsort(-s, kind="stable")
    s, c = s[order], c[order]
    if ties == "random":
        _, block, counts = np.unique(s, return_inverse=True, return_counts=True)
        c = np.bincount(block, weights=c)[block] / counts[block]
    weights = np.array([math.comb(k - i - 1, n - 1) for i in range(k)], dtype=object) / math.comb(k, n)
    return float(np.dot(c, weights.astype(np.float64)))


def random_subsets(k: int, num_subsets: int, rng: np.random.Generator) -> np.ndarray:
    """int[num_subsets, k] random permutations of the pool; the first n columns of a row are a uniformly random
    size-n subset (without replacement), so one draw serves every n (nested subsets)."""
    return np.argsort(rng.random((num_subsets, k)), axis=1)


def _vote_rows_accuracy(classes: np.ndarray, weights: np.ndarray, class_correct: np.ndarray) -> np.ndarray:
    """Per-row expected accuracy of a vote over int[S, n] classes, ties broken uniformly at random: the mean grade
    of the tied top classes. Integer bincount work over a flattened [S, C] table; 0 for rows with no answer."""
    num_classes = len(class_correct)
    rows = np.arange(classes.shape[0])[:, None]
    valid = classes >= 0
    flat = (rows * num_classes + np.where(valid, classes, 0))[valid]
    size = classes.shape[0] * num_classes
    totals = np.bincount(flat, weights=weights[valid], minlength=size).reshape(-1, num_classes)
    present = np.bincount(flat, minlength=size).reshape(-1, num_classes) > 0
    totals = np.where(present, totals, -np.inf)
    top = present & tied_with_max(totals, axis=1)
    return (top * class_correct).sum(axis=1) / np.maximum(top.sum(axis=1), 1)


def _vote_curve(classes, weights, correct, ns, num_subsets, rng) -> np.ndarray:
    """Mean accuracy of a vote over random size-n subsets, for each n; over all K one-sample subsets at n = 1 (exact:
    the Monte-Carlo mean put majority@1 above pass@1). A class is as correct as the mean of its members' grades (they
    agree when grading is consistent)."""
    num = max(int(classes.max()) + 1, 1)
    valid = classes >= 0
    members = np.bincount(classes[valid], minlength=num)
    class_correct = np.bincount(classes[valid], weights=correct[valid], minlength=num) / np.maximum(members, 1)
    perms = random_subsets(len(classes), num_subsets, rng)
    subsets = {n: np.arange(len(classes))[:, None] if n == 1 else perms[:, :n] for n in ns}
    return np.array([_vote_rows_accuracy(classes[subsets[n]], weights[subsets[n]], class_correct).mean() for n in ns])


def scaling_curve(answers, scores, correct, ns, strategy: str, num_subsets: int = 1000, seed: int = 0, *,
                  conventions: Conventions = Conventions(), per_problem: bool = False) -> np.ndarray:
    """Accuracy at each N in ns: mean over P problems of the mean over size-N subsets of the K-sample pool
    (``per_problem``: the [P, len(ns)] accuracies before that mean, e.g. for ``plateau``).

    answers: [P, K] answers (str or None) or, better, precomputed int class ids (-1 = unparseable; see
      answer_classes) so nothing is regraded. scores: [P, K] verifier scores (unused by majority / pass_at_k).
      correct: [P, K] bool grades.
    strategy: "majority" / "weighted" average over `num_subsets` random subsets (rng = default_rng(seed), one
      random_subsets draw per problem in order, shared across N; every one-sample subset at N = 1); "best_of_n"
      uses the exact closed form over all subsets (best_of_n_expected, with ``conventions.unparseable`` /
      ``.ties``); "pass_at_k" the unbiased estimator. Both exact forms ignore num_subsets/seed. String answers are
      grouped by ``conventions.grouping``.
    Like BoN, a vote tie inside a subset counts the expected grade under a uniformly random tie-break (the mean
    over the tied classes; for majority this equals taking the tied answer seen first in the random subset order).
    A winning class scores the mean grade of its members; a subset with no parseable answer scores 0. Grouping string
    answers costs one batched grader call per distinct answer against the classes so far (``answer_classes``):
    precompute ids to do it once.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim != 2 or strategy != "pass_at_k" and np.shape(answers) != correct.shape or \
            strategy in ("weighted", "best_of_n") and np.shape(scores) != correct.shape:
        raise ValueError(f"scaling_curve needs answers, correct (and scores, for {strategy}) of one shape [P, K]; got "
                         f"{np.shape(answers)}, {correct.shape}, {np.shape(scores)}")
    num_problems, k = correct.shape
    ns = [int(n) for n in ns]
    if any(n < 1 or n > k for n in ns):
        raise ValueError(f"every N must be in [1, {k}], got {ns}")
    if strategy == "pass_at_k":
        num_correct = correct.sum(axis=1).astype(np.int64)
        curves = np.stack([pass_at_k(k, num_correct, n) for n in ns], axis=1)
        return curves if per_problem else curves.mean(axis=0)
    classes = (np.stack([_as_classes(row, None, conventions.grouping) for row in answers]) if len(answers)
               else np.zeros((0, k), int))
    scores = np.ones_like(correct) if scores is None or strategy == "majority" else as_weights(scores)
    if strategy == "best_of_n":
        curves = [[best_of_n_expected(scores[p], correct[p], classes[p] >= 0, n,
                                      unparseable=conventions.unparseable, ties=conventions.ties) for n in ns]
                  for p in range(num_problems)]
    else:
        rng = np.random.default_rng(seed)
        curves = [_vote_curve(classes[p], scores[p], correct[p], ns, num_subsets, rng) for p in range(num_problems)]
    curves = np.array(curves, dtype=np.float64).reshape(num_problems, len(ns))
    return curves if per_problem else curves.mean(axis=0)


@dataclasses.dataclass(frozen=True)
class Efficiency:
    """How many samples strategy A needs to reach strategy B's best accuracy (the paper's "N x fewer samples").

    n_target: where B's best accuracy is reached (the first maximum of its curve, or ``plateau``'s N when the
    per-problem curve is known); target: B's accuracy there; n_needed: where A first reaches it, interpolated
    linearly in log2 N between the bracketing ns, or None when A never does within the ns; lower_bound: A is there
    already at ns[0] (no extrapolation below it), so the true ratio is at least ``ratio``.
    """

    target: float
    n_target: int
    n_needed: float | None
    lower_bound: bool

    @property
    def ratio(self) -> float | None:
        """n_target / n_needed; None when never matched."""
        return None if self.n_needed is None else self.n_target / self.n_needed

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ratio": self.ratio}

    def describe(self) -> str:
        if self.ratio is None:
            return f"never matched within N <= the pool (target {self.target:.3f} at N = {self.n_target})"
        return (f"{fewer_or_more(self.ratio, '>=' if self.lower_bound else '')} samples (N = {self.n_needed:.3g} vs "
                f"{self.n_target} for {self.target:.3f})")


def fewer_or_more(ratio: float, bound: str = "", digits: int = 2) -> str:
    """A cost ratio (the reference's cost / this one's) in words: "2.00x fewer", or below 1 "2.00x more" (it
    read "0.50x fewer"). ``bound``, "<=" or ">=", bounds ``ratio`` and turns round with it."""
    if ratio >= 1:
        return f"{bound} {ratio:.{digits}f}x fewer".lstrip()
    flipped = {"<=": ">=", ">=": "<="}.get(bound, bound)
    return f"{flipped} {1 / ratio:.{digits}f}x more".lstrip()


def plateau(ns, per_problem) -> int:
    """The smallest N of ``ns`` whose accuracy is less than one standard error below the best N's (the
    one-standard-error rule), from ``per_problem [P, len(ns)]`` accuracies (``scaling_curve(..., per_problem=True)``).
    The standard error is of the paired per-problem difference to the best N, so a plateau is read as the noise of
    its problems allows, not as whichever of its near-equal points a Monte-Carlo draw put highest. Strictly less: a
    rise that one problem carries alone (its mean difference equals its standard error exactly) counts as real."""
    curves = np.asarray(per_problem, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[1] != len(ns) or curves.shape[0] == 0:
        raise ValueError(f"per_problem must be [P >= 1, {len(ns)}] accuracies, got shape {curves.shape}")
    best = int(np.argmax(curves.mean(axis=0)))

    def close(j):
        gap = curves[:, best] - curves[:, j]
        return gap.mean() < (gap.std(ddof=1) / math.sqrt(len(gap)) if len(gap) > 1 else 0.0) - CURVE_ATOL

    return int(ns[next((j for j in range(best) if close(j)), best)])


def compute_efficiency(ns, curve_a, curve_b, *, n_target: int | None = None) -> Efficiency:
    """The :class:`Efficiency` of curve A against curve B (accuracies at the strictly increasing ``ns``), B's target
    read at ``n_target`` (one of the ns, e.g. ``plateau``'s; None: the first maximum of B). Accuracies within
    ``CURVE_ATOL`` count as equal (means over problems, summed in different orders)."""
    ns = np.asarray(ns, dtype=np.float64)
    a, b = np.asarray(curve_a, dtype=np.float64), np.asarray(curve_b, dtype=np.float64)
    if not np.all(np.diff(ns) > 0):
        raise ValueError("ns must be strictly increasing")
    if n_target is None:
        at = int(np.argmax(b))
    elif n_target in ns:
        at = int(np.nonzero(ns == n_target)[0][0])
    else:
        raise ValueError(f"n_target={n_target} is not one of the ns {ns.astype(int).tolist()}")
    target, n_target = float(b[at]), int(ns[at])
    reached = np.nonzero(a >= target - CURVE_ATOL)[0]
    if reached.size == 0:
        return Efficiency(target, n_target, None, False)
    j = int(reached[0])
    if j == 0:
        return Efficiency(target, n_target, float(ns[0]), True)
    x0, x1 = np.log2(ns[j - 1]), np.log2(ns[j])
    frac = min(max((target - a[j - 1]) / (a[j] - a[j - 1]), 0.0), 1.0)
    return Efficiency(target, n_target, float(2.0 ** (x0 + frac * (x1 - x0))), False)


def bootstrap_ci(values, *, level: float = 0.95, num_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per problem: problems are resampled with
    replacement). For a paired comparison of two policies on the same problems, pass the per-problem differences."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D array of per-problem values")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (num_resamples, values.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
