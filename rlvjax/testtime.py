"""Test-time scaling with the model's own verifier: voting strategies and accuracy-vs-N curves.

Answers of one problem are grouped into equivalence classes by mathematical equivalence (not string equality), and
every strategy works on integer class ids: `-1` marks an unparseable answer, which never wins. Everywhere a
per-problem list of answers is accepted, a precomputed integer class-id array is accepted too, so curves over many
subsets never regrade. `answer_classes` numbers classes by first occurrence, so in the single-problem votes **ties
go to the lowest class id = the answer that appears earliest in the list**. Curves instead average over tie-breaks
(see scaling_curve): a fixed pool order must not bias a mean over random subsets.

Pure numpy; the grader (`rlvjax.rewards.math`) is only touched when grouping strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

STRATEGIES = ("majority", "best_of_n", "weighted", "pass_at_k")


# ---------------------------------------------------------------------------------------------------------------
# Grouping answers
# ---------------------------------------------------------------------------------------------------------------


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def answer_classes(answers: Sequence[str | None], equivalent: Callable[[str, str], bool] | None = None) -> np.ndarray:
    """int[len(answers)] class ids numbered by first occurrence (0, 1, ...), -1 for None (unparseable).

    Equal normalised strings share a class for free; distinct keys are then merged (transitively) when
    `equivalent(a, b)` holds. The default asks the math-verify grader for all key pairs in one batch.
    """
    from rlvjax.rewards.math import equivalent_batch, normalize_answer

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
    pairs = [(i, j) for i in range(len(reps)) for j in range(i + 1, len(reps))]
    if equivalent is None:
        same = equivalent_batch([reps[i] for i, _ in pairs], [reps[j] for _, j in pairs]) if pairs else []
    else:
        same = [equivalent(reps[i], reps[j]) for i, j in pairs]
    parent = list(range(len(reps)))
    for (i, j), s in zip(pairs, same):
        if s:
            ri, rj = _find(parent, i), _find(parent, j)
            parent[max(ri, rj)] = min(ri, rj)  # root = earliest key, so roots stay in first-occurrence order
    roots = np.array([_find(parent, k) if k >= 0 else -1 for k in key_ids], dtype=np.int64)
    return _renumber(roots)


def _renumber(ids: np.ndarray) -> np.ndarray:
    """Relabel non-negative ids 0, 1, ... in order of first occurrence; -1 stays -1."""
    out = np.full(ids.shape, -1, dtype=np.int64)
    seen: dict[int, int] = {}
    for pos, c in enumerate(ids.tolist()):
        if c >= 0:
            out[pos] = seen.setdefault(c, len(seen))
    return out


def _as_classes(answers, equivalent) -> np.ndarray:
    """Integer class ids are used as given; anything else is grouped with answer_classes."""
    if isinstance(answers, np.ndarray) and np.issubdtype(answers.dtype, np.integer):
        return answers.astype(np.int64)
    if len(answers) and all(isinstance(a, (int, np.integer)) for a in answers):
        return np.asarray(answers, dtype=np.int64)
    return answer_classes(list(answers), equivalent)


def _representative(answers, classes: np.ndarray, winner: int):
    """The answer reported for a winning class: its first occurrence (or the class id when ids were given)."""
    if winner < 0:
        return None
    return answers[int(np.argmax(classes == winner))]


# ---------------------------------------------------------------------------------------------------------------
# Strategies over one problem's answers
# ---------------------------------------------------------------------------------------------------------------


def _vote(classes: np.ndarray, weights: np.ndarray) -> int:
    """Class id with the largest total weight among present classes (lowest id on ties); -1 if none."""
    valid = classes >= 0
    if not valid.any():
        return -1
    num = int(classes.max()) + 1
    totals = np.bincount(classes[valid], weights=weights[valid], minlength=num)
    present = np.bincount(classes[valid], minlength=num) > 0
    return int(np.argmax(np.where(present, totals, -np.inf)))


def majority_vote(answers, equivalent=None):
    """The most frequent answer (by equivalence class); ties -> earliest first occurrence; None if none parse."""
    classes = _as_classes(answers, equivalent)
    return _representative(answers, classes, _vote(classes, np.ones(len(classes))))


def weighted_vote(answers, scores, equivalent=None):
    """The answer whose class has the largest sum of verifier scores; ties -> earliest first occurrence."""
    classes = _as_classes(answers, equivalent)
    return _representative(answers, classes, _vote(classes, np.asarray(scores, dtype=np.float64)))


def best_of_n(answers, scores):
    """The answer with the highest verifier score among parseable answers; ties -> earliest index.

    Only parseability matters here, so no grouping (and no grading) is done."""
    parseable = np.array([a is not None and not (isinstance(a, (int, np.integer)) and a < 0) for a in answers])
    if not parseable.any():
        return None
    masked = np.where(parseable, np.asarray(scores, dtype=np.float64), -np.inf)
    return answers[int(np.argmax(masked))]


# ---------------------------------------------------------------------------------------------------------------
# Accuracy-vs-N curves over a pool of K samples per problem
# ---------------------------------------------------------------------------------------------------------------


def pass_at_k(num_samples, num_correct, k) -> np.ndarray:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), element-wise, exact integer binomials."""
    n, c, kk = np.broadcast_arrays(np.asarray(num_samples), np.asarray(num_correct), np.asarray(k))
    if np.any(kk > n) or np.any(c > n) or np.any(c < 0) or np.any(kk < 1):
        raise ValueError("pass_at_k needs 1 <= k <= num_samples and 0 <= num_correct <= num_samples")
    one = np.vectorize(lambda n_, c_, k_: 1.0 - math.comb(n_ - c_, k_) / math.comb(n_, k_), otypes=[np.float64])
    return one(n.astype(object), c.astype(object), kk.astype(object))


def best_of_n_expected(scores: np.ndarray, correct: np.ndarray, parseable: np.ndarray, n: int) -> float:
    """Exact mean BoN accuracy over all size-n subsets of one pool: sort by score descending, then
    sum_i c_(i) C(K-i-1, n-1) / C(K, n). Score ties are broken uniformly at random, i.e. each tied block's
    correctness is replaced by its mean (exactly the expectation over random tie orders). Unparseable samples rank
    last and count as incorrect, so they are chosen only when a subset has nothing else (answer None)."""
    k = len(scores)
    s = np.where(parseable, np.asarray(scores, dtype=np.float64), -np.inf)
    c = np.where(parseable, np.asarray(correct, dtype=np.float64), 0.0)
    order = np.argsort(-s, kind="stable")
    s, c = s[order], c[order]
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
    top = present & (totals == totals.max(axis=1, keepdims=True))
    return (top * class_correct).sum(axis=1) / np.maximum(top.sum(axis=1), 1)


def _vote_curve(classes, weights, correct, ns, num_subsets, rng) -> np.ndarray:
    """Mean accuracy of a vote over random size-n subsets, for each n. A class is as correct as the mean of its
    members' grades (they agree when grading is consistent)."""
    num = max(int(classes.max()) + 1, 1)
    valid = classes >= 0
    members = np.bincount(classes[valid], minlength=num)
    class_correct = np.bincount(classes[valid], weights=correct[valid], minlength=num) / np.maximum(members, 1)
    perms = random_subsets(len(classes), num_subsets, rng)
    return np.array([_vote_rows_accuracy(classes[perms[:, :n]], weights[perms[:, :n]], class_correct).mean()
                     for n in ns])


def scaling_curve(answers, scores, correct, ns, strategy: str, num_subsets: int = 1000, seed: int = 0) -> np.ndarray:
    """Accuracy at each N in ns: mean over P problems of the mean over size-N subsets of the K-sample pool.

    answers: [P, K] answers (str or None) or, better, precomputed int class ids (-1 = unparseable; see
      answer_classes) so nothing is regraded. scores: [P, K] verifier scores (unused by majority / pass_at_k).
      correct: [P, K] bool grades.
    strategy: "majority" / "weighted" average over `num_subsets` random subsets (rng = default_rng(seed), one
      random_subsets draw per problem in order, shared across N); "best_of_n" uses the exact closed form over all
      subsets (best_of_n_expected); "pass_at_k" the unbiased estimator. Both exact forms ignore num_subsets/seed.
    Like BoN, a vote tie inside a subset counts the expected grade under a uniformly random tie-break (the mean
    over the tied classes; for majority this equals taking the tied answer seen first in the random subset order).
    A winning class scores the mean grade of its members; a subset with no parseable answer scores 0. Grouping string answers
    costs one batched grader call per problem over all pairs of distinct answers: precompute ids to do it once.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    correct = np.asarray(correct, dtype=np.float64)
    num_problems, k = correct.shape
    ns = [int(n) for n in ns]
    if any(n < 1 or n > k for n in ns):
        raise ValueError(f"every N must be in [1, {k}], got {ns}")
    if strategy == "pass_at_k":
        num_correct = correct.sum(axis=1).astype(np.int64)
        return np.array([pass_at_k(k, num_correct, n).mean() for n in ns])
    classes = np.stack([_as_classes(row, None) for row in answers]) if len(answers) else np.zeros((0, k), int)
    scores = np.ones_like(correct) if scores is None else np.asarray(scores, dtype=np.float64)
    if strategy == "best_of_n":
        per_problem = [[best_of_n_expected(scores[p], correct[p], classes[p] >= 0, n) for n in ns]
                       for p in range(num_problems)]
        return np.mean(np.array(per_problem), axis=0)
    rng = np.random.default_rng(seed)
    weights = np.ones_like(scores) if strategy == "majority" else scores
    per_problem = [_vote_curve(classes[p], weights[p], correct[p], ns, num_subsets, rng) for p in range(num_problems)]
    return np.mean(np.array(per_problem), axis=0)


def compute_efficiency(ns, curve_a, curve_b) -> float:
    """How many times fewer samples strategy A needs to reach B's best accuracy: N_B / N_A.

    N_B is the smallest N in ns where B attains its maximum; N_A is where A first reaches that accuracy,
    interpolated linearly in log2 N between the two bracketing points of ns. If A already reaches it at ns[0], N_A
    = ns[0] (no extrapolation: the ratio is then a lower bound). If A never reaches it within ns, returns nan.
    """
    ns = np.asarray(ns, dtype=np.float64)
    a, b = np.asarray(curve_a, dtype=np.float64), np.asarray(curve_b, dtype=np.float64)
    if not np.all(np.diff(ns) > 0):
        raise ValueError("ns must be strictly increasing")
    target = b.max()
    n_b = ns[int(np.argmax(b))]
    reached = np.nonzero(a >= target)[0]
    if reached.size == 0:
        return float("nan")
    j = int(reached[0])
    if j == 0:
        return float(n_b / ns[0])
    x0, x1 = np.log2(ns[j - 1]), np.log2(ns[j])
    frac = (target - a[j - 1]) / (a[j] - a[j - 1])
    return float(n_b / 2.0 ** (x0 + frac * (x1 - x0)))
