"""Collects a λ sweep: one row per run of ``launch/sweep.py``, sorted by λ (the paper's ablation of the
verification weight).

    python launch/collect.py --workdir_root ROOT [--out DIR]

Each sub-directory of ROOT that holds an evaluation of its trained policy is a run: ``eval.json`` (the end-of-run
report ``python -m rlvjax.train`` writes when RunConfig.final_eval_samples > 0), else ``eval/final/eval.json``
(``python -m rlvjax.evaluate --workdir RUN``); its entry ``final`` is used. λ is the ``rl.lambda_verify`` of the config
stored with the run's latest checkpoint, or, without checkpoints, read from a directory name ``lambda_<λ>``.

Prints a markdown table (λ, K, pass@1, majority@K, weighted@K, best-of-N@K, verifier balanced accuracy, AUROC, and,
when the sweep holds a λ = 0 run, every run against it as the paper compares: pass@1 difference, weighted vote minus
λ0's majority vote at K and averaged over N, samples needed to match λ0's majority) and writes ``sweep.json`` (the
rows) and ``sweep.png`` (verifier and weighted-vote accuracy vs λ) to DIR (default ROOT).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

EVAL_FILES = ("eval.json", "eval/final/eval.json")  # the end-of-run report first, then rlvjax.evaluate's default
POLICY = "final"
RUN_NAME = re.compile(r"lambda_([0-9]+(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?)")  # "lambda_0.1_2" is no λ (float: 0.12)
COLUMNS = (("pass@1", "pass@1"), ("majority", "maj@K"), ("weighted", "wt@K"), ("best_of_n", "BoN@K"),
           ("verifier_balanced_accuracy", "ver. bal. acc"), ("verifier_auroc", "AUROC"),
           ("pass@1_minus_lambda0", "pass@1 − λ0"), ("weighted_minus_lambda0_majority", "wt@K − λ0 maj@K"),
           ("mean_lead_over_n", "mean over N of wt − λ0 maj"), ("efficiency_vs_lambda0", "eff. vs λ0 maj"))


def lambda_from_name(run: Path) -> float | None:
    match = RUN_NAME.fullmatch(run.name)
    return float(match.group(1)) if match else None


def run_lambda(run: Path) -> float:
    """``rl.lambda_verify`` of the config saved with the latest checkpoint; the directory name when none was saved."""
    from rlvjax.checkpoint import Checkpointer

    named = lambda_from_name(run)
    if (run / "checkpoints").is_dir():
        with Checkpointer(run / "checkpoints", read_only=True) as checkpoints:  # a live or read-only run too
            if checkpoints.latest_step() is not None:
                stored = float(checkpoints.read_config()["rl"]["lambda_verify"])
                if named is not None and named != stored:
                    print(f"collect: warning: {run.name} was trained with lambda_verify={stored:g} (its checkpoint "
                          f"config), not {named:g} as its name says; using {stored:g}", file=sys.stderr)
                return stored
    if named is None:
        raise ValueError(f"{run} has no checkpoint config to read lambda_verify from and its name is not "
                         "lambda_<value>")
    return named


def headline_reports(evaluation: dict) -> dict:
    """The policies' reports at the headline temperature of an ``eval.json``."""
    from rlvjax.reports import temperature_key

    return evaluation["reports"][temperature_key(evaluation["headline_temperature"])]


def stale(run: Path, eval_path: Path) -> str | None:
    """Why the report at ``eval_path`` is not about the run's exports now (``outputs.stale_report``), else None (one
    that does not read back is :func:`summarize`'s to name)."""
    from rlvjax.outputs import stale_report

    try:
        evaluation = json.loads(eval_path.read_text())
    except (OSError, ValueError):
        return None
    return stale_report(run, evaluation) if isinstance(evaluation, dict) else None


def summarize(run: Path, eval_path: Path) -> dict:
    """One row: the trained policy's numbers at the pool size K (headline temperature), and where they came from."""
    try:
        reports = headline_reports(json.loads(eval_path.read_text()))
        if POLICY not in reports:
            raise ValueError(f"{eval_path} has no '{POLICY}' policy (it has {sorted(reports)}); evaluate the trained "
                             f"policy with python -m rlvjax.evaluate --workdir {run}")
        return _row(run, eval_path, reports[POLICY])
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:  # cut short, hand-edited, not rlvjax's
        raise ValueError(f"{eval_path} is not a whole rlvjax eval.json ({type(e).__name__}: {e}); rerun python -m "
                         f"rlvjax.evaluate --workdir {run}, or move the run out of the root") from None


def _row(run: Path, eval_path: Path, rep: dict) -> dict:
    k, acc, ver = rep["num_samples"], rep["accuracy"], rep["verifier"]
    for name, value in (("pass@1", rep["pass@1"]), *((f"{s} curve", v) for s in ("majority", "weighted")
                                                        for v in acc[s].values())):
        if not isinstance(value, (int, float)):
            raise TypeError(f"{name} is {value!r}, not a number")
    return {"lambda": run_lambda(run), "run": run.name, "num_samples": k, "num_problems": rep["num_problems"],
            "pass@1": rep["pass@1"], **{s: acc[s][str(k)] for s in ("majority", "weighted", "best_of_n")},
            "verifier_accuracy": ver["verifier_accuracy"],
            "verifier_balanced_accuracy": ver["verifier_balanced_accuracy"], "verifier_auroc": ver["verifier_auroc"],
            "calibration_error": ver.get("calibration_error"),
            "compute_efficiency_weighted_vs_majority": rep["compute_efficiency_weighted_vs_majority"]["ratio"],
            "majority_plateau": rep.get("majority_plateau"),
            "temperature": rep["temperature"], "ns": rep["ns"], "conventions": rep.get("conventions"),
            "curves": {s: [acc[s][str(n)] for n in rep["ns"]] for s in ("majority", "weighted")},
            "eval_json": str(eval_path)}


def collect(root) -> list[dict]:
    """The sweep's rows, sorted by λ (then run name)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--workdir_root {root} is not a directory")
    rows, missing, stale_runs, unreadable = [], [], [], []
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        found, eval_path = [run / f for f in EVAL_FILES if (run / f).is_file()], None
        for path in found:  # the first report about the run's exports now
            if not (why := stale(run, path)):
                eval_path = path
                break
            stale_runs.append(run.name)
            print(f"collect: warning: {path} is not about the run's exports now ({why}); left out: rerun the run "
                  f"with --resume, or python -m rlvjax.evaluate --workdir {run}", file=sys.stderr)
        if eval_path is not None:
            try:
                rows.append(summarize(run, eval_path))
            except ValueError as e:  # every such file named at once, not one per attempt
                unreadable.append(str(e))
        elif not found and ((run / "checkpoints").is_dir() or lambda_from_name(run) is not None):
            missing.append(run.name)
    if unreadable:
        raise ValueError(" Also: ".join(unreadable))
    if not rows and stale_runs:  # it said "train with RunConfig.final_eval_samples > 0" to runs that had
        names = ", ".join(sorted(set(stale_runs)))
        raise FileNotFoundError(f"no current eval.json under {root}: the reports of {names} are about earlier "
                                "exports; rerun those runs with --resume to report on their exports now")
    if not rows:
        raise FileNotFoundError(
            f"no eval.json in any run under {root} (looked for <run>/{' and <run>/'.join(EVAL_FILES)}); train with "
            "RunConfig.final_eval_samples > 0, or run python -m rlvjax.evaluate --workdir <run>")
    if missing:
        print(f"collect: warning: no eval.json in {', '.join(missing)} (failed or unfinished?); left out",
              file=sys.stderr)
    return against_baseline(sorted(rows, key=lambda r: (r["lambda"], r["run"])))


def against_baseline(rows: list[dict]) -> list[dict]:
    """Adds the paper's comparison with the λ = 0 run (the first one, when the sweep has one) to every row: pass@1
    minus λ0's, the weighted vote's lead over λ0's majority vote at K and on average over N = 1..K (log-spaced), and
    the samples the weighted vote needs to reach λ0's best majority vote, read where its curve reaches its plateau
    (``efficiency vs λ0``: ``Efficiency.as_dict``, its ratio None when never; the whole entry None when the run is not
    comparable with λ0's)."""
    from rlvjax import testtime
    from rlvjax.reports import majority_plateau

    zeros = [r["run"] for r in rows if r["lambda"] == 0]
    base = next((r for r in rows if r["lambda"] == 0), None)
    if len(zeros) > 1:
        print(f"collect: warning: {len(zeros)} runs have λ = 0 ({', '.join(zeros)}); every row is compared with "
              f"{zeros[0]}", file=sys.stderr)
    for r in rows:
        # the voting conventions too: a report with raw scores or string grouping measures something else
        differ = [] if base is None else [k for k in ("ns", "temperature", "num_problems", "conventions")
                                          if r[k] != base[k]]
        same = base is not None and not differ
        if base is not None and not same:
            print(f"collect: warning: {r['run']} was evaluated otherwise than {base['run']} ("
                  + ", ".join(f"{k} {r[k]} vs {base[k]}" for k in differ) + "); no comparison with it",
                  file=sys.stderr)
        if not same:
            r.update(dict.fromkeys(("pass@1_minus_lambda0", "weighted_minus_lambda0_majority", "mean_lead_over_n",
                                    "efficiency_vs_lambda0")))
            continue
        lead = [w - m for w, m in zip(r["curves"]["weighted"], base["curves"]["majority"])]
        eff = testtime.compute_efficiency(r["ns"], r["curves"]["weighted"], base["curves"]["majority"],
                                          n_target=majority_plateau(base, r["ns"]))
        r.update({"pass@1_minus_lambda0": r["pass@1"] - base["pass@1"], "weighted_minus_lambda0_majority": lead[-1],
                  "mean_lead_over_n": sum(lead) / len(lead), "efficiency_vs_lambda0": eff.as_dict()})
    return rows


def labels(rows: list[dict]) -> list[str]:
    """Each row's λ, short ("0.1"), or exact where two λs read the same short (0.1234567 and 0.1234568); a λ that
    several runs share is told apart by the run's name."""
    short = [f"{r['lambda']:g}" for r in rows]

    def label(i: int) -> str:
        clash = any(s == short[i] and q["lambda"] != rows[i]["lambda"] for s, q in zip(short, rows))
        return repr(float(rows[i]["lambda"])) if clash else short[i]

    text = [label(i) for i in range(len(rows))]
    return [t + (f" ({r['run']})" if text.count(t) > 1 else "") for t, r in zip(text, rows)]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| λ | K | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---:" * (len(COLUMNS) + 2) + "|"]
    for label, r in zip(labels(rows), rows):
        lines.append(f"| {label} | {r['num_samples']} | " + " | ".join(_cell(r[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Verifier balanced accuracy and weighted-vote accuracy vs λ, pass@1 for reference; λs evenly spaced."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [_float(r["verifier_balanced_accuracy"]) for r in rows], marker="o", label="verifier balanced accuracy")
    ax.plot(x, [_float(r["weighted"]) for r in rows], marker="s", label="weighted vote @K")
    ax.plot(x, [_float(r["pass@1"]) for r in rows], "k--", marker=".", label="pass@1")
    ax.set_xticks(x, labels(rows))
    ax.set_xlabel("λ (verification loss weight)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ks = sorted({r["num_samples"] for r in rows})
    ax.set_title(f"RL$^V$ λ sweep (K = {', '.join(map(str, ks))})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def write(rows: list[dict], out) -> tuple[Path, Path]:
    """``sweep.json`` and ``sweep.png`` in ``out``; each appears whole or not at all."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "sweep.json", out / "sweep.png"
    tmp = json_path.with_name(".sweep.json.tmp")
    # NaN (e.g. AUROC when the pool holds one class only) is not JSON; null says "undefined" to any reader.
    tmp.write_text(json.dumps({"runs": [{k: _json(v) for k, v in r.items()} for r in rows]}, indent=2,
                              allow_nan=False))
    os.replace(tmp, json_path)
    plot(rows, png_path)
    return json_path, png_path


def _float(value) -> float:
    return float("nan") if value is None else float(value)


def _json(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _cell(value) -> str:
    if isinstance(value, dict):  # an efficiency; ">=": the vote is there at the smallest N, so it may need fewer
        return "never" if value["ratio"] is None else f"{'>=' if value['lower_bound'] else ''}{value['ratio']:.3f}"
    value = _float(value)
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def main(argv: list[str]) -> None:
    from rlvjax import cli

    p = cli.ArgumentParser("collect", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workdir_root", required=True, help="the sweep's root: one sub-directory per run")
    p.add_argument("--out", default=None, help="where sweep.json and sweep.png go (default: --workdir_root)")
    args = p.parse_args(argv)
    args.workdir_root = os.path.expanduser(args.workdir_root)  # "~/runs" read a ./~/runs
    args.out = args.out and os.path.expanduser(args.out)
    out = Path(args.out or args.workdir_root)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; pass a directory for sweep.json and sweep.png")
    rows = collect(args.workdir_root)
    json_path, png_path = write(rows, args.out or args.workdir_root)
    print(markdown_table(rows))
    print(f"\njson: {json_path}\nplot: {png_path}")


if __name__ == "__main__":
    from rlvjax import cli

    cli.run_main("collect", main)(sys.argv[1:])
