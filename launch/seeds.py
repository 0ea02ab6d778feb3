"""The default run over seeds, and the paper's claims as mean ± spread: RL^V against its λ = 0 baseline.

    python launch/seeds.py --seeds 0,1,2 --workdir_root runs/seeds [--gin_file F ...] [--gin_param 'k=v' ...] \\
        [--parallel N] [--resume] [--dry_run] [--collect_only]

``--parallel N`` on a machine with GPUs gives each run its share of them and of their memory, as ``sweep.py
--target gpu`` does.

Runs ``python -m rlvjax.train`` once per seed in ``ROOT/seed_<s>`` with ``RunConfig.baseline = True`` (the λ = 0
policy from the same warm start, seed and steps) and every seed of the run set to ``s``: the model's initialisation,
the warm-start data, the training problems and the sampling (the arithmetic and file tasks' held-out problems do not
depend on the seed, so every seed is scored on the same ones; the digit task draws them from ``TaskSpec.seed``).
Then reads each run's ``eval.json`` at its headline (training) temperature and writes ``claims.md`` (the table,
printed too) and ``claims.json`` to ROOT. ``--collect_only`` tabulates runs already made.

The claims, per seed (K = the pool size, RunConfig.final_eval_samples):
  pass@1 not worse   the 95% bootstrap interval of RL^V's pass@1 minus λ0's reaches 0 or above
  wt@K >= λ0 maj@K   RL^V's verifier-weighted vote at least as accurate as λ0's majority vote at K samples
  efficiency >= 8    RL^V's weighted vote reaches λ0's best majority accuracy with >= 8x fewer samples (the paper:
                     8-32x); "best": where λ0's majority curve reaches its plateau (testtime.plateau)
  verifier better    RL^V's verifier balanced accuracy above λ0's (whose verify head is never trained by RL)
  wt@K > maj@K       RL^V's weighted vote above its own majority vote at K (the same-policy figure)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import collect as collect_sweep  # noqa: E402  (launch/ is not a package)
import sweep  # noqa: E402

from rlvjax.reports import temperature_key  # noqa: E402
from rlvjax.testtime import CURVE_ATOL  # noqa: E402

SEED_PARAMS = ("RunConfig.seed", "WarmStartConfig.seed", "ModelSpec.init_seed", "TaskSpec.seed")
EFFICIENCY = "efficiency vs λ0"
CLAIMS = ("pass@1 not worse", "wt@K >= λ0 maj@K", "efficiency >= 8", "verifier better", "wt@K > maj@K")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: pass whole numbers, e.g. 0,1,2") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) >= 2**32:
        raise ValueError(f"--seeds {text!r}: each seed once, all in [0, 2**32)")
    return seeds


def run_params(gin_params: list[str], seed: int) -> list[str]:
    """The bindings of seed ``seed``'s run: the user's, then the baseline and every seed (the script's win)."""
    return [*gin_params, "RunConfig.baseline = True", *(f"{p} = {seed}" for p in SEED_PARAMS)]


def plan(args) -> list[sweep.Job]:
    bound = [p.split("=")[0].strip() for p in args.gin_param]
    clash = sorted(set(bound) & {*SEED_PARAMS, "RunConfig.baseline"})
    if clash:
        raise ValueError(f"--gin_param binds {', '.join(clash)}; the script sets it from --seeds")
    root = Path(args.workdir_root).expanduser().absolute()  # "~/runs" was a ./~/runs
    jobs = []
    # Runs at once on a GPU machine: each its share of the devices and of their memory, as sweep.py --target gpu
    # gives them (JAX preallocates 75% of a GPU per process, so a second run on it ran out of memory).
    gpus = sweep.visible_gpus() if args.parallel > 1 else []
    cache = {"JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache")}  # what one run compiles, the next reuses
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # as sweep.py: a cache set already (shared with other work) wins
        cache = {}
    for slot, seed in enumerate(parse_seeds(args.seeds)):
        workdir = root / f"seed_{seed}"
        gin_files = args.gin_file or [sweep.DEFAULT_GIN]  # given, so that --resume also starts a run never started
        argv = [sys.executable, "-m", "rlvjax.train", *[a for f in gin_files for a in ("--gin_file", f)]]
        for binding in run_params(args.gin_param, seed):
            argv += ["--gin_param", binding]
        argv += ["--workdir", str(workdir), *(["--resume"] if args.resume else [])]
        try:
            share = sweep.gpu_env(slot % args.parallel, args.parallel, gpus) if gpus else {}
        except ValueError:  # its message names sweep.py's --gpus
            raise ValueError(f"--parallel {args.parallel} does not split this machine's {len(gpus)} GPUs "
                             f"({','.join(gpus)}) evenly; use a divisor or a multiple of {len(gpus)}, or set "
                             "CUDA_VISIBLE_DEVICES to the GPUs to use") from None
        env = {**cache, **share}
        jobs.append(sweep.Job(f"seed={seed}", argv, env, workdir / "train.log", str(workdir)))
    return jobs


def seed_row(run: Path) -> dict:
    """One seed's figures at its headline temperature, and which claims hold; one line naming the file when its
    eval.json is cut short, hand-edited or not rlvjax's."""
    try:
        return _seed_row(run, json.loads((run / "eval.json").read_text()))
    except (KeyError, TypeError, AttributeError, IndexError, json.JSONDecodeError) as e:
        raise ValueError(f"{run / 'eval.json'} is not a whole rlvjax eval.json ({type(e).__name__}: {e}); rerun the "
                         "seed with --resume to write its report again, or leave the seed out") from None


def _seed_row(run: Path, evaluation: dict) -> dict:
    t = temperature_key(evaluation["headline_temperature"])
    if "comparison" not in evaluation:
        raise ValueError(f"{run / 'eval.json'} has no RL^V-vs-lambda0 comparison; was it trained with "
                         "RunConfig.baseline = True?")
    reports, cmp = evaluation["reports"][t], evaluation["comparison"][t]
    rlv, base = reports["final"], reports["lambda0"]
    k = str(rlv["num_samples"])
    ratio = cmp["efficiency_vs_lambda0_majority"]["ratio"]
    row = {"seed": run.name.removeprefix("seed_"), "temperature": evaluation["headline_temperature"], "K": int(k),
           "pass@1 RL^V": rlv["pass@1"], "pass@1 λ0": base["pass@1"],
           "pass@1 diff": cmp["pass@1"]["difference"], "diff CI": cmp["pass@1"]["difference_ci95"],
           "maj@K λ0": base["accuracy"]["majority"][k], "maj@K RL^V": rlv["accuracy"]["majority"][k],
           "wt@K RL^V": rlv["accuracy"]["weighted"][k],
           "verifier RL^V": rlv["verifier"]["verifier_balanced_accuracy"],
           "verifier λ0": base["verifier"]["verifier_balanced_accuracy"], EFFICIENCY: ratio,
           "efficiency lower bound": bool(cmp["efficiency_vs_lambda0_majority"].get("lower_bound"))}
    row["claims"] = {
        CLAIMS[0]: row["diff CI"][1] >= 0,
        CLAIMS[1]: row["wt@K RL^V"] >= row["maj@K λ0"] - CURVE_ATOL,  # 14/96 summed two ways is one accuracy
        CLAIMS[2]: ratio is not None and ratio >= 8,
        CLAIMS[3]: row["verifier RL^V"] > row["verifier λ0"],
        CLAIMS[4]: row["wt@K RL^V"] > row["maj@K RL^V"] + CURVE_ATOL,
    }
    return row


NUMBERS = ("pass@1 RL^V", "pass@1 λ0", "pass@1 diff", "maj@K λ0", "wt@K RL^V", "maj@K RL^V", "verifier RL^V",
           "verifier λ0", EFFICIENCY)


def summary(rows: list[dict]) -> dict:
    """Over the seeds: each figure's mean and standard deviation (None for one seed); the efficiency's range (its
    ends' rows, a lower bound staying one) and how many seeds never reach λ0's best majority vote; how many seeds
    meet each claim."""
    figures = {}
    for c in NUMBERS:
        values = [r[c] for r in rows if r[c] is not None]
        if c == EFFICIENCY:
            ends = {"min": min(values), "max": max(values)} if values else {}
            figures[c] = {**{end: {"ratio": v, "lower_bound": next(r["efficiency lower bound"] for r in rows
                                                                   if r[c] == v)} for end, v in ends.items()},
                          "never": len(rows) - len(values)}
        else:
            figures[c] = {"mean": statistics.mean(values),
                          "sd": statistics.stdev(values) if len(values) > 1 else None}
    return {"seeds": len(rows), "figures": figures,
            "claims_met": {claim: sum(r["claims"][claim] for r in rows) for claim in CLAIMS}}


def table(rows: list[dict]) -> str:
    """Markdown: one line per seed, then mean ± standard deviation (efficiency: its range; "never" counts apart),
    then how many seeds meet each claim."""
    def cell(r, c):
        if r[c] is None:
            return "never"
        return (">=" if c == EFFICIENCY and r["efficiency lower bound"] else "") + f"{r[c]:.3f}"

    def end(e):  # a bound stays one
        return (">=" if e["lower_bound"] else "") + f"{e['ratio']:.2f}"

    lines = ["| seed | " + " | ".join(NUMBERS) + " |", "|---" * (len(NUMBERS) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['seed']} | " + " | ".join(cell(r, c) for c in NUMBERS) + " |")
    over = summary(rows)
    cells = []
    for c, f in over["figures"].items():
        if c == EFFICIENCY:
            cells.append((f"{end(f['min'])}–{end(f['max'])}" if "min" in f else "–")
                         + (f" ({f['never']} never)" if f["never"] else ""))
        else:  # one seed: no spread
            cells.append(f"{f['mean']:.3f} ± {'n/a' if f['sd'] is None else format(f['sd'], '.3f')}")
    lines.append("| mean ± sd | " + " | ".join(cells) + " |")
    ts = sorted({r["temperature"] for r in rows})
    lines += ["", f"{len(rows)} seeds, K = {', '.join(sorted({str(r['K']) for r in rows}))}, headline temperature "
              f"{', '.join(format(t, 'g') for t in ts)}. Seeds meeting each claim:"]
    lines += [f"- {claim}: {met} of {len(rows)}" for claim, met in over["claims_met"].items()]
    return "\n".join(lines)


def collect(root: Path, seeds: list[int]) -> list[dict]:
    """The rows of ``seeds`` (the runs of another study under the same root are left out) whose eval.json is about
    the run's exports now (a resume stopped before its report leaves the earlier one)."""
    runs = [root / f"seed_{s}" for s in seeds]
    found = [p for p in runs if (p / "eval.json").is_file()]
    stale = {p: why for p in found if (why := collect_sweep.stale(p, p / "eval.json"))}
    done = [p for p in found if p not in stale]
    if not done:
        raise FileNotFoundError(f"no current eval.json in {', '.join(p.name for p in runs)} under {root}; run this "
                                "script without --collect_only first" + (" (with --resume)" if stale else ""))
    for run, why in stale.items():
        print(f"seeds: warning: {run / 'eval.json'} is not about the run's exports now ({why}); left out: rerun "
              "with --resume", file=sys.stderr)
    missing = sorted(set(runs) - set(found))
    if missing:
        print(f"seeds: warning: no eval.json in {', '.join(p.name for p in missing)}; left out", file=sys.stderr)
    return [seed_row(p) for p in done]


def write(rows: list[dict], root: Path) -> str:
    """claims.json (the rows and their summary) and claims.md (the table), each written whole."""
    from rlvjax import atomic

    text = table(rows)
    atomic.write_text(root / "claims.json", json.dumps({"runs": rows, "summary": summary(rows)}, indent=2))
    atomic.write_text(root / "claims.md", text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    from rlvjax import cli

    p = cli.ArgumentParser("seeds", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--workdir_root", required=True, help="one sub-directory seed_<s> per run")
    p.add_argument("--gin_file", action="append", default=[], help="gin config (repeatable; default: the built-in)")
    p.add_argument("--gin_param", action="append", default=[], help="gin binding for every run (repeatable)")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (each uses every core it is given)")
    p.add_argument("--resume", action="store_true", help="continue each run from its latest checkpoint")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--collect_only", action="store_true", help="only tabulate the --seeds runs under --workdir_root")
    args = p.parse_args(argv)
    sweep.check_root(args.workdir_root)
    root = Path(args.workdir_root).expanduser()  # as plan() writes the runs: "--workdir_root=~/x" keeps its "~"
    if not args.collect_only:
        jobs = plan(args)
        if args.parallel < 1:
            raise ValueError(f"--parallel {args.parallel} must be >= 1")
        # each run as it will start: with the baseline on (a config only the lambda = 0 baseline refuses failed
        # every seed's run after its training) and its seeds
        run = sweep.check_config(args.gin_file, {f"seed={s}": run_params(args.gin_param, s)
                                                 for s in parse_seeds(args.seeds)}, args.resume)
        if not (run.final_eval_samples and run.export_final):  # it trained every seed, then found no eval.json
            raise ValueError("RunConfig.final_eval_samples = 0 or export_final = False: the runs would write no "
                             "eval.json to compare; keep the end-of-run report on")
        if not args.resume:  # in a dry run too: it prints what the real command would run, and that refuses
            sweep.check_workdirs(jobs)
        if args.dry_run:
            print("\n".join(sweep.describe(job) for job in jobs))
            return 0
        if sweep.report_failures("seeds", jobs, sweep.execute(jobs, args.parallel)):
            return 1
    print(write(collect(root, parse_seeds(args.seeds)), root))
    print(f"\ntable: {root / 'claims.md'}\njson:  {root / 'claims.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError) as e:
        print(f"seeds: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    except sweep.Interrupted as e:  # the running runs got the signal and have ended
        print(f"seeds: {e}: the runs that were going have stopped (their lines above say how); rerun with --resume "
              "to continue", file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:  # outside the runs: before them, or while collecting
        print("seeds: interrupted; rerun with --resume to continue the runs", file=sys.stderr)
        sys.exit(130)
