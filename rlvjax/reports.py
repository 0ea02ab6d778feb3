"""What an evaluation reports and how it is shown: one policy's report from a graded K-pool (pass@k, the votes'
curves, the verifier's quality), the RL^V-vs-lambda0 comparison, eval.json / scaling.png / eval_samples.jsonl, and
the printed summary. ``rlvjax.evaluate`` samples the pools; numpy and matplotlib only here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import json
import math
import operator
import os
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

from rlvjax import atomic, testtime
from rlvjax.rl import diagnostics

STRATEGIES = ("majority", "best_of_n", "weighted")
REPORT_FILES = ("eval.json", "scaling.png", "compute.png", "eval_samples.jsonl")  # what ``write_report`` writes
REPORT_LOCK = ".report.lock"  # held while a report's files move into their folder (``write_report``)


def check_pool_size(k: int, name: str = "--num_samples") -> None:
    """A pool of ``k`` samples per problem the report can vote over, or a one-line error."""
    try:
        if isinstance(k, bool):  # True was read as 1
            raise TypeError
        k = operator.index(k)  # 16.0 and '16' are refused here, not by a TypeError from the bit test
    except TypeError:
        raise ValueError(f"{name}={k!r} must be a whole number: a power of two >= 2") from None
    if k < 2 or k & (k - 1):
        raise ValueError(f"{name}={k}: use a power of two >= 2 (votes compare a problem's samples, and the curve's "
                         "largest N is the pool)")


def report(pool: dict[str, np.ndarray], levels: list | None = None, *, num_subsets: int = 1000, seed: int = 0,
           conventions: testtime.Conventions = testtime.Conventions()) -> dict:
    """Everything ``eval.json`` holds for one policy, from a graded pool, under ``conventions`` (recorded)."""
    correct = pool["correct"].astype(bool)
    p, k = correct.shape
    check_pool_size(k, "K")  # the curves' largest N must be K: the summary of a K = 6 pool failed (KeyError)
    ns = [2 ** i for i in range(int(np.log2(k)) + 1)]
    score = conventions.scores(pool["yes_logp"], pool["no_logp"])
    classes = testtime.pool_classes(pool, conventions.grouping)
    per_problem = {s: testtime.scaling_curve(classes, score, correct, ns, s, num_subsets, seed,
                                             conventions=conventions, per_problem=True) for s in STRATEGIES}
    curves = {s: c.mean(axis=0) for s, c in per_problem.items()}
    plateau = testtime.plateau(ns, per_problem["majority"])
    pass_at = testtime.pass_at_k(np.full(p, k), correct.sum(1), np.asarray(ns)[:, None]).mean(axis=1)
    ver = diagnostics.verifier_stats(pool["yes_logp"].ravel(), pool["no_logp"].ravel(), correct.ravel())
    out = {
        "num_problems": p, "num_samples": k, "ns": ns, "conventions": dataclasses.asdict(conventions),
        "pass@1": float(correct.mean()), "pass@1_ci95": testtime.bootstrap_ci(correct.mean(axis=1), seed=seed),
        "pass@k": dict(zip(map(str, ns), map(float, pass_at))),
        "accuracy": {s: dict(zip(map(str, ns), map(float, c))) for s, c in curves.items()},
        # both AUROCs rank by the conventions' score (the Yes/No accuracies read the verifier's Yes-or-No answer)
        "verifier": {**ver, "verifier_auroc": diagnostics.auroc(score.ravel(), correct.ravel()),
                     "within_problem_auroc": diagnostics.within_problem_auroc(score, correct),
                     "calibration_error": diagnostics.calibration_error(score.ravel(), correct.ravel())},
        # the majority vote's best accuracy is read where its plateau starts (testtime.plateau), not at whichever
        # of its near-equal Ns a Monte-Carlo draw put highest
        "majority_plateau": plateau,
        "compute_efficiency_weighted_vs_majority": testtime.compute_efficiency(
            ns, curves["weighted"], curves["majority"], n_target=plateau).as_dict(),
    }
    if levels is not None and any(level is not None for level in levels):
        by_level = {}
        for level in sorted({lv for lv in levels if lv is not None}):
            rows = np.asarray([lv == level for lv in levels])
            weighted = testtime.scaling_curve(classes[rows], score[rows], correct[rows], [k], "weighted",
                                              num_subsets, seed, conventions=conventions)
            by_level[str(level)] = {"problems": int(rows.sum()), "pass@1": float(correct[rows].mean()),
                                    f"weighted@{k}": float(weighted[0])}
        out["by_level"] = by_level
    return out


def compare(rlv: dict, baseline: dict, rlv_correct: np.ndarray, baseline_correct: np.ndarray, *,
            seed: int = 0) -> dict:
    """The paper's headline comparison of an RL^V policy with its lambda = 0 baseline on the same problems:
    pass@1 of each and their paired difference with 95% bootstrap intervals over problems; how many samples RL^V's
    weighted vote needs to reach the baseline's best majority vote (``efficiency``: the paper's 8-32x; "best": where
    the baseline's majority curve reaches its plateau, ``majority_plateau``), and how many it needs to reach RL^V's
    own (the same-policy ratio); the weighted-minus-majority lead at each N."""
    ns = rlv["ns"][: len(baseline["ns"])]

    def curve(rep, strategy):
        return [rep["accuracy"][strategy][str(n)] for n in ns]

    difference = rlv_correct.mean(axis=1) - baseline_correct.mean(axis=1)
    return {
        "pass@1": {"rlv": rlv["pass@1"], "lambda0": baseline["pass@1"], "difference": float(difference.mean()),
                   "difference_ci95": testtime.bootstrap_ci(difference, seed=seed)},
        "efficiency_vs_lambda0_majority": testtime.compute_efficiency(
            ns, curve(rlv, "weighted"), curve(baseline, "majority"),
            n_target=majority_plateau(baseline, ns)).as_dict(),
        "efficiency_same_policy": rlv["compute_efficiency_weighted_vs_majority"],
        "weighted_minus_lambda0_majority": {str(n): a - b for n, a, b in
                                            zip(ns, curve(rlv, "weighted"), curve(baseline, "majority"))},
    }


def majority_plateau(rep: dict, ns) -> int | None:
    """Where ``rep``'s majority vote reaches its best accuracy (``report``'s ``majority_plateau``), when that is one of
    ``ns``; None otherwise (a report written before it was recorded, or ns cut short of it: the first maximum then)."""
    n = rep.get("majority_plateau")
    return n if n in ns else None


def assemble(reports: dict[str, dict[str, dict]], correct: dict[str, dict[str, np.ndarray]], *,
             train_temperature: float | None, headline_temperature: float, seed: int = 0) -> dict:
    """What ``eval.json`` holds: ``reports[T][policy]`` per sampling temperature ``T`` (a key made by
    :func:`temperature_key`), and, where both an RL^V policy ("final") and its baseline ("lambda0") were evaluated at
    ``T``, ``comparison[T]`` (:func:`compare`; ``correct[T][policy]`` are their graded pools). The training and the
    headline temperature are stated beside them, so no curve is read at a temperature it does not name
    (``train_temperature`` None: a model this run did not train, e.g. ``evaluate --model_dir``)."""
    comparison = {t: compare(reps["final"], reps["lambda0"], correct[t]["final"], correct[t]["lambda0"], seed=seed)
                  for t, reps in reports.items() if {"final", "lambda0"} <= set(reps)}
    return {"train_temperature": train_temperature, "headline_temperature": headline_temperature,
            "reports": reports, **({"comparison": comparison} if comparison else {})}


def temperature_key(temperature: float) -> str:
    """``eval.json``'s key for a sampling temperature: the shortest text that reads back as the same float ("0.7",
    "1" for 1.0), so that two temperatures never share a key and a key names its temperature exactly."""
    text = repr(float(temperature))
    return text[:-2] if text.endswith(".0") else text


def roles(evaluation: dict, key: str) -> list[str]:
    """What the temperature of ``key`` is to the run: "training" or "eval", and "headline"."""
    train = evaluation["train_temperature"]
    return ["training" if train is not None and key == temperature_key(train) else "eval",
            *(["headline"] if key == temperature_key(evaluation["headline_temperature"]) else [])]


COLORS = {"final": "tab:blue", "lambda0": "tab:orange", "warm_start": "tab:gray"}
STYLES = {"weighted": "-", "majority": "--", "best_of_n": ":"}


def plot_scaling(evaluation: dict, path) -> None:
    """Accuracy vs N (log2 axis): one panel per temperature, every policy's majority / weighted / best-of-N curves
    (colour: policy; line style: strategy). Drawn without pyplot, so a notebook's backend is left as it is."""
    from matplotlib.figure import Figure

    reports = evaluation["reports"]
    fig = Figure(figsize=(6 * len(reports), 4.5))
    axes = fig.subplots(1, len(reports), squeeze=False, sharey=True)
    for ax, (t, policies) in zip(axes[0], reports.items()):
        for name, rep in policies.items():
            ns = rep["ns"]
            for strategy, values in rep["accuracy"].items():
                ax.plot(ns, [values[str(n)] for n in ns], STYLES.get(strategy, "-"), marker="o", markersize=3,
                        color=COLORS.get(name), label=f"{name} {strategy.replace('_', '-')}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (samples per problem)")
        ax.set_title(f"T = {t} ({', '.join(roles(evaluation, t))})")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7, ncol=len(next(iter(reports.values()))))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summary_table(reports: dict[str, dict]) -> str:
    """One small text table comparing policies at N = K (``within``: the verifier's within-problem AUROC;
    ``eff.``: the weighted vote's efficiency over the same policy's majority vote, ">=" when weighted voting is
    there already at the smallest N)."""
    k = max(r["num_samples"] for r in reports.values())
    head = f"{'policy':12s}{'pass@1':>8s}{'95% CI':>14s}{'maj@' + str(k):>8s}{'BoN@' + str(k):>8s}" \
           f"{'wt@' + str(k):>8s}{'ver.bal.acc':>12s}{'AUROC':>7s}{'within':>7s}{'eff.':>10s}"
    lines = [head]
    # eval.json writes an undefined figure (an AUROC with one class only) as null, read back as None
    num = lambda x, width: f"{'n/a':>{width}s}" if x is None or x != x else f"{x:{width}.3f}"
    for name, r in reports.items():
        acc, v = r["accuracy"], r["verifier"]
        eff = r["compute_efficiency_weighted_vs_majority"]
        ratio = "never" if eff["ratio"] is None else (">=" if eff["lower_bound"] else "") + f"{eff['ratio']:.2f}"
        low, high = r["pass@1_ci95"]
        lines.append(f"{name:12s}{r['pass@1']:8.3f}{f'{low:.3f}-{high:.3f}':>14s}{num(acc['majority'][str(k)], 8)}"
                     f"{num(acc['best_of_n'][str(k)], 8)}{num(acc['weighted'][str(k)], 8)}"
                     f"{num(v['verifier_balanced_accuracy'], 12)}{num(v['verifier_auroc'], 7)}"
                     f"{num(v['within_problem_auroc'], 7)} {ratio:>9s}")  # ">=1024.00" stays apart
    return "\n".join(lines)


def summary(evaluation: dict) -> str:
    """The printed end-of-run report: a table per temperature (headline first) and the RL^V-vs-lambda0 lines."""
    parts = []
    for t, reports in sorted(evaluation["reports"].items(),
                             key=lambda item: item[0] != temperature_key(evaluation["headline_temperature"])):
        parts.append(f"T = {t} ({', '.join(roles(evaluation, t))} temperature)\n{summary_table(reports)}")
        cmp = evaluation.get("comparison", {}).get(t)
        if cmp:
            p1 = cmp["pass@1"]
            low, high = p1["difference_ci95"]
            eff = testtime.Efficiency(**{k: v for k, v in cmp["efficiency_vs_lambda0_majority"].items()
                                         if k != "ratio"})
            parts.append(f"RL^V - lambda0 pass@1: {p1['difference']:+.3f} (95% CI {low:+.3f} to {high:+.3f})\n"
                         f"RL^V weighted vote vs lambda0 majority vote: {eff.describe()}")
    return "\n\n".join(parts)


def write_report(evaluation: dict, out_dir, samples: tuple | None = None,
                 check: Callable[[], None] | None = None) -> tuple[Path, Path]:
    """``eval.json`` and ``scaling.png`` in ``out_dir``, ``compute.png`` when a report prices a test-time strategy and,
    given ``samples = (pool, records, conventions)``, ``eval_samples.jsonl`` (``write_samples``); a stale one of
    those two is removed otherwise. Each file is written beside its place, then all are moved in with eval.json last,
    so an eval.json always sits with the files of its own evaluation and a failure leaves the previous set whole
    (each staged under a name of its own: two evaluations writing one folder at once no longer crash on each
    other's temporaries, and their sets move in one after the other under ``_moving_in``'s lock; ``check``, called
    under that lock, may refuse the move: nothing is written then). Non-finite numbers (an AUROC where no problem
    has both outcomes) are written as null. Returns the paths of eval.json and scaling.png."""
    from rlvjax.strategies import report as strategy_report

    out_dir = Path(out_dir)
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # removed again if nothing is written
    out_dir.mkdir(parents=True, exist_ok=True)
    strategies = [rep["strategy"] for policies in evaluation["reports"].values() for rep in policies.values()
                  if "strategy" in rep]
    writers = {"scaling.png": lambda path: plot_scaling(evaluation, path)}
    if strategies:
        writers["compute.png"] = lambda path: strategy_report.plot(strategies[-1], path)
    if samples is not None:
        writers["eval_samples.jsonl"] = lambda path: write_samples(*samples, path)
    writers["eval.json"] = lambda path: path.write_text(json.dumps(as_json(evaluation), indent=2, allow_nan=False))
    for name in REPORT_FILES:  # what killed evaluations left staged: nothing reads them, and they are large
        final = out_dir / name
        for left in out_dir.glob(f".{glob.escape(final.stem)}.*-*{final.suffix}"):
            if atomic.abandoned(left, final.stem, final.suffix):
                left.unlink(missing_ok=True)  # another report may remove it first
    staged = []
    try:
        for name, write in writers.items():
            final = out_dir / name
            # a name of its own (two evaluations may write one folder at once), with the writer's pid and host (what
            # a killed one left is removed by the next); the suffix names the format
            staged.append((out_dir / f"{atomic.staged_prefix(final.stem)}{uuid.uuid4().hex[:12]}{final.suffix}", final))
            write(staged[-1][0])
        with _moving_in(out_dir):
            if check is not None:
                check()  # may refuse: nothing moves in
            for name in ("compute.png", "eval_samples.jsonl"):  # an earlier evaluation's, not replaced by this one
                if name not in writers:
                    (out_dir / name).unlink(missing_ok=True)
            for tmp, final in staged:
                tmp.replace(final)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if created:
            (out_dir / REPORT_LOCK).unlink(missing_ok=True)
        for folder in created:  # innermost first; one another evaluation wrote into meanwhile stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return out_dir / "eval.json", out_dir / "scaling.png"


@contextlib.contextmanager
def _moving_in(out_dir: Path):
    """Holds ``out_dir/.report.lock`` while a report's files move in, so that two evaluations writing one folder at
    once leave one whole set, not a mix. A lock file of its own: a run's ``.lock`` is held by its training process
    (``lock.workdir_lock``), which may be the one writing the report. Where the filesystem has no locks the
    files still move in one by one, each whole."""
    fd = os.open(out_dir / REPORT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)  # a few renames: a waiter waits milliseconds
        yield
    finally:
        os.close(fd)  # releases the lock


def as_json(value):
    """``value`` (nested dicts and lists) as eval.json holds it: NaN and infinities as None (JSON has no such
    numbers), tuples as lists."""
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_samples(pool: dict, records: list[dict], conventions: testtime.Conventions, path) -> Path:
    """``eval_samples.jsonl``: one line per completion (problem index and id, sample index, prompt, text, answer,
    reward, correctness, p(Yes) normalised over {Yes, No} as eval.json's ``verifier_p_yes`` and samples.jsonl have
    it, the raw p(Yes), the convention's score, tokens, whether it stopped); strict JSON (a non-finite value as
    null); ``write_report`` moves it into place."""
    path = Path(path)
    score = conventions.scores(pool["yes_logp"], pool["no_logp"])
    p_yes = testtime.Conventions(score="normalized").scores(pool["yes_logp"], pool["no_logp"])
    with open(path, "w") as out:
        for i, record in enumerate(records):
            for j in range(pool["correct"].shape[1]):
                out.write(json.dumps(as_json({
                    "problem": i, "id": record.get("id"), "sample": j, "prompt": record["prompt"],
                    "completion": pool["texts"][i, j],
                    "answer": pool["answers"][i, j], "gold": record.get("gold"),
                    "reward": float(pool["rewards"][i, j]), "correct": bool(pool["correct"][i, j]),
                    "p_yes": float(p_yes[i, j]), "p_yes_raw": float(np.exp(pool["yes_logp"][i, j])),
                    "score": float(score[i, j]), "tokens": int(pool["lengths"][i, j]),
                    "finished": bool(pool["finished"][i, j])}), allow_nan=False) + "\n")
    return path
