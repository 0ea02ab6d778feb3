"""Test-time strategies against fixed-N voting at equal token budgets, over several seeds, on a trained policy.

    python bench/strategies.py --workdir runs/default [--policy final] [--num_samples 64] [--seeds 0,1,2]
        [--budgets 16,20,24,28] [--particles 4,8] [--step_delimiter '\\n']

Per seed: one K-pool of the run's eval problems (``rlvjax.evaluate.evaluate_policy``, the run's temperature and
verify question); adaptive sampling (``rlvjax.strategies.adaptive``, deltas swept) and verifier-chosen length (budgets
x thresholds x samples) replayed on it; particle filtering run live; the fixed-N weighted and majority curves of the
same pool priced in tokens (N x the mean completion length), and beside them the verifier's tokens (each score reads
the verify prompt after a sample; weighted voting and the strategies pay them, majority voting does not). Then, for
the partial solutions: the within-problem AUROC of the verifier's score after step j (scored on the live cache)
against the finished solution's grade, which says whether a verifier trained on complete solutions can guide a
search over partial ones. Prints markdown tables (mean and spread over seeds) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py` from a checkout

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from common import positive  # noqa: E402
from rlvjax import evaluate, experiment, parallel, testtime  # noqa: E402
from rlvjax.config import Config  # noqa: E402
from rlvjax.model.hf import load_hf  # noqa: E402
from rlvjax.rewards.registry import Rewards  # noqa: E402
from rlvjax.rl import diagnostics  # noqa: E402
from rlvjax.strategies import adaptive, length, particle  # noqa: E402
from rlvjax.strategies import flags as strategy_flags  # noqa: E402
from rlvjax.strategies import report as strategy_report  # noqa: E402
from rlvjax.strategies.policy import Policy  # noqa: E402


def partial_auroc(policy: Policy, records, num_samples: int, delimiter: str, seed: int, steps: int = 6) -> list:
    """Within-problem AUROC of the score after step j = 1..steps (rows still unfinished there) against the final
    grade, and the share of rows still unfinished at step j."""
    delimiters = particle.delimiter_ids(policy.tokenizer, delimiter)
    decoder, cap = policy.decoder, policy.decoder.max_new_tokens
    partial, alive, final = [], [], []
    for chunk, ids, mask, rng in policy.batches(records, seed):
        rows = decoder.start(policy.state, ids, mask, rng, num_samples)
        got, live = [], []
        for _ in range(steps):
            rows = decoder.advance(policy.state, rows, rng, np.full(rows.n.shape[0], cap), delimiters)
            v = np.asarray(decoder.score(policy.state, rows))
            got.append(policy.conventions.scores(v[:, 0], v[:, 1]).reshape(len(chunk), -1))
            live.append(np.asarray(rows.live).reshape(len(chunk), -1))
        rows = decoder.advance(policy.state, rows, rng, np.full(rows.n.shape[0], cap))
        final.append(policy.read(rows, chunk, decoder.score(policy.state, rows))["correct"])
        partial.append(np.stack(got))
        alive.append(np.stack(live))
    partial, alive, final = np.concatenate(partial, 1), np.concatenate(alive, 1), np.concatenate(final)
    def within(j):  # per problem, among its rows still unfinished after step j
        values = [diagnostics.auroc(s[m], c[m]) for s, c, m in zip(partial[j], final, alive[j]) if m.any()]
        values = [v for v in values if not np.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    return [{"step": j + 1, "within_auroc": within(j), "unfinished": float(alive[j].mean())} for j in range(steps)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--policy", default="final")
    p.add_argument("--num_samples", type=positive, default=64)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--deltas", default="0.3,0.2,0.1,0.05,0.02,0.01,0")
    p.add_argument("--min_samples", type=positive, default=4)
    p.add_argument("--budgets", default=None, help="length budgets (default: 1/4, 1/2, all of max_new_tokens)")
    p.add_argument("--thresholds", default="0.1,0.3,0.5,0.7")
    p.add_argument("--particles", default="4,8")
    p.add_argument("--step_delimiter", default="\\n\\n")
    p.add_argument("--out", type=Path, default=None, help="write every figure as JSON here")
    args = p.parse_args(argv)
    delimiter = strategy_flags.unescape("step_delimiter", args.step_delimiter)  # "。" kept, "\\n" expanded
    if not (args.workdir / "config.json").is_file():  # a traceback before
        p.error(f"--workdir {args.workdir} holds no config.json: pass a training run's workdir (train one with "
                "python -m rlvjax.train --workdir DIR)")
    config = Config.from_dict(json.loads((args.workdir / "config.json").read_text()))
    rl, k = config.rl, args.num_samples
    spec = config.model  # the run's precision, as rlvjax.evaluate and the end-of-run report sample (it was f32)
    model, tokenizer = load_hf(args.workdir / args.policy, dtype=jnp.dtype(spec.dtype),
                               compute_dtype=spec.compute_dtype)
    records = experiment.build_records(config.task, tokenizer)[1]
    mesh = parallel.make_mesh(parallel.MeshConfig())
    reward = Rewards.of(config)  # the run's reward, as rlvjax.evaluate grades
    policy = Policy.build(model, tokenizer, rl, verify=config.verifier, reward=reward, conventions=config.conventions)
    budgets = (tuple(int(b) for b in args.budgets.split(",")) if args.budgets else
               strategy_report.default_rules("length", num_samples=1, max_new_tokens=rl.max_new_tokens)[0].budgets)
    rules = {
        "adaptive": [adaptive.AdaptiveRule(min_samples=args.min_samples, round_size=2, max_samples=k,
                                               delta=float(d))
                     for d in args.deltas.split(",")],
        "length": [length.LengthRule(budgets=budgets, threshold=float(t), samples=n)
                   for n in sorted({4, 16, k}) if n <= k for t in args.thresholds.split(",")],
        "particle": [particle.ParticleRule(particles=int(n), step_delimiter=delimiter)
                     for n in args.particles.split(",")],
    }
    for name, rs in rules.items():  # before the first pool, not after it
        try:
            strategy_report.check_rules(name, rs, num_samples=k, max_new_tokens=rl.max_new_tokens,
                                        tokenizer=tokenizer)
        except ValueError as e:  # a traceback before; the run's max_new_tokens is its config's, not a flag here
            p.error(str(e).replace("raise --max_new_tokens", "train with a larger RLConfig.max_new_tokens"))
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.time()
        rep, pool = evaluate.evaluate_policy(model, tokenizer, records, rl, mesh, num_samples=k, seed=seed,
                                             verify=config.verifier, conventions=config.conventions, reward=reward)
        blocks = {name: strategy_report.evaluate(name, rs, rep, pool, policy=policy, records=records, seed=seed)
                  for name, rs in rules.items()}
        blocks["partial"] = partial_auroc(policy, records, 8, delimiter, seed)
        results.append(blocks)
        print(f"seed {seed}: {time.time() - start:.0f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=float))
    print_tables(results, k)


def spread(values) -> str:
    values = np.asarray(values, float)  # None (a point beyond the pool's largest N) is NaN: left out, and counted
    if np.isnan(values).all():  # e.g. a partial-score AUROC at a step no row is still running
        return "n/a"
    known, missing = values[~np.isnan(values)], int(np.isnan(values).sum())
    text = f"{known.mean():.3f} ± {known.std():.3f}" if len(known) > 1 else f"{known[0]:.3f}"
    return text + (f" ({missing} n/a)" if missing else "")


def reach(points) -> str:
    """Mean tokens fixed-N weighted voting needs for each seed's accuracy, and the mean ratio; how many seeds it
    never reaches within the pool."""
    need = [q["fixed_weighted_tokens_at_equal_accuracy"] for q in points]
    got = [(n, q["token_ratio_at_equal_accuracy"]) for n, q in zip(need, points) if n is not None]
    if not got:
        return "never"
    text = f"{np.mean([n for n, _ in got]):.0f} ({testtime.fewer_or_more(np.mean([r for _, r in got]), digits=1)})"
    return text + (f"; {len(need) - len(got)} seed(s) never" if len(got) < len(need) else "")


def print_tables(results: list[dict], k: int) -> None:
    fixed = [r["adaptive"]["fixed"] for r in results]
    print("\n| fixed N | tokens/problem | + verifier (weighted) | weighted | majority |\n|---|---|---|---|---|")
    for j, n in enumerate(fixed[0]["ns"]):
        print(f"| {n} | {np.mean([f['tokens_per_problem'][j] for f in fixed]):.0f} | "
              f"{np.mean([f['weighted_verifier_tokens_per_problem'][j] for f in fixed]):.0f} | "
              f"{spread([f['weighted'][j] for f in fixed])} | {spread([f['majority'][j] for f in fixed])} |")
    for name in ("adaptive", "length", "particle"):
        print(f"\n| {name} | tokens/problem | + verifier | samples/problem | accuracy | "
              f"fixed weighted at equal tokens | fixed majority at equal tokens | "
              f"fixed majority at equal tokens + verifier | "
              f"fixed weighted's tokens for equal accuracy (vs this one's) |\n|---|---|---|---|---|---|---|---|---|")
        swept = strategy_report.SWEPT[name]
        for j, point in enumerate(results[0][name]["points"]):
            pts = [r[name]["points"][j] for r in results]
            setting = ", ".join(f"{key}={point['rule'][key]}" for key in swept if point["rule"][key] is not None)
            print(f"| {setting} | {np.mean([q['tokens_per_problem'] for q in pts]):.0f} | "
                  f"{np.mean([q['verifier_tokens_per_problem'] for q in pts]):.0f} | "
                  f"{np.mean([q['samples_per_problem'] for q in pts]):.1f} | {spread([q['accuracy'] for q in pts])} | "
                  f"{spread([q['fixed_weighted_at_equal_tokens'] for q in pts])} | "
                  f"{spread([q['fixed_majority_at_equal_tokens'] for q in pts])} | "
                  f"{spread([q['fixed_majority_at_equal_total_tokens'] for q in pts])} | {reach(pts)} |")
        for r in results:
            m = r[name]["match"]
            ratio = ("not reached" if m["ratio"] is None else
                     f"{m['tokens_per_problem']:.0f} tokens ({testtime.fewer_or_more(m['ratio'], digits=1)})")
            print(f"  fixed weighted@{k} = {m['fixed_weighted_accuracy']:.3f} at {m['fixed_tokens_per_problem']:.0f} "
                  f"tokens; {name} reaches it with {ratio}")
    print("\n| step | within-problem AUROC of the partial score | rows unfinished |\n|---|---|---|")
    for j, row in enumerate(results[0]["partial"]):
        print(f"| {row['step']} | {spread([r['partial'][j]['within_auroc'] for r in results])} | "
              f"{np.mean([r['partial'][j]['unfinished'] for r in results]):.2f} |")


if __name__ == "__main__":
    main()
