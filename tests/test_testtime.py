"""Voting strategies and accuracy-vs-N curves, against hand-computed values and brute-force references."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import itertools
from collections import Counter

import numpy as np
import pytest

from rlvjax import testtime as tt
from rlvjax.rewards.answers import extract_answer
from rlvjax.strategies.outcome import weighted_leader


def float_equal(a, b):
    return float(a) == float(b)


# ------------------------------------------------------------------------------------------------ single problem


def test_majority_vote_golden():
    assert tt.majority_vote(["1", "2", "2", None, "3"], float_equal) == "2"
    assert tt.majority_vote(["3", "2", "2", "3"], float_equal) == "3"  # tie -> earliest first occurrence
    assert tt.majority_vote([None, None, None, "5"], float_equal) == "5"  # unparseable never wins
    assert tt.majority_vote([None, None]) is None
    assert tt.majority_vote([]) is None


def test_weighted_vote_golden():
    assert tt.weighted_vote(["a", "b", "b"], [0.9, 0.5, 0.5], str.__eq__) == "b"  # 1.0 > 0.9
    assert tt.weighted_vote(["a", "b", "b"], [0.9, 0.4, 0.4], str.__eq__) == "a"  # 0.8 < 0.9
    assert tt.weighted_vote(["a", "b"], [0.5, 0.5], str.__eq__) == "a"  # tie -> earliest
    assert tt.weighted_vote([None, "x"], [1.0, 0.1], str.__eq__) == "x"
    assert tt.weighted_vote([None], [1.0]) is None
    # Scores are probabilities: Yes log-probabilities (SampleOutput.score_logprobs) voted "3" over three "7"s.
    with pytest.raises(ValueError, match=r"^verifier scores must be probabilities in \[0, 1\], got values in "
                                         r"\[-0.9163, -0.6931\]; from Yes/No log-probabilities use Conventions"):
        tt.weighted_vote(["7", "7", "7", "3"], np.log([0.5, 0.5, 0.5, 0.4]))
    with pytest.raises(ValueError, match="verifier scores must be probabilities"):
        tt.scaling_curve(np.array([[0, 1]]), np.array([[1.5, 0.2]]), np.array([[True, False]]), (1,), "weighted")


def test_best_of_n_golden():
    assert tt.best_of_n(["a", None, "c"], [0.2, 0.9, 0.5]) == "c"  # unparseable top score is skipped
    assert tt.best_of_n(["a", "b", "c"], [0.7, 0.9, 0.9]) == "b"  # tie -> earliest index
    assert tt.best_of_n([None, None], [0.1, 0.2]) is None
    assert tt.best_of_n(np.array([-1, 4, 2]), [0.9, 0.1, 0.5]) == 2
    with pytest.raises(ValueError, match=r"^unparseable='rnak': use 'last' or 'rank'$"):  # taken as "last"
        tt.best_of_n(["a"], [0.5], unparseable="rnak")


def test_scores_that_do_not_fit_the_answers_and_misspelt_conventions_are_refused():
    """One score spread over two answers picked one (review, 2026-12-06); weighted_vote and scaling_curve raised
    numpy's IndexError; best_of_n_expected took "rnak" as "rank" and "frist" as "first", and n > K divided by 0."""
    with pytest.raises(ValueError, match=r"^scores has shape \(1,\) for answers of shape \(2,\); pass one score"):
        tt.best_of_n(["3", "5"], [0.9])
    with pytest.raises(ValueError, match=r"^scores has shape \(1,\) for answers of shape \(2,\)"):
        tt.weighted_vote(["3", "5"], [0.5])
    with pytest.raises(ValueError, match=r"^scaling_curve needs answers, correct \(and scores, for weighted\) of one"):
        tt.scaling_curve(np.array([[0, 1]]), [[0.5]], [[1, 0]], [1], "weighted")
    pool = np.array([0.5, 0.5]), np.array([0, 1]), np.array([True, True])
    assert tt.best_of_n_expected(*pool, 2) == 0.5 and tt.best_of_n_expected(*pool, 2, ties="first") == 0.0
    for kwargs in (dict(ties="frist"), dict(unparseable="rnak")):
        with pytest.raises(ValueError, match=r"use 'last' or 'rank', and 'random' or 'first'$"):
            tt.best_of_n_expected(*pool, 2, **kwargs)
    with pytest.raises(ValueError, match=r"^best_of_n_expected needs 1 <= n <= K \(n=3, K=2 scores\)"):
        tt.best_of_n_expected(*pool, 3)


def test_answers_too_long_to_grade_never_win_a_vote():
    long = "1+" * 600 + "1"  # past MAX_ANSWER_CHARS: the grader calls it no answer
    assert tt.majority_vote([long] * 3 + ["5"] * 2) == "5"
    assert tt.best_of_n([long, "5"], [0.9, 0.1]) == "5"  # as the best-of-N curve picks
    assert list(tt.answer_classes([long, "5", None], grouping="string")) == [-1, 0, -1]


def test_votes_accept_precomputed_class_ids():
    assert tt.majority_vote(np.array([2, 2, 0, -1, 0, 0])) == 0
    # tie -> the tied answer seen first, whatever its id (the lowest id won: ids need not follow first occurrence)
    assert tt.majority_vote(np.array([2, 0, 0, 2])) == 2
    assert tt.weighted_vote(np.array([1, 0, 1, 0]), [0.25, 0.5, 0.25, 0.0]) == 1
    assert tt.weighted_vote(np.array([1, 0, -1]), [0.6, 0.5, 1.0]) == 1
    assert tt.majority_vote(np.array([-1, -1])) is None
    # a list of numbers is answers, not class ids (a negative one was read as "unparseable")
    assert tt.majority_vote([-3, -3, 5]) == -3 and tt.best_of_n([-3, 5], [0.9, 0.1]) == -3
    assert tt.weighted_vote([2, 2.0, 7], [0.3, 0.3, 0.5]) == 2  # 2 and 2.0 are one answer


def test_what_the_grader_reads_as_no_answer_never_votes():
    """An empty or bare-delimiter answer is no answer to the grader: it forms no class, in either grouping, and is
    never best-of-N's pick while a real answer is there."""
    for grouping in ("math", "string"):
        np.testing.assert_array_equal(tt.answer_classes(["", "$$", " ", "7"], grouping=grouping), [-1, -1, -1, 0])
    assert tt.majority_vote(["", "$$", "7"]) == "7" and tt.best_of_n(["", "7"], [0.9, 0.1]) == "7"
    curve = tt.scaling_curve([["", "$$", "7"]], None, [[0, 0, 1]], [3], "majority")
    np.testing.assert_allclose(curve, [1.0])


def test_a_nan_verifier_score_weighs_nothing_everywhere():
    """Yes and No both at -inf (or NaN logits) give a NaN score: it weighs 0 in the votes, the best-of-N pick and
    the curves alike. It elected its own answer in the single-problem functions (np.argmax returns a NaN) and zeroed
    every curve subset holding it (a NaN class total is never the maximum)."""
    conv = tt.Conventions()
    scores = conv.scores([-0.1, -np.inf, -0.2, -0.3], [-2.0, -np.inf, -3.0, -1.0])
    assert scores[1] == 0.0 and np.all(np.isfinite(scores))
    assert tt.Conventions(score="raw").scores([np.nan], [0.0])[0] == 0.0
    nan_scores = np.array([0.8, np.nan, 0.9, 0.6])
    ids = np.array([0, 1, 0, 0])  # the NaN-scored sample alone in a wrong class
    assert tt.weighted_vote(ids, nan_scores) == 0 and tt.best_of_n(ids, nan_scores) == 0
    assert weighted_leader(ids, nan_scores) == 0
    # classes [0, 0, 0, 1], grades [1, 1, 1, 0], sample 1 scored NaN: class 0 wins every subset of 4
    curve = tt.scaling_curve(np.array([[0, 0, 0, 1]]), nan_scores[None], [[1, 1, 1, 0]], [1, 4], "weighted")
    assert curve[1] == 1.0 and abs(curve[0] - 0.75) < 0.05


def test_grouping_compares_answers_as_the_grader_grades_them():
    """Grouping takes answers already extracted, as the grader does (grade(answers=True)): the answer of
    \\boxed{\\boxed{1}, \\boxed{2}} is both boxes. Grouping extracted it again (the last box, "2"), so it joined the
    wrong answer "2" while the grader graded it equal to "1, 2"."""
    from rlvjax.rewards.math import default_grader

    texts = ["so \\boxed{1, 2}", "so \\boxed{\\boxed{1}, \\boxed{2}}", "so \\boxed{2}"]
    answers = [extract_answer(t) for t in texts]
    assert answers[1] == "\\boxed{1}, \\boxed{2}"
    graded = default_grader().grade(answers, ["1, 2"] * 3, answers=True)[0]
    np.testing.assert_array_equal(graded, [True, True, False])
    np.testing.assert_array_equal(tt.answer_classes(answers), [0, 0, 1])


def test_answer_classes_custom_equivalence():
    ids = tt.answer_classes(["3", None, "0.5", "$3$", "1/2", "4"], lambda a, b: a == "0.5" and b == "1/2")
    np.testing.assert_array_equal(ids, [0, -1, 1, 0, 1, 2])
    # Not transitive: "c" is equivalent to "a" but not to "b", which is already in a's class: its own class.
    pairs = {("a", "b"), ("a", "c")}
    ids = tt.answer_classes(["a", "b", "c", "c"], lambda x, y: (x, y) in pairs)
    np.testing.assert_array_equal(ids, [0, 0, 1, 1])


def test_grouping_checks_grow_with_keys_times_classes_not_with_key_pairs():
    """One value written many ways (every key equivalent): each key is checked against the class head and at most
    MEMBER_CHECKS of its other keys. Checking every key of the class was all pairs again: 130,816 calls for 512
    keys."""
    calls = []

    def same_value(a, b):
        calls.append((a, b))
        return True

    keys = [f"x{i}" for i in range(512)]
    np.testing.assert_array_equal(tt.answer_classes(keys, same_value), 0)
    # the 511 keys after the first: the head, then min(j, 8) of the j members past the head (1 + ... + 8, then 8s)
    assert len(calls) == sum(min(i, 1 + tt.MEMBER_CHECKS) for i in range(512)) == 511 + 36 + 8 * 502
    # 16 values, 32 forms each: a key is compared with the heads of the classes before its own, then the members
    calls.clear()
    values = [f"{v}/{i}" for i in range(32) for v in range(16)]
    classes = tt.answer_classes(values, lambda a, b: (calls.append(1), a.split("/")[0] == b.split("/")[0])[1])
    assert len(set(classes)) == 16 and len(calls) <= len(values) * (16 + tt.MEMBER_CHECKS)


def test_a_vote_class_holds_only_answers_the_grader_calls_equal_pairwise():
    """math-verify calls "50\\%" equal to both 50 and 0.5, which it tells apart: joined through "50\\%" alone, 50 and
    0.5 formed one class, whose vote was graded right whether the gold was 50 or 1/2."""
    from rlvjax.rewards.math import answers_equivalent

    assert answers_equivalent("50\\%", "50") and answers_equivalent("50\\%", "0.5")
    assert not answers_equivalent("50", "0.5")
    classes = tt.answer_classes(["50\\%", "50", "0.5", "0.5", "0.5"])  # it was one class of 5 votes
    assert classes[1] != classes[2] and len(set(classes)) == 2 and len(set(classes[2:])) == 1, classes


def test_vote_classes_do_not_depend_on_the_samples_order():
    """Grouped in order of appearance, [50, 50%, 50%, 0.5, 0.5] split as {50, 50%} / {0.5} (majority 50) and the same
    answers in another order as {0.5, 50%} / {50} (majority 0.5): the vote followed the sampling order. The most
    frequent answers are grouped first now, then by key."""
    answers = ["50", "50\\%", "50\\%", "0.5", "0.5"]
    partitions, majorities = set(), set()
    for order in ([0, 1, 2, 3, 4], [3, 1, 2, 0, 4], [4, 3, 2, 1, 0], [1, 0, 3, 2, 4]):
        shuffled = [answers[i] for i in order]
        classes = tt.answer_classes(shuffled)
        partitions.add(frozenset(frozenset(a for a, c in zip(shuffled, classes) if c == k) for k in set(classes)))
        majorities.add(tt.majority_vote(shuffled))
    assert partitions == {frozenset({frozenset({"50"}), frozenset({"50\\%", "0.5"})})}, partitions
    assert majorities <= {"0.5", "50\\%"}, majorities  # the same class wins (reported by its first sample)


def test_a_timeout_never_closes_the_class_of_an_answer_that_checks_fine(monkeypatch):
    """A first blame rule charged both keys of every timed-out check: two hanging answers, each checked against the
    one open class, closed the majority's class (5), and an equivalent form (10/2) opened a class of its own. A key
    that has finished a check is never blamed now."""
    from rlvjax.rewards import math as rm

    hangs, value = {"a^{b^{c}}", "d^{e^{f}}"}, {"5": 5, "5.0": 5, "\\frac{10}{2}": 5, "7": 7}

    class Grader:  # math-verify's verdicts, with its timeouts on two answers, without its minutes
        def equivalent_or_failed(self, lefts, rights, timeout_s=None):
            failed = np.array([a in hangs or b in hangs for a, b in zip(lefts, rights)])
            same = np.array([not f and value[a] == value[b] for a, b, f in zip(lefts, rights, failed)])
            return same, failed

    monkeypatch.setattr(rm, "default_grader", lambda *args: Grader())
    answers = ["5"] * 6 + ["a^{b^{c}}"] * 3 + ["5.0"] * 2 + ["d^{e^{f}}"] * 2 + ["\\frac{10}{2}", "7"]
    classes = tt.answer_classes(answers)
    np.testing.assert_array_equal(classes, [0] * 6 + [1] * 3 + [0] * 2 + [2] * 2 + [0, 3])


def test_an_answer_that_hangs_the_grader_is_compared_no_more():
    """``9^{9^{9^{9}}}`` times out in math-verify: it was compared (and timed out, 5 s each) with every class."""
    from rlvjax.rewards.math import default_grader

    fractions = ["\\frac12", "\\frac13", "\\frac14", "\\frac15", "\\frac16"]
    before = default_grader().stats.timeouts
    classes = tt.answer_classes(fractions + ["9^{9^{9^{9}}}", "0.5", "\\frac{2}{4}", "0.25", "0.2"])
    np.testing.assert_array_equal(classes, [0, 1, 2, 3, 4, 5, 0, 0, 2, 3])
    # Its one batched check against the three classes open when it came up ("0.2", "0.25", "0.5" sort first) timed
    # out three times; failing against two or more at once, it is compared no more.
    assert default_grader().stats.timeouts - before == 3
    # Placed first, it opens the first class; the two keys that time out against it leave it out of later checks.
    before = default_grader().stats.timeouts
    classes = tt.answer_classes(["9^{9^{9^{9}}}"] * 3 + fractions + ["0.5", "0.2"])
    np.testing.assert_array_equal(classes, [0, 0, 0, 1, 2, 3, 4, 5, 1, 4])
    assert default_grader().stats.timeouts - before == 2


def test_votes_group_by_mathematical_equivalence():
    """The default equivalence is the math-verify grader: 1/2, 0.5 and \\frac{1}{2} are one answer."""
    answers = ["0.25", "1/2", "\\frac14", "0.5", "\\dfrac{1}{2}", None, "3"]
    np.testing.assert_array_equal(tt.answer_classes(answers), [0, 1, 0, 1, 1, -1, 2])
    assert tt.majority_vote(answers) == "1/2"
    assert tt.weighted_vote(answers, [0.9, 0.2, 0.5, 0.2, 0.2, 1.0, 0.3]) == "0.25"  # 1.4 vs 0.6


# ------------------------------------------------------------------------------------------------ pass@k


def test_pass_at_k_matches_brute_force():
    for n, c, k in [(5, 0, 1), (5, 2, 1), (5, 2, 3), (5, 2, 4), (5, 5, 2), (8, 3, 8), (7, 1, 3)]:
        subsets = list(itertools.combinations(range(n), k))
        brute = sum(any(i < c for i in s) for s in subsets) / len(subsets)
        assert tt.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
    np.testing.assert_allclose(tt.pass_at_k(np.array([4, 4]), np.array([1, 2]), 2), [0.5, 5 / 6])
    with pytest.raises(ValueError):
        tt.pass_at_k(3, 1, 4)


# ------------------------------------------------------------------------------------------------ curves


def _pool(seed, num_problems=4, k=7, num_answers=3, score_levels=4):
    """Random pools with unparseable samples and plenty of score ties (scores on a coarse grid)."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(-1, num_answers, size=(num_problems, k))
    scores = rng.integers(0, score_levels, size=(num_problems, k)) / score_levels
    correct = (classes == 0) & (rng.random((num_problems, k)) < 0.95)  # class 0 is right (mostly consistent)
    correct[:, 0] = classes[:, 0] == 0
    return classes, scores, correct


def _class_correct(classes, correct):
    members = Counter(int(c) for c in classes if c >= 0)
    hits = Counter(int(c) for c, ok in zip(classes, correct) if c >= 0 and ok)
    return {c: hits[c] / members[c] for c in members}


def _reference_vote_accuracy(classes, weights, class_correct):
    """Expected grade of one subset's vote under a uniformly random tie-break (0 when nothing parses)."""
    totals = {}
    for c, w in zip(classes, weights):
        if c >= 0:
            totals[int(c)] = totals.get(int(c), 0.0) + w
    if not totals:
        return 0.0
    best = max(totals.values())
    tied = [c for c, t in totals.items() if t == best]
    return sum(class_correct[c] for c in tied) / len(tied)


def _reference_bon(scores, correct, parseable):
    """BoN accuracy of one subset: the mean correctness over the tied top-scored parseable samples."""
    if not parseable.any():
        return 0.0
    top = scores[parseable].max()
    tied = parseable & (scores == top)
    return correct[tied].mean()


@pytest.mark.parametrize("seed, k", [(0, 5), (1, 7), (2, 8)])
def test_best_of_n_curve_matches_enumeration(seed, k):
    classes, scores, correct = _pool(seed, k=k)
    ns = list(range(1, k + 1))
    curve = tt.scaling_curve(classes, scores, correct, ns, "best_of_n")
    for j, n in enumerate(ns):
        per_problem = []
        for p in range(len(classes)):
            subsets = [list(s) for s in itertools.combinations(range(k), n)]
            per_problem.append(np.mean([_reference_bon(scores[p, s], correct[p, s].astype(float), classes[p, s] >= 0)
                                        for s in subsets]))
        assert curve[j] == pytest.approx(np.mean(per_problem), abs=1e-12)


def test_best_of_n_closed_form_hand_case():
    # sorted scores 0.9 (wrong), 0.5 (right), 0.1 (right); n=2: subsets {0,1},{0,2},{1,2} -> 0, 0, 1
    value = tt.best_of_n_expected(np.array([0.5, 0.9, 0.1]), np.array([1, 0, 1]), np.ones(3, bool), 2)
    assert value == pytest.approx(1 / 3)
    # a tie at the top between a right and a wrong sample counts one half
    assert tt.best_of_n_expected(np.array([0.9, 0.9]), np.array([1, 0]), np.ones(2, bool), 1) == pytest.approx(0.5)
    assert tt.best_of_n_expected(np.array([0.9, 0.9]), np.array([1, 0]), np.ones(2, bool), 2) == pytest.approx(0.5)
    # an unparseable sample counts wrong even where its grade says right, ranked by its score or last
    for rank in ("rank", "last"):
        assert tt.best_of_n_expected(np.array([0.9, 0.1]), np.array([1, 0]), np.array([False, True]), 1,
                                     unparseable=rank) == 0.0
    # a NaN score is 0, above an unparseable sample (it sorted below it: the only parseable sample lost)
    for ties in ("random", "first"):
        assert tt.best_of_n_expected(np.array([np.nan, 0.5]), np.array([1, 0]), np.array([True, False]), 2,
                                     ties=ties) == 1.0


@pytest.mark.parametrize("strategy", ["majority", "weighted"])
def test_vote_curve_matches_slow_reference_on_same_subsets(strategy):
    classes, scores, correct = _pool(3, num_problems=3, k=8)
    ns, num_subsets, seed = [1, 2, 3, 5, 8], 64, 11
    curve = tt.scaling_curve(classes, scores, correct, ns, strategy, num_subsets=num_subsets, seed=seed)
    rng = np.random.default_rng(seed)  # same draws as scaling_curve: one random_subsets call per problem
    expected = np.zeros(len(ns))
    for p in range(len(classes)):
        perms = tt.random_subsets(classes.shape[1], num_subsets, rng)
        class_correct = _class_correct(classes[p], correct[p])
        for j, n in enumerate(ns):
            total = 0.0
            for row in perms:
                picked = row[:n]
                weights = np.ones(n) if strategy == "majority" else scores[p, picked]
                total += _reference_vote_accuracy(classes[p, picked], weights, class_correct)
            expected[j] += total / num_subsets / len(classes)
    np.testing.assert_allclose(curve, expected, atol=1e-12)


@pytest.mark.parametrize("strategy", ["majority", "weighted"])
def test_vote_curve_converges_to_exact_enumeration(strategy):
    classes, scores, correct = _pool(4, num_problems=2, k=6)
    ns = [1, 2, 4, 6]
    curve = tt.scaling_curve(classes, scores, correct, ns, strategy, num_subsets=20000, seed=0)
    exact = []
    for n in ns:
        per_problem = []
        for p in range(len(classes)):
            cc = _class_correct(classes[p], correct[p])
            values = []
            for s in itertools.combinations(range(6), n):
                s = list(s)
                w = np.ones(n) if strategy == "majority" else scores[p, s]
                values.append(_reference_vote_accuracy(classes[p, s], w, cc))
            per_problem.append(np.mean(values))
        exact.append(np.mean(per_problem))
    np.testing.assert_allclose(curve, exact, atol=0.015)
    assert curve[-1] == pytest.approx(exact[-1], abs=1e-12)  # n = K: every subset is the whole pool


def test_vote_curve_ties_count_the_mean_of_tied_classes():
    classes, correct = np.array([[0, 1, -1]]), np.array([[True, False, False]])
    assert tt.scaling_curve(classes, None, correct, [3], "majority")[0] == 0.5  # 1 vs 1 vote: a coin flip
    assert tt.scaling_curve(classes, [[0.2, 0.7, 0.9]], correct, [3], "weighted")[0] == 0.0  # 0.7 beats 0.2
    assert tt.scaling_curve(classes, [[0.7, 0.2, 0.9]], correct, [3], "weighted")[0] == 1.0
    assert tt.scaling_curve(np.array([[-1, -1]]), None, np.zeros((1, 2), bool), [2], "majority")[0] == 0.0


def test_a_weighted_tie_is_a_tie_in_whatever_order_the_scores_are_added():
    """0.1 + 0.2 + 0.3 is 0.6000000000000001 in one order and 0.6 in another: the tie with 0.6 was decided by
    rounding. The curve at N = K (which is exact) gave 0.12-0.19 depending on the seed instead of 0.5, and the vote
    picked "a" in both orders, against its rule of the earliest first occurrence."""
    classes, correct = np.array([[1, 1, 1, 0]]), np.array([[0, 0, 0, 1]], bool)
    for seed in range(4):
        assert tt.scaling_curve(classes, np.array([[0.1, 0.2, 0.3, 0.6]]), correct, [4], "weighted",
                                num_subsets=50, seed=seed)[0] == 0.5
    assert tt.weighted_vote(["a", "a", "a", "b"], [0.1, 0.2, 0.3, 0.6]) == "a"
    assert tt.weighted_vote(["b", "a", "a", "a"], [0.6, 0.1, 0.2, 0.3]) == "b"
    assert tt.weighted_vote(["b", "a", "a", "a"], [0.6, 0.1, 0.2, 0.31]) == "a"  # a real lead still wins


def test_pass_at_k_curve_and_validation():
    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=bool)
    curve = tt.scaling_curve(None, None, correct, [1, 2, 4], "pass_at_k")
    np.testing.assert_allclose(curve, [(0.25 + 0.5) / 2, (0.5 + 5 / 6) / 2, 1.0])
    with pytest.raises(ValueError):
        tt.scaling_curve(None, None, correct, [5], "pass_at_k")
    with pytest.raises(ValueError):
        tt.scaling_curve(None, None, correct, [1], "nope")
    # counts as floats (a float grade array's sums) are read as the whole numbers they are; a fraction is refused
    np.testing.assert_allclose(tt.pass_at_k(4.0, np.array([1.0, 2.0]), 2), [0.5, 5 / 6])
    with pytest.raises(ValueError, match="whole numbers"):
        tt.pass_at_k(4, 1.5, 2)


def test_float_class_ids_are_refused_not_read_as_answers():
    ids = np.array([[0, 0, -1, 1]])  # two votes for class 0 (wrong), one for class 1 (right), one unparseable
    correct = np.array([[0, 0, 0, 1]], dtype=bool)
    assert tt.scaling_curve(ids, None, correct, [4], "majority")[0] == 0.0
    with pytest.raises(ValueError, match="integer array"):  # "-1.0" was a class of its own
        tt.scaling_curve(ids.astype(float), None, correct, [4], "majority")
    assert tt.best_of_n(np.array([-1, 2]), [0.9, 0.1]) == 2  # the unparseable id is skipped
    with pytest.raises(ValueError, match="integer array"):  # -1.0 was picked as an answer
        tt.best_of_n(np.array([-1.0, 2.0]), [0.9, 0.1])


def test_curves_from_string_answers_group_by_equivalence():
    answers = [["1/2", "0.5", "3", None], ["7", "7.0", "\\frac{14}{2}", "8"]]
    correct = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=bool)
    scores = np.array([[0.1, 0.1, 0.9, 0.5], [0.2, 0.2, 0.2, 0.3]])
    ids = np.stack([tt.answer_classes(row) for row in answers])
    np.testing.assert_array_equal(ids, [[0, 0, 1, -1], [0, 0, 0, 1]])
    for strategy in ["majority", "weighted", "best_of_n"]:
        from_strings = tt.scaling_curve(answers, scores, correct, [1, 4], strategy, num_subsets=50, seed=1)
        from_ids = tt.scaling_curve(ids, scores, correct, [1, 4], strategy, num_subsets=50, seed=1)
        np.testing.assert_allclose(from_strings, from_ids)
    assert tt.scaling_curve(ids, scores, correct, [4], "majority")[0] == 1.0  # 2 vs 1 and 3 vs 1 votes
    # Majority reads no scores: Yes log-probabilities passed by mistake do not stop it (they do stop the others).
    assert tt.scaling_curve(ids, np.log(scores), correct, [4], "majority")[0] == 1.0
    with pytest.raises(ValueError, match="verifier scores must be probabilities in"):
        tt.scaling_curve(ids, np.log(scores), correct, [4], "weighted")
    assert tt.scaling_curve(ids, scores, correct, [4], "best_of_n")[0] == 0.0  # 0.9 on "3", 0.3 on "8"


# ------------------------------------------------------------------------------------------------ efficiency


def test_compute_efficiency_hand_cases():
    ns = [1, 2, 4, 8, 16]
    b = [0.3, 0.4, 0.5, 0.55, 0.6]  # best 0.6 first at N = 16
    reached = tt.compute_efficiency(ns, [0.35, 0.5, 0.6, 0.65, 0.7], b)  # reached at N = 4
    assert (reached.target, reached.n_target, reached.n_needed, reached.ratio) == (0.6, 16, 4.0, 4.0)
    # 0.6 is halfway from 0.55 (N=4) to 0.65 (N=8) -> log2 N = 2.5
    assert tt.compute_efficiency(ns, [0.35, 0.5, 0.55, 0.65, 0.7], b).ratio == pytest.approx(16 / 2**2.5)
    first = tt.compute_efficiency(ns, [0.7] * 5, b)  # already there at ns[0]: a lower bound
    assert first.ratio == 16.0 and first.lower_bound and first.describe().startswith(">= 16.00x fewer")
    # B plateaus at N = 4 (0.9); A needs N = 8 for it: twice the samples, not "0.50x fewer" (review 2026-12-06)
    slower = tt.compute_efficiency(ns, [0.5, 0.6, 0.7, 0.9, 0.92], [0.6, 0.8, 0.9, 0.9, 0.9])
    assert slower.ratio == 0.5 and slower.describe() == "2.00x more samples (N = 8 vs 4 for 0.900)"
    assert tt.fewer_or_more(0.25, "<=") == ">= 4.00x more" and tt.fewer_or_more(4, "<=") == "<= 4.00x fewer"
    never = tt.compute_efficiency(ns, [0.1, 0.2, 0.3, 0.4, 0.5], b)  # never reaches B's best: no number
    assert never.n_needed is None and never.ratio is None and not never.lower_bound
    assert never.describe() == "never matched within N <= the pool (target 0.600 at N = 16)"
    assert never.as_dict() == {"target": 0.6, "n_target": 16, "n_needed": None, "lower_bound": False, "ratio": None}
    assert tt.compute_efficiency(ns, b, b).ratio == pytest.approx(1.0)
    # B saturating early: its best is first reached at N = 4, so that is the N to beat, not the largest N.
    assert tt.compute_efficiency(ns, [0.5, 0.9, 0.95, 1.0, 1.0], [0.4, 0.7, 0.9, 0.9, 0.9]).ratio == pytest.approx(2.0)


def test_compute_efficiency_reads_the_target_where_it_is_told():
    ns = [1, 2, 4, 8, 16]
    a, b = [0.5, 0.7, 0.85, 0.9, 0.9], [0.4, 0.6, 0.8, 0.81, 0.8]  # B's first maximum: 0.81 at N = 8
    first = tt.compute_efficiency(ns, a, b)
    assert (first.target, first.n_target) == (0.81, 8)
    assert first.ratio == pytest.approx(8 / 2 ** (1 + (0.81 - 0.7) / 0.15))  # 2.41
    plateau = tt.compute_efficiency(ns, a, b, n_target=4)  # 0.8 at N = 4: two thirds from 0.7 (N=2) to 0.85 (N=4)
    assert (plateau.target, plateau.n_target) == (0.8, 4)
    assert plateau.ratio == pytest.approx(4 / 2 ** (1 + 2 / 3))  # 1.26: the noise in B's top point halved it
    with pytest.raises(ValueError, match=r"n_target=3 is not one of the ns \[1, 2, 4, 8, 16\]"):
        tt.compute_efficiency(ns, a, b, n_target=3)
    # A curve equal to the target but for the order of a float sum (0.6 vs 0.6000000000000001) reaches it
    assert tt.compute_efficiency([1, 2], [0.1, 0.6], [0.2, 0.1 + 0.2 + 0.3]).n_needed == 2.0


def test_plateau_is_the_smallest_n_within_one_paired_standard_error_of_the_best():
    ns = [1, 2, 4, 8]
    # per-problem accuracies; the means are 0.25, 0.5, 0.9625, 0.975: the best (first maximum) is N = 8
    curves = np.array([[0.0, 0.5, 0.9, 1.0],
                       [0.0, 0.4, 1.0, 1.0],
                       [1.0, 0.6, 1.0, 1.0],
                       [0.0, 0.5, 0.95, 0.9]])
    # gaps to N = 8 per problem, mean vs standard error (sd / 2), by hand:
    #   N = 4: 0.1, 0, 0, -0.05   mean 0.0125 < 0.0315: within, the plateau starts here
    #   N = 2: 0.5, 0.6, 0.4, 0.4 mean 0.475  > 0.0479
    assert tt.plateau(ns, curves) == 4
    one = curves.copy()
    one[:, 2] = [0.9, 1.0, 1.0, 0.9]  # a rise one problem carries alone: mean gap 0.025 = its standard error
    assert tt.plateau(ns, one) == 8
    rising = curves.copy()
    rising[:, 2] = [0.8, 0.9, 0.85, 0.8]  # every problem gains from N = 4 to 8: mean gap 0.1375 > 0.0239
    assert tt.plateau(ns, rising) == 8
    assert tt.plateau(ns, curves[:1]) == 8  # one problem: no spread to allow for, the first maximum
    with pytest.raises(ValueError, match=r"per_problem must be \[P >= 1, 4\] accuracies, got shape \(4,\)"):
        tt.plateau(ns, curves.mean(axis=0))


def test_scaling_curve_per_problem_averages_to_the_curve():
    rng = np.random.default_rng(3)
    classes, correct = rng.integers(-1, 3, (5, 8)), rng.random((5, 8)) < 0.5
    scores = rng.random((5, 8))
    for strategy in tt.STRATEGIES:
        rows = tt.scaling_curve(classes, scores, correct, [1, 2, 8], strategy, num_subsets=50, per_problem=True)
        assert rows.shape == (5, 3)
        np.testing.assert_array_equal(rows.mean(axis=0), tt.scaling_curve(classes, scores, correct, [1, 2, 8],
                                                                          strategy, num_subsets=50))


def test_a_vote_of_one_sample_is_exact():
    """At N = 1 a vote is its one sample: majority@1 and weighted@1 equal the share of right samples (0.25, 0.5 here)
    over every one-sample subset, not a Monte-Carlo mean of 3 draws (0, 1/3, 2/3 or 1; it put majority@1 above
    pass@1, review 2026-12-06). An unparseable sample (-1) votes for nothing: 0."""
    classes = np.array([[0, 1, 2, 3], [0, 0, -1, 1]])
    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], bool)
    for strategy in ("majority", "weighted"):
        got = tt.scaling_curve(classes, np.full((2, 4), 0.5), correct, [1], strategy, num_subsets=3, per_problem=True)
        np.testing.assert_array_equal(got[:, 0], [0.25, 0.5])
        assert got.mean() == tt.scaling_curve(classes, None, correct, [1], "pass_at_k")[0]



def test_bootstrap_ci_by_hand():
    # Two problems with values 0 and 1: a resample's mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles are 0 and 1; the 50% interval's ends (25% and 75% quantiles) are 1/2 and 1/2.
    assert tt.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert tt.bootstrap_ci([0.0, 1.0], level=0.5, num_resamples=100_000) == (0.5, 0.5)
    assert tt.bootstrap_ci([0.3] * 7) == pytest.approx((0.3, 0.3))  # no spread, no interval
    # 100 problems, 60 right: the normal approximation's 95% interval is 0.6 +- 1.96 * sqrt(0.24 / 100).
    low, high = tt.bootstrap_ci(np.r_[np.ones(60), np.zeros(40)])
    assert low == pytest.approx(0.6 - 1.96 * 0.049, abs=0.01) and high == pytest.approx(0.6 + 1.96 * 0.049, abs=0.01)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        tt.bootstrap_ci([])


# ------------------------------------------------------------------------------------------------ conventions


def test_conventions_by_hand():
    normalized, raw = tt.Conventions(), tt.Conventions(score="raw")
    yes, no = np.log([0.2, 0.6]), np.log([0.2, 0.3])
    np.testing.assert_allclose(normalized.scores(yes, no), [0.5, 2 / 3])
    np.testing.assert_allclose(raw.scores(yes, no), [0.2, 0.6])
    with pytest.raises(ValueError, match=r"Conventions.grouping='exact': use one of \('math', 'string'\)"):
        tt.Conventions(grouping="exact")


def test_grouping_conventions_on_a_pool():
    answers = ["1/2", "0.5", " 0.5", "3", None, "1/2"]
    np.testing.assert_array_equal(tt.answer_classes(answers), [0, 0, 0, 1, -1, 0])  # math: 1/2 = 0.5
    np.testing.assert_array_equal(tt.answer_classes(answers, grouping="string"), [0, 1, 1, 2, -1, 0])
    # One problem, scores 0.1 each: majority by math equivalence picks the right 1/2 (4 votes vs 1), by string the
    # three classes {1/2: 2, 0.5: 2, 3: 1} tie two ways, one of them right.
    correct = np.array([[1, 1, 1, 0, 0, 1]], bool)
    string = tt.Conventions(grouping="string")
    assert tt.scaling_curve([answers], None, correct, [6], "majority")[0] == 1.0
    assert tt.scaling_curve([answers], None, correct, [6], "majority", conventions=string)[0] == 1.0
    wrong_split = np.array([[0, 1, 1, 0, 0, 0]], bool)  # grader says only the 0.5s are right
    assert tt.scaling_curve([answers], None, wrong_split, [6], "majority", conventions=string)[0] == 0.5


def test_best_of_n_conventions_on_a_pool():
    # Pool of 3: an unparseable sample holds the top score; two parseable ones tie at 0.5, the first right.
    classes = np.array([[-1, 0, 1]])
    scores = np.array([[0.9, 0.5, 0.5]])
    correct = np.array([[0, 1, 0]], bool)
    curve = lambda **kw: tt.scaling_curve(classes, scores, correct, [1, 2, 3], "best_of_n",  # noqa: E731
                                          conventions=tt.Conventions(**kw))
    # last + random (default). N=1: 1/3. N=2: subsets {u,a}->a (1), {u,b}->b (0), {a,b}->tie (1/2): 1/2. N=3: 1/2.
    np.testing.assert_allclose(curve(), [1 / 3, 1 / 2, 1 / 2])
    # rank: the unparseable top pick is wrong whenever it is in the subset. N=2: only {a,b} -> 1/2, so 1/6; N=3: 0.
    np.testing.assert_allclose(curve(unparseable="rank"), [1 / 3, 1 / 6, 0.0])
    # first: the tie goes to the earlier sample (right). N=2: {u,a} 1, {u,b} 0, {a,b} 1 -> 2/3; N=3: 1.
    np.testing.assert_allclose(curve(ties="first"), [1 / 3, 2 / 3, 1.0])
    assert tt.best_of_n(["7", None, "5"], [0.1, 0.9, 0.2], unparseable="rank") is None
    assert tt.best_of_n(["7", None, "5"], [0.1, 0.9, 0.2]) == "5"
