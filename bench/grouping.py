"""Grouping a K = 512 pool's answers into equivalence classes (issue "Scale II", item 5): ``testtime.answer_classes``
(each distinct key checked against the classes so far, whole numbers compared without math-verify) against the
all-pairs grouping it replaced (every pair of distinct keys sent to math-verify, then union-find), interleaved.

    python bench/grouping.py [--rounds 3]

The pool: 512 answers drawn from the 11 fractions with denominator 2, 4, 5 or 8, each written three ways ("3/4",
"0.75", "\\frac{3}{4}"), and 20 whole numbers: 53 distinct keys in 31 classes; both groupings must agree.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import interleaved, machine_line, med, paired_ratio, positive, table
from rlvjax import testtime
from rlvjax.rewards.answers import normalize_answer
from rlvjax.rewards.math import equivalent_batch


def pool(k: int = 512, seed: int = 0) -> list[str]:
    fractions = [(n, d) for d in (2, 4, 5, 8) for n in range(1, d) if np.gcd(n, d) == 1]
    forms = [f for n, d in fractions for f in (f"{n}/{d}", f"{n / d:g}", f"\\frac{{{n}}}{{{d}}}")]
    forms += [str(v) for v in range(100, 120)]
    return [forms[i] for i in np.random.default_rng(seed).integers(0, len(forms), k)]


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


if __name__ == "__main__":
    main()
