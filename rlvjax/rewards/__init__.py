"""Rewards for RL^V: r_i = 1 when a completion's final answer is equivalent to the gold answer."""

from rlvjax.rewards.math import (
    GradeStats,
    Grader,
    answers_equivalent,
    extract_answer,
    grade_batch,
    grade_batch_with_stats,
    grade_completions,
    is_correct,
)

__all__ = [
    "GradeStats",
    "Grader",
    "answers_equivalent",
    "extract_answer",
    "grade_batch",
    "grade_batch_with_stats",
    "grade_completions",
    "is_correct",
]
