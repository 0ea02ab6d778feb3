"""Adaptive sampling against fixed-N voting at equal token budgets, replayed on an evaluated pool.

    python -m rlvjax.evaluate --workdir runs/default --num_samples 64        # writes .../eval_samples.jsonl
    python bench/adaptive.py runs/default/eval/final/eval_samples.jsonl [--deltas 0.3,0.2,0.1,0.05]

Samples are i.i.d., so taking a problem's pool in order is a run of adaptive sampling (``rlvjax.adaptive``). For each
delta: the rule's accuracy, samples per problem and generated tokens; beside them, the fixed-N weighted and majority
votes (means over random size-N subsets, as eval.json's curves) at each N with their expected tokens (N x the mean
completion length). The verifier score is the normalised p(Yes) the pool recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py` from a checkout

import numpy as np  # noqa: E402

from rlvjax import testtime  # noqa: E402
from rlvjax.adaptive import AdaptiveRule, simulate  # noqa: E402
from rlvjax.rewards.math import answers_equivalent  # noqa: E402


def load_pool(path: Path):
    rows = [json.loads(line) for line in path.open()]
    problems = sorted({r["problem"] for r in rows})
    k = max(r["sample"] for r in rows) + 1
    grid = {(r["problem"], r["sample"]): r for r in rows}
    get = lambda key: np.array([[grid[(p, j)][key] for j in range(k)] for p in problems])  # noqa: E731
    answers = [[grid[(p, j)]["answer"] for j in range(k)] for p in problems]
    classes = np.stack([testtime.answer_classes(a, answers_equivalent) for a in answers])
    return classes, get("score").astype(float), get("correct").astype(float), get("tokens").astype(int)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples", type=Path, help="eval_samples.jsonl of rlvjax.evaluate")
    p.add_argument("--deltas", default="0.3,0.2,0.1,0.05")
    p.add_argument("--min_samples", type=int, default=2)
    p.add_argument("--round_size", type=int, default=2)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    classes, scores, correct, lengths = load_pool(args.samples)
    num_problems, k = correct.shape
    mean_len = float(lengths.mean())
    print(f"pool: {num_problems} problems x {k} samples, {mean_len:.1f} tokens per completion")
    ns = [n for n in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if n <= k]
    weighted = testtime.scaling_curve(classes, scores, correct, ns, "weighted")
    majority = testtime.scaling_curve(classes, np.ones_like(scores), correct, ns, "majority")
    print("\nfixed N        tokens/problem  weighted  majority")
    for n, w, m in zip(ns, weighted, majority):
        print(f"  N = {n:<4}     {n * mean_len:>10.0f}    {w:.3f}     {m:.3f}")
    print(f"\nadaptive (min {args.min_samples}, rounds of {args.round_size}, cap {k}; mean over {args.seeds} seeds)")
    print("  delta   tokens/problem  samples/problem (max)  accuracy  fixed-N weighted at those tokens")
    for delta in (float(d) for d in args.deltas.split(",")):
        rule = AdaptiveRule(min_samples=args.min_samples, round_size=args.round_size, max_samples=k, delta=delta)
        runs = [simulate(classes, scores, correct, lengths, rule, seed=s) for s in range(args.seeds)]
        tokens = np.mean([r["tokens"] for r in runs]) / num_problems
        samples = np.mean([r["samples"].mean() for r in runs])
        accuracy = np.mean([r["accuracy"] for r in runs])
        fixed = np.interp(tokens, [n * mean_len for n in ns], weighted)
        print(f"  {delta:<6}  {tokens:>14.0f}  {samples:>8.1f} ({max(r['samples'].max() for r in runs):>3})"
              f"            {accuracy:.3f}     {fixed:.3f}")


if __name__ == "__main__":
    main()
