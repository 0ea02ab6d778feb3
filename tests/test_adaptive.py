"""Adaptive sampling's stopping rule on hand-made pools: a settled problem stops, an unsettled one continues, caps
hold, and the replay on a pool prices what it drew."""

import numpy as np
import pytest

from rlvjax.adaptive import AdaptiveRule, overturn_probability, samples_needed, simulate, weighted_leader

RULE = AdaptiveRule(min_samples=4, round_size=4, max_samples=16, delta=0.1, bootstraps=200)


def test_the_leader_is_the_heaviest_class_and_unparseable_answers_never_lead():
    classes = np.array([0, 1, 1, -1, -1, -1])
    assert weighted_leader(classes, np.array([0.9, 0.3, 0.3, 1, 1, 1])) == 0  # 0.9 > 0.6; the -1s weigh nothing
    assert weighted_leader(classes, np.array([0.5, 0.3, 0.3, 1, 1, 1])) == 1
    assert weighted_leader(np.array([-1, -1]), np.array([1.0, 1.0])) == -1


def test_a_settled_problem_stops_at_the_first_check():
    rng = np.random.default_rng(0)
    agree = np.zeros(16, int)
    assert overturn_probability(agree[:4], np.full(4, 0.9), 200, rng) == 0.0
    assert samples_needed(agree, np.full(16, 0.9), RULE, rng) == 4
    # One dissenting sample with a low score: every resample still elects class 0 (3 x 0.9 against 1 x 0.1 at most).
    assert samples_needed(np.array([0, 1, 0, 0] + [0] * 12), np.array([0.9, 0.1, 0.9, 0.9] + [0.9] * 12),
                          RULE, rng) == 4


def test_an_unsettled_problem_continues_to_its_cap():
    rng = np.random.default_rng(0)
    split = np.array([0, 1] * 16)
    assert 0.3 < overturn_probability(split[:16], np.full(16, 0.5), 2000, rng) < 0.7
    assert samples_needed(split, np.full(32, 0.5), RULE, rng) == 16  # max_samples
    assert samples_needed(split, np.full(32, 0.5), AdaptiveRule(max_samples=64), rng) == 32  # the pool's size
    assert samples_needed(np.full(16, -1), np.ones(16), RULE, rng) == 16  # nothing parses: no leader to keep
    assert samples_needed(split[:3], np.full(3, 0.5), RULE, rng) == 3  # a pool smaller than min_samples


def test_the_replay_counts_samples_tokens_and_the_vote_at_the_stop():
    classes = np.array([[0] * 8, [0, 1] * 4])
    scores = np.array([[0.9] * 8, [0.2, 0.8] * 4])
    correct = np.array([[1.0] * 8, [1.0, 0.0] * 4])
    lengths = np.array([[10] * 8, [5] * 8])
    rule = AdaptiveRule(min_samples=4, round_size=4, max_samples=8, delta=0.2)
    out = simulate(classes, scores, correct, lengths, rule, seed=3)
    # Problem 0 agrees: 4 samples. Problem 1 is split 2:2 in answers, but one class-1 sample (0.8) outweighs three
    # class-0 ones (0.6): only the resamples without class 1, (1/2)^4 = 6%, elect another class, so it stops at 4
    # too, on the wrong answer (the verifier, not the gold, decides when to stop).
    np.testing.assert_array_equal(out["samples"], [4, 4])
    assert out["tokens"] == 4 * 10 + 4 * 5
    assert out["accuracy"] == pytest.approx((1.0 + 0.0) / 2)
    assert simulate(classes, scores, correct, lengths, rule, seed=3)["samples"].tolist() == [4, 4]  # deterministic


def test_bad_rules_are_one_line_errors():
    with pytest.raises(ValueError, match=r"AdaptiveRule.max_samples=0 must be >= min_samples=4 \(a budget of 0"):
        AdaptiveRule(max_samples=0)
    with pytest.raises(ValueError, match=r"AdaptiveRule.delta=1.5 must be in \[0, 1\]"):
        AdaptiveRule(delta=1.5)
    with pytest.raises(ValueError, match="AdaptiveRule.round_size='4' must be an int, not a str"):
        AdaptiveRule(round_size="4")
