"""Rollout diagnostics against hand-computed values."""

import numpy as np

from rlvjax.rl import diagnostics


def test_auroc_by_hand():
    # correct: 0.9, 0.4; wrong: 0.5, 0.1 -> pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) = 3/4
    assert diagnostics.auroc(np.array([0.9, 0.5, 0.4, 0.1]), np.array([1, 0, 1, 0])) == 0.75
    # a tie between classes counts half: correct 0.5, wrong 0.5 and 0.1 -> (0.5 + 1) / 2
    assert diagnostics.auroc(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 0])) == 0.75
    assert np.isnan(diagnostics.auroc(np.array([0.3, 0.2]), np.array([1, 1])))


def test_verifier_and_rollout_stats_by_hand():
    yes = np.log(np.array([0.8, 0.3, 0.6, 0.1]))
    no = np.log(np.array([0.2, 0.7, 0.4, 0.9]))
    correct = np.array([True, True, False, False])
    s = diagnostics.verifier_stats(yes, no, correct)
    # said yes: T, F, T, F -> right on rows 0 and 3: accuracy 0.5; recalls 1/2 and 1/2
    assert s["verifier_accuracy"] == 0.5 and s["verifier_balanced_accuracy"] == 0.5
    np.testing.assert_allclose(s["verifier_p_yes"], 0.45)
    # log-odds 1.39, -0.85 (correct) vs 0.41, -2.20 (wrong): 3 of the 4 pairs are ordered right
    assert s["verifier_auroc"] == 0.75
    # a rollout the verifier could not score (Yes and No both -inf) counts as p(Yes) = 0, as the votes weigh it:
    # the mean p(Yes) was NaN and the AUROC ranked it first (0.5 here, not 1)
    s = diagnostics.verifier_stats(np.array([-np.inf, np.log(0.8), np.log(0.2)]),
                                   np.array([-np.inf, np.log(0.2), np.log(0.8)]), np.array([False, True, False]))
    np.testing.assert_allclose(s["verifier_p_yes"], (0 + 0.8 + 0.2) / 3)
    assert s["verifier_auroc"] == 1.0 and s["verifier_accuracy"] == 1.0
    rewards = np.array([[1.0, 0.0], [0.0, 0.0]])
    r = diagnostics.rollout_stats(rewards, rewards >= 0.5, np.array([[0.7, -0.7], [0.0, 0.0]]),
                                  np.array([[3, 5], [5, 5]]), np.array([[True, False], [False, False]]),
                                  np.stack([yes, no], -1).reshape(2, 2, 2))
    assert r["reward_mean"] == 0.25 and r["pass_rate"] == 0.5 and r["zero_variance_groups"] == 0.5
    assert r["verify_yes_labels"] == 0.25  # one of 4 rollouts is correct
    # a format bonus in the reward: the labels and the pass rate are the given verdicts', not the sum's
    summed = diagnostics.rollout_stats(rewards + 0.5, rewards >= 0.5, np.zeros((2, 2)), np.ones((2, 2)),
                                       np.ones((2, 2), bool), np.stack([yes, no], -1).reshape(2, 2, 2))
    assert summed["verify_yes_labels"] == 0.25 and summed["pass_rate"] == 0.5 and summed["reward_mean"] == 0.75
    assert r["truncation_rate"] == 0.75 and r["completion_length"] == 4.5 and r["advantage_abs_max"] == 0.7


def test_within_problem_auroc_by_hand():
    # Row 0: the right sample (0.2) loses to both wrong ones: 0. Row 1: right 0.9, 0.3 vs wrong 0.5: 1/2.
    # Row 2 has no wrong sample and is left out.
    scores = np.array([[0.2, 0.3, 0.4], [0.9, 0.3, 0.5], [0.1, 0.1, 0.1]])
    correct = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    assert diagnostics.within_problem_auroc(scores, correct) == 0.25
    assert np.isnan(diagnostics.within_problem_auroc(scores[2:], correct[2:]))


def test_rollout_stats_read_groups_by_row_and_balance_the_classes():
    """3 problems x 3 samples, so a statistic over the wrong axis gives another value (the 2 x 2 case gave the same
    on either axis), 4 correct and 5 wrong rollouts (balanced accuracy differs from accuracy only for unequal
    classes), and the advantage mean and std (not checked before; review)."""
    rewards = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    correct = rewards >= 0.5
    said_yes = np.array([[True, True, False], [True, False, False], [True, True, True]])
    yes = np.where(said_yes, np.log(0.7), np.log(0.3))
    verify = np.stack([yes, np.log1p(-np.exp(yes))], -1)
    adv = np.array([[1.0, -0.5, -0.5], [0.0, 0.0, 0.0], [0.3, 0.3, 0.3]])
    r = diagnostics.rollout_stats(rewards, correct, adv, np.full((3, 3), 4), np.ones((3, 3), bool), verify)
    assert r["pass_rate"] == 2 / 3  # problems (rows) with a correct sample; by sample (column) it would be 1
    assert r["zero_variance_groups"] == 2 / 3  # rows 1 and 2; by column it would be 0
    # Yes on all 4 correct rollouts, on 2 of the 5 wrong ones: accuracy 7/9, recalls 1 and 3/5
    np.testing.assert_allclose(r["verifier_accuracy"], 7 / 9)
    np.testing.assert_allclose(r["verifier_balanced_accuracy"], (1 + 3 / 5) / 2)
    np.testing.assert_allclose(r["advantage_mean"], 0.1)
    np.testing.assert_allclose(r["advantage_std"], np.sqrt(np.mean((adv - 0.1) ** 2)))


def test_calibration_error_by_hand_and_a_nan_score_counts_as_zero():
    p = np.array([0.05, 0.15, 0.95, 0.9])
    correct = np.array([0, 1, 1, 0], dtype=float)
    # bins [0, .1): 0.05 vs 0; [.1, .2): 0.15 vs 1; [.9, 1]: mean 0.925 vs 0.5; each weighted by its share
    expected = 0.25 * 0.05 + 0.25 * 0.85 + 0.5 * 0.425
    assert abs(diagnostics.calibration_error(p, correct) - expected) < 1e-12
    with_nan = np.array([np.nan, 0.15, 0.95, 0.9])  # as 0.0 for a right answer: the first bin is 1 off, not dropped
    right_first = np.array([1, 1, 1, 0], dtype=float)
    assert abs(diagnostics.calibration_error(with_nan, right_first) - (0.25 + 0.25 * 0.85 + 0.5 * 0.425)) < 1e-12
