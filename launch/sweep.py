"""A λ sweep of RL^V: one ``python -m rlvjax.train`` run per ``RLConfig.lambda_verify``, in ``ROOT/lambda_<λ>``.

    python launch/sweep.py --lambdas 0,0.1,0.5,1 --gin_file configs/default.gin --workdir_root runs/sweep \\
        --target local|gpu|tpu_vm [--gin_param 'k=v' ...] [--parallel N] [--resume] [--dry_run]

Targets:
  local   the runs as subprocesses of this machine, N at a time (default 1); each writes ``ROOT/lambda_<λ>/train.log``.
          They share JAX's persistent compilation cache (ROOT/jax_cache): a run compiles little that an earlier
          one has not.
  gpu     as local, with JAX's GPU settings in each run's environment: JAX_PLATFORMS=cuda (no silent CPU fallback),
          a memory fraction sized to the runs sharing a GPU, and, with --parallel N, each run pinned to its share of
          --gpus (CUDA_VISIBLE_DEVICES) so that N runs use disjoint devices.
  tpu_vm  one ``gcloud compute tpus tpu-vm ssh NAME --worker=all --command ...`` per λ, in sequence: every host of
          the slice runs the same program (more than one host needs a --workdir_root that all of them share, e.g.
          a mounted bucket, and the MeshConfig.coordinator_* bindings). The repository must already be at
          --remote_dir on every worker.
          Logs are gcloud's output, saved under --log_dir on this machine (default: sweep_logs/<the root's
          path>). A Ctrl-C or SIGTERM here reaches the local gcloud only: ssh without a terminal does not pass it
          on, so the workers' run may go on (or fail at its next write to the closed connection). Before a
          --resume, stop it on the workers: gcloud compute tpus tpu-vm ssh NAME --worker=all --command
          'pkill -TERM -f rlvjax.train' (it saves at its next step and stops).

Each run trains no λ = 0 baseline of its own (RunConfig.baseline = False): the sweep's λ = 0 run is that baseline.
--dry_run prints every command (with its environment) and runs nothing. A failed run stops the sweep from starting
more; the runs already going finish; the exit status is 1 and each failure is named with its log. Afterwards,
``python launch/collect.py --workdir_root ROOT`` tabulates and plots the runs' eval.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import posixpath
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

LAMBDA_PARAM = "RLConfig.lambda_verify"
GPU_MEMORY_FRACTION = 0.9  # of a device, split between the runs that share it
# Flags that mean something for some targets only, and those targets.
TARGET_FLAGS = {"gpus": ("gpu",), "compilation_cache": ("local", "gpu"),
                **{n: ("tpu_vm",) for n in ("tpu_name", "zone", "project", "remote_dir", "remote_python", "log_dir")}}


@dataclasses.dataclass(frozen=True)
class Job:
    name: str  # "lambda=0.5"
    argv: list[str]
    env: dict[str, str]  # added to this process's environment
    log: Path
    workdir: str


def parse_lambdas(text: str) -> list[str]:
    """``"0,0.1,0.5,1"`` -> ``["0", "0.1", "0.5", "1"]``: each value written the short way (it names a directory)."""
    labels = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--lambdas: {item.strip()!r} is not a number; pass e.g. 0,0.1,0.5,1") from None
        if not 0 <= value < math.inf:  # also NaN
            raise ValueError(f"--lambdas: lambda_verify={item.strip()} must be a finite number >= 0")
        value += 0.0  # -0 is 0
        short = format(value, "g")
        labels.append(short if float(short) == value else repr(value))  # the exact value: it is the binding too
    duplicates = sorted({x for x in labels if labels.count(x) > 1}, key=float)
    if duplicates:
        raise ValueError(f"--lambdas: {', '.join(duplicates)} given more than once")
    return labels


def run_dir(root: str, label: str) -> str:
    # posixpath, not pathlib: the root is passed on as given.
    return posixpath.join(root, f"lambda_{label}")


DEFAULT_GIN = "configs/default.gin"  # rlvjax.train's default, found in its package wherever the run starts


def train_argv(python: str, gin_files: list[str], gin_params: list[str], label: str, workdir: str,
               resume: bool) -> list[str]:
    """The run's command. Its gin files are always given (rlvjax.train's default when none are), so that with
    --resume a run that never started starts (``--resume`` alone wants a run's stored config) and one that did is
    checked against its checkpoint. A sweep's runs train no lambda = 0 baseline of their own: λ = 0 is one of them."""
    argv = [python, "-m", "rlvjax.train"]
    for f in gin_files or [DEFAULT_GIN]:
        argv += ["--gin_file", f]
    for p in run_params(gin_params, label):
        argv += ["--gin_param", p]
    return argv + ["--workdir", workdir] + (["--resume"] if resume else [])


def run_params(gin_params: list[str], label: str) -> list[str]:
    """The bindings of the run of λ = ``label``: no baseline of its own, the user's, the sweep's λ last (it wins)."""
    return ["RunConfig.baseline = False", *gin_params, f"{LAMBDA_PARAM}={label}"]


def gpu_env(slot: int, parallel: int, gpus: list[str]) -> dict[str, str]:
    """JAX settings for run slot ``slot`` of ``parallel``: its share of ``gpus`` (all of them when unknown)."""
    env = {"JAX_PLATFORMS": "cuda"}
    if gpus and parallel == 1:  # the devices asked for, and no others
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        sharing = 1
    elif gpus:
        if len(gpus) % parallel and parallel % len(gpus):
            raise ValueError(f"--parallel {parallel} does not split --gpus {','.join(gpus)} evenly; use a divisor "
                             f"or a multiple of {len(gpus)}")
        if parallel <= len(gpus):  # disjoint groups of devices
            share = len(gpus) // parallel
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[slot * share:(slot + 1) * share])
            sharing = 1
        else:  # several runs per device: split its memory
            env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            sharing = parallel // len(gpus)
    else:
        sharing = parallel  # unknown devices: every run sees all of them
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{GPU_MEMORY_FRACTION / sharing:.2f}"
    return env


def parse_gpus(text: str) -> list[str]:
    """``--gpus`` as device ids: each once, none empty ("0,0" gave two runs one device, "0,1," a run none)."""
    gpus = [g.strip() for g in text.split(",")]
    if not all(gpus) or len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus {text!r}: name each device id once, comma-separated, e.g. 0,1,2,3")
    return gpus


def visible_gpus() -> list[str]:
    """The GPU ids this machine shows (CUDA_VISIBLE_DEVICES if set, else nvidia-smi); [] when unknown or hidden
    (CUDA_VISIBLE_DEVICES set and empty: runs on the CPU; nvidia-smi's list was used instead)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def remote_path(path: str) -> str:
    """``path`` quoted for the workers' shell, a leading ``~`` left to it (quoted, ``cd '~/code'`` failed)."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + ("/" + shlex.quote(path[2:]) if path[2:] else "")
    return shlex.quote(path)


def tpu_argv(args, command: list[str]) -> list[str]:
    python, *rest = command
    remote = f"cd {remote_path(args.remote_dir or 'rlvjax')} && {remote_path(python)} {shlex.join(rest)}"
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu_name, f"--zone={args.zone}",
            f"--project={args.project}", "--worker=all", "--command", remote]


def plan(args) -> list[Job]:
    """The sweep's commands, one per λ, in the order given."""
    labels = parse_lambdas(args.lambdas)
    if any(p.replace(" ", "").startswith(LAMBDA_PARAM + "=") for p in args.gin_param):
        raise ValueError(f"--gin_param binds {LAMBDA_PARAM}; the sweep sets it from --lambdas")
    if args.parallel < 1:
        raise ValueError(f"--parallel {args.parallel} must be >= 1")
    for name, targets in TARGET_FLAGS.items():  # a flag that would do nothing is a mistake worth naming
        if getattr(args, name) is not None and args.target not in targets:
            raise ValueError(f"--{name} does nothing for --target {args.target} (only for {' and '.join(targets)})")
    jobs = []
    if args.target == "tpu_vm":
        missing = [f"--{n}" for n in ("tpu_name", "zone", "project") if not getattr(args, n)]
        if missing:
            raise ValueError(f"--target tpu_vm needs {', '.join(missing)}")
        if args.parallel != 1:
            raise ValueError("--target tpu_vm runs one λ at a time over the whole slice; drop --parallel")
        for label in labels:
            workdir = run_dir(args.workdir_root, label)
            command = train_argv(args.remote_python or "python3", args.gin_file, args.gin_param, label, workdir,
                                 args.resume)
            jobs.append(Job(f"lambda={label}", tpu_argv(args, command), {},
                            Path(args.log_dir or default_log_dir(args.workdir_root)) / f"lambda_{label}.log",
                            workdir))
        return jobs
    gpus = (parse_gpus(args.gpus) if args.gpus else visible_gpus()) if args.target == "gpu" else []
    if args.target == "gpu" and not gpus and "CUDA_VISIBLE_DEVICES" in os.environ:
        raise ValueError("--target gpu with CUDA_VISIBLE_DEVICES set and empty, which hides every GPU from the runs; "
                         "unset it, or set it (or --gpus) to the devices to use, e.g. 0,1")
    # the runs may start in another working directory than ours ("~/runs": ours is their home too)
    root = Path(args.workdir_root).expanduser().absolute()
    cache = str(root / "jax_cache") if args.compilation_cache is None else args.compilation_cache
    # The runs differ in λ only, so most of what one compiles (sampler, warm start, eval) the next one reuses.
    shared = {"JAX_COMPILATION_CACHE_DIR": cache} if cache and "JAX_COMPILATION_CACHE_DIR" not in os.environ else {}
    # '' turns the cache off in each run too (RunConfig.compilation_cache_dir would have it on)
    params = [*args.gin_param, *(["RunConfig.compilation_cache_dir = None"] if cache == "" else [])]
    for i, label in enumerate(labels):
        workdir = str(root / f"lambda_{label}")
        env = {**shared, **(gpu_env(i % args.parallel, args.parallel, gpus) if args.target == "gpu" else {})}
        argv = train_argv(sys.executable, args.gin_file, params, label, workdir, args.resume)
        jobs.append(Job(f"lambda={label}", argv, env, Path(workdir) / "train.log", workdir))
    return jobs


def default_log_dir(root: str) -> str:
    """tpu_vm's default --log_dir, named after the root: two sweeps' logs of the same λ appended to one file."""
    return posixpath.join("sweep_logs", re.sub(r"[^A-Za-z0-9._-]+", "_", root).strip("_") or "root")


def check_root(root: str) -> None:
    """One line for a root no run could use: empty (the runs in the working directory), a URL (each run would
    refuse it, after the launch) or a file."""
    if not root.strip():
        raise ValueError("--workdir_root is empty; pass the directory the runs go in, e.g. --workdir_root runs/sweep")
    if "://" in root:  # as rlvjax.config.check_local; Path(root).absolute() would make it a local gs:/...
        raise ValueError(f"--workdir_root {root} is a URL; runs are written to a local or mounted filesystem (a "
                         "bucket: mount it, e.g. with gcsfuse, and pass the mount's path)")
    if Path(root).expanduser().exists() and not Path(root).expanduser().is_dir():
        raise NotADirectoryError(f"--workdir_root {root} is a file; pass a directory for the runs")


def check_config(gin_files: list[str], runs: dict[str, list[str]], resume: bool):
    """Parse and check each run's config here, as its run will (building one starts no JAX backend), so that a
    misspelt file, binding or value fails now and not once per run, and one that only some runs refuse (a
    micro-batch that does not divide λ = 0's update rows, which hold no partial solutions) fails now and not in the
    middle of the sweep. ``runs``: each run's bindings by its name. Without ``resume`` the runs are first launches,
    checked as ``rlvjax.train`` checks one (``Config.check_consistent``). Returns the first run's ``RunConfig``."""
    import gin

    from rlvjax import cli
    from rlvjax.config import GIN_FIELDS, Config

    package = str(Path(cli.__file__).parent)  # where rlvjax.train finds configs/, from any directory
    configs, errors = [], {}
    for name, params in runs.items():
        gin.clear_config()
        try:  # files and `include 'configs/base.gin'` resolved as rlvjax.train resolves them; errors in one line
            cli.parse_gin(gin_files or [DEFAULT_GIN], params, search_paths=(package,), fields=GIN_FIELDS)
            config = Config.from_gin()
            if not resume:
                config.check_consistent()
            configs.append(config.run)
        except ValueError as e:
            errors[name] = e
        finally:
            gin.clear_config()
    if errors:
        name, error = next(iter(errors.items()))
        raise error if len(errors) == len(runs) else ValueError(f"the run of {name}: {error}")
    return configs[0]


def check_workdirs(jobs: list[Job]) -> None:
    """A run directory with a saved step would be trained over; ask for --resume or a fresh root. (An empty
    checkpoints/ is a run that stopped before its first save, which rlvjax.train starts afresh.)"""
    taken = [j.workdir for j in jobs if any(p.name.isdigit() for p in (Path(j.workdir) / "checkpoints").glob("*"))]
    if taken:
        raise ValueError(f"{', '.join(taken)} already hold checkpoints; pass --resume to continue them or choose "
                         "another --workdir_root")


def describe(job: Job) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in job.env.items())
    return f"{env + ' ' if env else ''}{shlex.join(job.argv)}"


STOPPED = "stopped"  # execute's status of a run that a SIGTERM or Ctrl-C stopped with its state saved
# How rlvjax.train's last line says it stopped, exit 0: with its state saved, or while it started (nothing written)
STOPPED_LINES = ("rerun with --resume", "rerun with the same command")
# Signals this launcher passes on to its running jobs: each job runs in its own process group, so a Ctrl-C at the
# terminal reaches it once, through here (and a second Ctrl-C stops it at once, as it does rlvjax.train alone); a
# closed terminal's SIGHUP asks it to save and stop.
FORWARDED = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGTERM, signal.SIGHUP: signal.SIGTERM}


class Interrupted(Exception):
    """A signal stopped the launcher; the jobs that were running got it and have ended (they save their state)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def execute(jobs: list[Job], parallel: int) -> list[int | str | None]:
    """Run the jobs, ``parallel`` at a time (job i in slot i % parallel), each appending to its log; returns each
    one's exit status (``STOPPED`` for a run stopped by a signal with its state saved, ``"not started: ..."`` for
    one that could not be launched), None for those not started after a failure.

    After a failure no further job starts; jobs already running finish (their checkpoints stay resumable). A
    SIGINT, SIGTERM or SIGHUP is passed on to the running jobs (:data:`FORWARDED`); no further job starts, and once
    the running ones have ended (a run saves its state first) this raises :class:`Interrupted`.
    """
    statuses: list[int | str | None] = [None] * len(jobs)
    failures: list[Job] = []
    lock = threading.Lock()
    running: dict[int, subprocess.Popen] = {}
    received: list[int] = []

    def run_slot(slot: int) -> None:
        for i in range(slot, len(jobs), parallel):
            job = jobs[i]
            with lock:
                if failures or received:
                    return
                print(f"[{job.name}] start, log: {job.log}", flush=True)
            start = time.perf_counter()
            try:
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log, "a", encoding="utf-8") as log:  # a resumed run's earlier output stays above
                    log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {describe(job)}\n")
                    log.flush()
                    with lock:  # a signal from here on is passed on to it
                        if received:
                            return
                        running[i] = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT,
                                                      stdin=subprocess.DEVNULL, env={**os.environ, **job.env},
                                                      process_group=0)
                    status = running[i].wait()
                    with lock:
                        del running[i]
            except OSError as e:  # no gcloud, a root that is a file: the run failed to start (the thread goes on)
                status = f"not started: {e}"
            if status == 0 and stopped(job.log):
                status = STOPPED  # rlvjax.train exits 0 when a SIGTERM or Ctrl-C stopped it with its state saved
            with lock:
                took = time.perf_counter() - start
                statuses[i] = status
                if status == 0:
                    print(f"[{job.name}] done in {took:.0f} s", flush=True)
                elif status == STOPPED:
                    failures.append(job)
                    print(f"[{job.name}] stopped (SIGTERM or Ctrl-C) after {took:.0f} s, its state saved", flush=True)
                elif received:  # a second Ctrl-C, or a run that ends on the signal: its log says what it kept
                    failures.append(job)
                    print(f"[{job.name}] interrupted ({failure(status)}) after {took:.0f} s; its log says what it "
                          f"kept: {job.log}", flush=True)
                else:
                    failures.append(job)
                    print(f"[{job.name}] FAILED ({failure(status)}) after {took:.0f} s, log: {job.log}", flush=True)

    def forward(signum, frame) -> None:
        with lock:
            received.append(signum)
            for process in running.values():
                process.send_signal(FORWARDED[signum])

    # a signal inherited as ignored stays so (nohup: closing the terminal must not stop the runs)
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        threads = [threading.Thread(target=run_slot, args=(slot,)) for slot in range(min(parallel, len(jobs)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: not set from Python
    if received:
        raise Interrupted(received[0])
    return statuses


def failure(status: int | str) -> str:
    """How a failed job's status reads: "failed with exit status 2", or "not started: <why>"."""
    return status if isinstance(status, str) else f"failed with exit status {status}"


def stopped(log: Path) -> bool:
    """Whether the run's last message (progress bars aside: one left open follows the message) says rlvjax.train
    stopped with its state saved."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")[-4096:]
    except OSError:
        return False
    lines = [line[line.rindex("rlvjax.train:"):] if "rlvjax.train:" in line else line  # a message printed after an
             for line in text.replace("\r", "\n").split("\n")]  # open bar shares its line
    messages = [line for line in lines if line.strip() and "%|" not in line]
    return bool(messages) and any(line in messages[-1] for line in STOPPED_LINES)


def report_failures(prog: str, jobs: list[Job], statuses: list[int | str | None]) -> bool:
    """Says on stderr which runs failed (with their logs' last lines), were stopped, or were not started after a
    failure; returns whether any of them is not done."""
    failed = [(job, status) for job, status in zip(jobs, statuses) if status]
    for job, status in failed:
        if status == STOPPED:
            print(f"{prog}: run {job.name} was stopped with its state saved; rerun with --resume", file=sys.stderr)
            continue
        print(f"{prog}: error: run {job.name} {failure(status)}; log: {job.log}\n"
              f"--- last lines of {job.log} ---\n{tail(job.log)}", file=sys.stderr)
    not_run = [job.name for job, status in zip(jobs, statuses) if status is None]
    if failed and not_run:
        print(f"{prog}: not started after the failure: {', '.join(not_run)}; rerun with --resume", file=sys.stderr)
    return bool(failed)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def parser() -> argparse.ArgumentParser:
    from rlvjax import cli

    p = cli.ArgumentParser("sweep", description=__doc__.split("\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--lambdas", required=True, help="comma-separated RLConfig.lambda_verify values, e.g. 0,0.1,0.5,1")
    p.add_argument("--gin_file", action="append", default=[], help="gin config (repeatable; default: the built-in)")
    p.add_argument("--gin_param", action="append", default=[], help="gin binding for every run (repeatable)")
    p.add_argument("--workdir_root", required=True, help="one sub-directory lambda_<λ> per run")
    p.add_argument("--target", choices=("local", "gpu", "tpu_vm"), default="local")
    p.add_argument("--parallel", type=int, default=1, help="local/gpu: runs at a time")
    p.add_argument("--gpus", default=None, help="gpu: device ids to share out, e.g. 0,1,2,3 (default: all visible)")
    p.add_argument("--compilation_cache", default=None,
                   help="local/gpu: JAX's persistent compilation cache shared by the runs (default: ROOT/jax_cache; "
                        "'' disables; an inherited JAX_COMPILATION_CACHE_DIR wins)")
    p.add_argument("--resume", action="store_true", help="continue each run from its latest checkpoint")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--tpu_name", help="tpu_vm: the TPU VM (slice) name")
    p.add_argument("--zone", help="tpu_vm: its zone, e.g. us-central2-b")
    p.add_argument("--project", help="tpu_vm: its Google Cloud project")
    p.add_argument("--remote_dir", help="tpu_vm: the repository on every worker (default: rlvjax, from $HOME)")
    p.add_argument("--remote_python", help="tpu_vm: the interpreter on the workers (default: python3)")
    p.add_argument("--log_dir", help="tpu_vm: where gcloud's output is saved here (default: "
                                     "sweep_logs/<the root's path>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    check_root(args.workdir_root)
    jobs = plan(args)
    if args.target != "tpu_vm":  # the config lives here; for a TPU VM it lives on the workers
        run = check_config(args.gin_file, {f"lambda={label}": run_params(args.gin_param, label)
                                             for label in parse_lambdas(args.lambdas)}, args.resume)
        if not (run.final_eval_samples and run.export_final):
            print("sweep: warning: RunConfig.final_eval_samples = 0 or export_final = False: the runs write no "
                  "eval.json, so launch/collect.py will have nothing to compare", file=sys.stderr)
        if not args.resume:  # in a dry run too: it prints what the real command would run, and that refuses
            check_workdirs(jobs)
    if args.dry_run:
        for job in jobs:
            print(describe(job))
        return 0
    if report_failures("sweep", jobs, execute(jobs, args.parallel)):
        return 1
    print(f"sweep done: {len(jobs)} runs in {args.workdir_root}; next: python launch/collect.py "
          f"--workdir_root {shlex.quote(args.workdir_root)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError) as e:  # gin: a bad binding is a ValueError, a missing file an OSError
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"sweep: error: {message}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:  # the running runs got the signal and have ended
        print(f"sweep: {e}: the runs that were going have stopped (their lines above say how); rerun with --resume "
              "to continue the sweep", file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:  # while no run was going
        print("sweep: interrupted while no run was going; rerun with --resume to continue the sweep", file=sys.stderr)
        sys.exit(130)
