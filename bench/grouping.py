"""Grouping a K = 512 pool's answers into equivalence classes (issue "Scale II", item 5): ``testtime.answer_classes``
(each distinct key checked against the classes so far, whole numbers compared without math-verify) against the
all-pairs grouping it replaced (every pair of distinct keys sent to math-verify, then union-find), interleaved.

    python bench/grouping.py [--rounds 3]

The pool: 512 answers drawn from the 11 fractions with denominator 2, 4, 5 or 8, each written three ways ("3/4",
"0.75", "\\frac{3}{4}"), and 20 whole numbers: 53 distinct keys in 31 classes; both groupings must agree.

Then a weak policy's pool, 64 answers with few repeats (random fractions and surds, ``spread_pool``): grouped as now
(plain numbers decided in the parent, ``answers.same_by_key``) against every pair that is not two whole numbers sent
to math-verify, as before 2026-12-07; both must give the same classes.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import interleaved, machine_line, med, paired_ratio, positive, table
from rlvjax import testtime
from rlvjax.rewards import answers as answers_lib
from rlvjax.rewards.answers import normalize_answer
from rlvjax.rewards.math import equivalent_batch


def pool(k: int = 512, seed: int = 0) -> list[str]:
    fractions = [(n, d) for d in (2, 4, 5, 8) for n in range(1, d) if np.gcd(n, d) == 1]
    forms = [f for n, d in fractions for f in (f"{n}/{d}", f"{n / d:g}", f"\\frac{{{n}}}{{{d}}}")]
    forms += [str(v) for v in range(100, 120)]
    return [forms[i] for i in np.random.default_rng(seed).integers(0, len(forms), k)]


def spread_pool(k: int = 64, seed: int = 0) -> list[str]:
    """Half random fractions, half random surds (``a\\sqrt{b}``), few of them repeated (the reviewer's 64 surds took
    56 s to group)."""
    rng = np.random.default_rng(seed)
    fractions = [f"\\frac{{{rng.integers(1, 50)}}}{{{rng.integers(2, 50)}}}" for _ in range(k // 2)]
    surds = [f"{rng.integers(2, 10)}\\sqrt{{{rng.choice([2, 3, 5, 6, 7, 10, 11, 13])}}}" for _ in range(k - k // 2)]
    return fractions + surds


def before_plain_numbers(answers: list[str]) -> np.ndarray:
    """``answer_classes`` with plain numbers left to math-verify, as before 2026-12-07."""
    decide = answers_lib._plain_number
    answers_lib._plain_number = lambda key: None
    try:
        return testtime.answer_classes(answers)
    finally:
        answers_lib._plain_number = decide


def all_pairs(answers: list[str]) -> np.ndarray:
    """The grouping before: every pair of distinct keys to math-verify in one batch, merged transitively."""
    reps = list(dict.fromkeys(normalize_answer(a) for a in answers))
    pairs = [(i, j) for i in range(len(reps)) for j in range(i + 1, len(reps))]
    same = equivalent_batch([reps[i] for i, _ in pairs], [reps[j] for _, j in pairs])
    parent = list(range(len(reps)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for (i, j), s in zip(pairs, same):
        if s:
            parent[max(find(i), find(j))] = min(find(i), find(j))
    root = {r: find(i) for i, r in enumerate(reps)}
    first = {}
    return np.array([first.setdefault(root[normalize_answer(a)], len(first)) for a in answers])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=positive, default=3)
    args = p.parse_args()
    answers = pool()
    new, old = testtime.answer_classes(answers), all_pairs(answers)
    assert (new == old).all() and new.max() + 1 == 31, "the two groupings disagree"
    times = interleaved({"answer_classes": lambda: testtime.answer_classes(answers),
                         "all pairs": lambda: all_pairs(answers)}, args.rounds)
    print(machine_line())
    print(table(["grouping, K = 512 (53 keys, 31 classes)", "median s", "x faster"],
                [["all pairs (before)", f"{med(times['all pairs']):.2f}", "1.00"],
                 ["answer_classes (now)", f"{med(times['answer_classes']):.2f}",
                  f"{paired_ratio(times['all pairs'], times['answer_classes']):.2f}"]]))
    spread = spread_pool()
    new, old = testtime.answer_classes(spread), before_plain_numbers(spread)
    assert (new == old).all(), "deciding plain numbers in the parent changed the classes"
    times = interleaved({"now": lambda: testtime.answer_classes(spread),
                         "before": lambda: before_plain_numbers(spread)}, args.rounds, warmup=False)
    print(table([f"grouping, K = {len(spread)} ({len(set(map(normalize_answer, spread)))} keys, {new.max() + 1} "
                 "classes)", "median s", "x faster"],
                [["plain numbers to math-verify (before)", f"{med(times['before']):.2f}", "1.00"],
                 ["plain numbers decided in the parent (now)", f"{med(times['now']):.2f}",
                  f"{paired_ratio(times['before'], times['now']):.2f}"]]))


if __name__ == "__main__":
    main()
