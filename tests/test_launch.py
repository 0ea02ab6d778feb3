"""launch/: the sweep's commands for every target (dry runs), a real two-λ sweep on the CPU, and its collection."""

import dataclasses
import importlib.util
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rlvjax import train

REPO = Path(__file__).resolve().parents[1]
TINY = "configs/tiny_sweep.gin"


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"launch_{name}", REPO / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sweep, collect = load_script("sweep"), load_script("collect")


def dry_run(capsys, *args):
    assert sweep.main(["--lambdas", "0,0.10,1", "--gin_file", TINY, "--dry_run", *map(str, args)]) == 0
    return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def train_args(label, workdir, extra=(), gin_file=TINY):
    # The gin file is always given (so --resume starts a run that never started), and no run trains a baseline
    # of its own (the λ = 0 run is the baseline).
    return ["-m", "rlvjax.train", "--gin_file", gin_file, "--gin_param", "RunConfig.baseline = False", *extra,
            "--gin_param", f"RLConfig.lambda_verify={label}", "--workdir", str(workdir)]


def test_dry_run_local(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    commands = dry_run(capsys, "--workdir_root", tmp_path / "sweep", "--gin_param", "RunConfig.seed = 3")
    cache = f"JAX_COMPILATION_CACHE_DIR={tmp_path / 'sweep' / 'jax_cache'}"
    assert commands == [[cache, sys.executable, *train_args(label, tmp_path / "sweep" / f"lambda_{label}",
                                                            ["--gin_param", "RunConfig.seed = 3"])]
                        for label in ("0", "0.1", "1")]
    assert not (tmp_path / "sweep").exists()  # a dry run writes nothing
    # '' turns the cache off in each run as well (each run's RunConfig.compilation_cache_dir had it on)
    off = dry_run(capsys, "--workdir_root", tmp_path / "sweep", "--compilation_cache", "")
    assert off[0] == [sys.executable, *train_args("0", tmp_path / "sweep" / "lambda_0",
                                                  ["--gin_param", "RunConfig.compilation_cache_dir = None"])]


def test_configs_are_found_from_any_directory(tmp_path, capsys, monkeypatch):
    """The default and the packaged configs (and their `include 'configs/base.gin'`) resolve as rlvjax.train
    resolves them, wherever the sweep starts (they were refused outside the repository's root)."""
    monkeypatch.chdir(tmp_path)
    for gin_file in ([], ["--gin_file", "configs/experiments/rlv_grpo_math.gin"]):
        assert sweep.main(["--lambdas", "0,1", "--workdir_root", str(tmp_path / "sweep"), "--dry_run",
                           *gin_file]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2
    assert not (tmp_path / "sweep").exists()


def test_dry_run_gpu_shares_out_devices(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    commands = dry_run(capsys, "--workdir_root", tmp_path, "--target", "gpu", "--parallel", "2", "--gpus", "0,1,2,3",
                       "--compilation_cache", "")
    assert [c[:3] for c in commands] == [
        ["JAX_PLATFORMS=cuda", f"CUDA_VISIBLE_DEVICES={devices}", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.90"]
        for devices in ("0,1", "2,3", "0,1")]  # run i in slot i % 2
    assert commands[1][3:] == [sys.executable, *train_args("0.1", tmp_path / "lambda_0.1",
                                                           ["--gin_param", "RunConfig.compilation_cache_dir = None"])]
    # More runs than devices: two per device, each with half of its memory.
    commands = dry_run(capsys, "--workdir_root", tmp_path, "--target", "gpu", "--parallel", "4", "--gpus", "0,1",
                       "--compilation_cache", "")
    assert [c[1:3] for c in commands] == [[f"CUDA_VISIBLE_DEVICES={d}", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.45"]
                                          for d in "010"]
    # One run at a time still keeps to the devices asked for (it took every GPU).
    commands = dry_run(capsys, "--workdir_root", tmp_path, "--target", "gpu", "--gpus", "2,3", "--compilation_cache",
                       "")
    assert {c[1] for c in commands} == {"CUDA_VISIBLE_DEVICES=2,3"}
    with pytest.raises(ValueError, match="does not split --gpus 0,1,2 evenly"):
        dry_run(capsys, "--workdir_root", tmp_path, "--target", "gpu", "--parallel", "2", "--gpus", "0,1,2")
    # "0,0" gave both runs device 0, "0,1," a run no device; " 1" was an id with a space
    for gpus in ("0,0", "0,1,", "0,,1"):
        with pytest.raises(ValueError, match=f"^--gpus '{gpus}': name each device id once"):
            dry_run(capsys, "--workdir_root", tmp_path, "--target", "gpu", "--parallel", "2", "--gpus", gpus)
    commands = dry_run(capsys, "--workdir_root", tmp_path, "--target", "gpu", "--parallel", "2", "--gpus", "0, 1",
                       "--compilation_cache", "")
    assert [c[1] for c in commands] == ["CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1", "CUDA_VISIBLE_DEVICES=0"]
    # "~/sweep" is the home directory's (a ./~/sweep before)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    commands = dry_run(capsys, "--workdir_root", "~/sweep", "--target", "gpu", "--gpus", "0", "--compilation_cache",
                       "")
    assert commands[0][-1] == str(tmp_path / "home" / "sweep" / "lambda_0")


def test_an_empty_cuda_visible_devices_is_refused(tmp_path, capsys, monkeypatch):
    """Set and empty, it hides every GPU; nvidia-smi's list was used instead, and every run failed to find one."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="^--target gpu with CUDA_VISIBLE_DEVICES set and empty, which hides every "
                                         "GPU"):
        dry_run(capsys, "--workdir_root", tmp_path, "--target", "gpu")
    assert sweep.visible_gpus() == []  # the CPU: seeds in parallel there share nothing out (it was refused)
    assert seeds.main(["--seeds", "0,1", "--workdir_root", str(tmp_path / "s"), "--parallel", "2", "--dry_run"]) == 0
    assert "CUDA_VISIBLE_DEVICES" not in capsys.readouterr().out
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert sweep.visible_gpus() == ["2", "3"]


def test_tpu_vm_logs_of_two_roots_stay_apart(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logs = [[job.log for job in sweep.plan(sweep.parser().parse_args(
        ["--lambdas", "0", "--workdir_root", root, "--target", "tpu_vm", "--tpu_name", "t", "--zone", "z",
         "--project", "p"]))] for root in ("/mnt/sweepA", "/mnt/sweepB")]
    assert logs == [[Path("sweep_logs/mnt_sweepA/lambda_0.log")], [Path("sweep_logs/mnt_sweepB/lambda_0.log")]]


def test_dry_run_tpu_vm(capsys):
    commands = dry_run(capsys, "--workdir_root", "/mnt/bucket/sweep", "--target", "tpu_vm", "--tpu_name", "v4-32",
                       "--zone", "us-central2-b", "--project", "my-proj")
    for label, command in zip(("0", "0.1", "1"), commands):
        assert command[:-1] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v4-32", "--zone=us-central2-b",
                                "--project=my-proj", "--worker=all", "--command"]
        cd, python = command[-1].split(" && ")
        assert cd == "cd rlvjax"
        assert shlex.split(python) == ["python3", *train_args(label, f"/mnt/bucket/sweep/lambda_{label}")]
    # a repository (or interpreter) under the workers' home: quoted, "cd '~/code/rlvjax'" failed on every worker
    command = dry_run(capsys, "--workdir_root", "/mnt/s", "--target", "tpu_vm", "--tpu_name", "v4-32", "--zone", "z",
                      "--project", "p", "--remote_dir", "~/code/rlvjax", "--remote_python", "~/venv/bin/python")[0]
    assert command[-1].startswith('cd "$HOME"/code/rlvjax && "$HOME"/venv/bin/python -m rlvjax.train ')
    with pytest.raises(ValueError, match="^--workdir_root gs://bucket/sweep is a URL; runs are written to a local or "
                                         "mounted filesystem"):  # every run would refuse it on the workers
        dry_run(capsys, "--workdir_root", "gs://bucket/sweep", "--target", "tpu_vm", "--tpu_name", "v4-32",
                "--zone", "us-central2-b", "--project", "my-proj")
    with pytest.raises(ValueError, match="needs --zone, --project"):
        dry_run(capsys, "--workdir_root", "r", "--target", "tpu_vm", "--tpu_name", "v4-32")
    with pytest.raises(ValueError, match="one λ at a time"):
        dry_run(capsys, "--workdir_root", "r", "--target", "tpu_vm", "--tpu_name", "t", "--zone", "z",
                "--project", "p", "--parallel", "2")


def test_tpu_vm_runs_gcloud_and_keeps_its_output(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "bin" / "gcloud"  # stands in for the Cloud SDK: prints the --command it was given
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nfor last; do :; done\necho "worker 0: $last"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert sweep.main(["--lambdas", "0,1", "--workdir_root", "/mnt/sweep", "--target", "tpu_vm", "--tpu_name", "t",
                       "--zone", "z", "--project", "p", "--log_dir", str(tmp_path / "logs")]) == 0
    log = (tmp_path / "logs" / "lambda_1.log").read_text()
    assert "worker 0: cd rlvjax && python3 -m rlvjax.train --gin_file configs/default.gin --gin_param " \
           "'RunConfig.baseline = False' --gin_param RLConfig.lambda_verify=1 --workdir /mnt/sweep/lambda_1" in log
    assert "[lambda=1] done" in capsys.readouterr().out
    # No gcloud on this machine: each run fails to start, the sweep says so and exits 1 (a thread died with a
    # traceback and the sweep reported "sweep done", exit 0).
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert sweep.main(["--lambdas", "0,1", "--workdir_root", "/mnt/sweep", "--target", "tpu_vm", "--tpu_name", "t",
                       "--zone", "z", "--project", "p", "--log_dir", str(tmp_path / "logs")]) == 1
    out, err = capsys.readouterr()
    assert "[lambda=0] FAILED (not started: [Errno 2] No such file or directory: 'gcloud')" in out
    assert "sweep: error: run lambda=0 not started: [Errno 2] No such file or directory: 'gcloud'" in err
    assert "sweep: not started after the failure: lambda=1" in err


@pytest.mark.parametrize("lambdas,extra,message", [
    ("0,x", [], "'x' is not a number"),
    ("0,-0.5", [], "lambda_verify=-0.5 must be a finite number >= 0"),
    ("0,inf", [], "lambda_verify=inf must be a finite number >= 0"),
    ("0,0.0,1", [], "0 given more than once"),
    ("0,-0", [], "0 given more than once"),
    ("0,1", ["--gin_param", "RunConfig.seed=abc"], "malformed gin config in the --gin_param bindings"),
    ("0,1", ["--gin_param", "RLConfig.lambda_verify = 2"], "the sweep sets it from --lambdas"),
    ("0,1", ["--gin_param", "RLConfig.nope = 2"], "doesn't have a parameter named 'nope'"),
    # only lambda = 0 refuses it (no partial-solution rows there): found before any run starts
    ("0,1", ["--gin_param", "RLConfig.verify_prefixes = 1", "--gin_param", "RLConfig.micro_batch_size = 8"],
     r"^the run of lambda=0: minibatch of 4 training rows is not a multiple of RLConfig.micro_batch_size=8"),
    ("0,1", ["--gin_param", "TaskSpec.train_file = 'x.jsonl'"], r"^TaskSpec.train_file='x.jsonl' is not read by"),
    ("0,1", ["--zone", "us-central2-b"], "--zone does nothing for --target local"),
    ("0,1", ["--target", "tpu_vm", "--gpus", "0"], "--gpus does nothing for --target tpu_vm"),
])
def test_sweep_rejects_bad_input(tmp_path, lambdas, extra, message):
    with pytest.raises(ValueError, match=message):
        sweep.main(["--lambdas", lambdas, "--gin_file", str(REPO / TINY), "--workdir_root", str(tmp_path), *extra])
    assert not list(tmp_path.iterdir())


def test_launcher_flags_that_do_not_parse_are_one_line(tmp_path, capsys):
    """argparse printed its whole usage before the error, and named the missing required flags, not a misspelt
    one; an empty --workdir_root put the runs in the working directory."""
    for main, args, message in [(sweep.main, ["--nope"], "sweep: error: unrecognized arguments: --nope; "),
                                (collect.main, ["--bogus", "--workdir_root", "x"], "collect: error: unrecognized "
                                                                                   "arguments: --bogus; "),
                                (sweep.main, [], "sweep: error: the following arguments are required: --lambdas, "
                                                 "--workdir_root; --help lists the flags")]:
        with pytest.raises(SystemExit) as stopped:
            main(args)
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and err.splitlines() == [err.strip()] and err.startswith(message), err
    with pytest.raises(ValueError, match="^--workdir_root is empty; pass the directory the runs go in"):
        sweep.main(["--lambdas", "0,1", "--workdir_root", " "])


def test_a_file_where_a_directory_goes_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotADirectoryError, match="--workdir_root .*a_file is a file; pass a directory for the runs"):
        sweep.main(["--lambdas", "0,1", "--gin_file", str(REPO / TINY), "--workdir_root", str(tmp_path / "a_file")])
    write_eval(tmp_path / "root" / "lambda_0" / "eval.json", pass1=0, majority=0, weighted=0, best=0, bal_acc=0.5,
               auroc=0.5)
    with pytest.raises(NotADirectoryError, match="--out .*a_file is a file; pass a directory for sweep.json"):
        collect.main(["--workdir_root", str(tmp_path / "root"), "--out", str(tmp_path / "a_file")])
    assert (tmp_path / "a_file").read_text() == "x"


def test_a_lambda_is_bound_exactly_and_names_its_run():
    assert sweep.parse_lambdas("0,0.5,1e-7,0.1234567") == ["0", "0.5", "1e-07", "0.1234567"]
    assert float(sweep.parse_lambdas("0.12345678901")[0]) == 0.12345678901  # not rounded to 6 digits


def test_sweep_stops_after_a_failed_run(tmp_path, capsys):
    # A bad value is refused by the sweep itself, before any run (building the config starts no JAX backend).
    with pytest.raises(ValueError, match="RLConfig.group_size=1: grpo compares samples of one problem"):
        sweep.main(["--lambdas", "0,1", "--gin_file", str(REPO / TINY), "--gin_param", "RLConfig.group_size=1",
                    "--workdir_root", str(tmp_path)])
    assert not list(tmp_path.iterdir())
    # A missing data file passes the config check but every run refuses it: both slots fail, the third never starts.
    missing = ["--gin_param", "TaskSpec.name='file'", "--gin_param", f"TaskSpec.train_file='{tmp_path / 'no.jsonl'}'"]
    status = sweep.main(["--lambdas", "0,1,2", "--gin_file", str(REPO / TINY), *missing,
                         "--workdir_root", str(tmp_path), "--parallel", "2", "--compilation_cache", ""])
    err = capsys.readouterr().err
    assert status == 1
    for label in ("0", "1"):
        log = tmp_path / f"lambda_{label}" / "train.log"
        assert f"run lambda={label} failed with exit status 2; log: {log}" in err
        assert "no such data file" in log.read_text()
    assert "not started after the failure: lambda=2" in err and not (tmp_path / "lambda_2").exists()
    # What was written cannot be trained over by accident once it holds a saved step; an empty checkpoints/ (a run
    # stopped before its first save, which rlvjax.train starts afresh) was refused alike.
    (tmp_path / "lambda_0" / "checkpoints").mkdir()
    sweep.check_workdirs([sweep.Job("lambda=0", [], {}, tmp_path / "log", str(tmp_path / "lambda_0"))])
    (tmp_path / "lambda_0" / "checkpoints" / "3").mkdir()
    with pytest.raises(ValueError, match="already hold checkpoints; pass --resume"):
        sweep.main(["--lambdas", "0", "--gin_file", str(REPO / TINY), "--workdir_root", str(tmp_path)])


def test_local_sweep_then_collect(tmp_path, capsys):
    root = tmp_path / "sweep"
    # Cache every compilation, however quick, so the second run reuses the first's (tiny CPU programs compile in
    # under JAX's default 1 s threshold); LLVM's optimisations are off as in every test (conftest's XLA_FLAGS).
    env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "launch/sweep.py", "--lambdas", "0.5,0", "--gin_file", TINY,
                           "--workdir_root", str(root)], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[lambda=0.5] done" in done.stdout and "[lambda=0] done" in done.stdout
    assert (root / "jax_cache").is_dir()
    for label in ("0", "0.5"):
        evaluation = json.loads((root / f"lambda_{label}" / "eval.json").read_text())
        assert set(evaluation["reports"]["2"]) == {"warm_start", "final"}  # tiny_sweep trains at T = 2

    # λ comes from the checkpoint's config, whatever the directory is called.
    (root / "lambda_0").rename(root / "baseline")
    collect.main(["--workdir_root", str(root), "--out", str(tmp_path / "report")])
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "report" / "sweep.json").read_text())["runs"]
    assert [(r["lambda"], r["run"]) for r in rows] == [(0.0, "baseline"), (0.5, "lambda_0.5")]
    for row in rows:
        final = json.loads((root / row["run"] / "eval.json").read_text())["reports"]["2"]["final"]
        assert row["num_samples"] == 2 and row["num_problems"] == 8
        assert row["weighted"] == final["accuracy"]["weighted"]["2"]
        assert row["verifier_balanced_accuracy"] == final["verifier"]["verifier_balanced_accuracy"]
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| λ | K | pass@1 | maj@K | wt@K | BoN@K | ver. bal. acc | AUROC | pass@1 − λ0 |")
    assert [line.split("|")[1].strip() for line in table[2:]] == ["0", "0.5"]
    assert (tmp_path / "report" / "sweep.png").stat().st_size > 10_000


def write_eval(path, *, pass1, majority, weighted, best, bal_acc, auroc, k=4, t=1.0, problems=10, flat=False,
               plateau=None, conventions=None):
    """An eval.json whose curves are 0 below N = k and the given value at k (``flat``: the weighted one at every N;
    ``plateau``: the majority curve's, as ``reports.report`` records it; None: not recorded, as before it was;
    ``conventions``: the voting conventions the report records)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ns = [1, 2, 4]
    curve = lambda top: {str(n): top if n == k else 0.0 for n in ns}  # noqa: E731
    report = {"num_problems": problems, "num_samples": k, "ns": ns, "pass@1": pass1, "pass@k": curve(0.9),
              "temperature": t, "accuracy": {"majority": curve(majority), "best_of_n": curve(best),
                                             "weighted": {str(n): weighted for n in ns} if flat else curve(weighted)},
              "verifier": {"verifier_accuracy": 0.5, "verifier_balanced_accuracy": bal_acc, "verifier_auroc": auroc,
                           "calibration_error": 0.1},
              "compute_efficiency_weighted_vs_majority": {"ratio": 1.5},
              **({} if plateau is None else {"majority_plateau": plateau}),
              **({} if conventions is None else {"conventions": conventions})}
    path.write_text(json.dumps({"train_temperature": t, "headline_temperature": t,
                                "reports": {format(t, "g"): {"warm_start": {}, "final": report}}}))


def stamp(policy, export_id: str, step: int) -> None:
    """An exported policy's weights as ``save_hf`` stamps them: what a report names its exports by."""
    from safetensors.numpy import save_file

    policy.mkdir(parents=True, exist_ok=True)
    save_file({"w": np.zeros(1, np.float32)}, str(policy / "model.safetensors"),
              metadata={"rlvjax_export_id": export_id, "rlvjax_step": str(step)})


def about(eval_json, export_id: str, step: int) -> None:
    """Makes ``eval_json`` an end-of-run report of the export ``export_id`` of ``final/`` at ``step``."""
    evaluation = json.loads(eval_json.read_text())
    eval_json.write_text(json.dumps({**evaluation, "policies": {"final": {"export_id": export_id, "step": step}}}))


def test_collect_by_hand(tmp_path, capsys):
    write_eval(tmp_path / "lambda_1" / "eval.json", pass1=0.4, majority=0.5, weighted=0.6, best=0.55, bal_acc=0.8,
               auroc=0.85)
    write_eval(tmp_path / "lambda_0.1" / "eval" / "final" / "eval.json", pass1=0.3, majority=0.45, weighted=0.5,
               best=0.35, bal_acc=0.7, auroc=math.nan)  # rlvjax.evaluate's output; AUROC undefined
    (tmp_path / "lambda_2").mkdir()  # a run that never finished
    (tmp_path / "jax_cache").mkdir()  # not a run
    collect.main(["--workdir_root", str(tmp_path)])
    captured = capsys.readouterr()
    assert captured.out.splitlines()[2:4] == [  # no λ = 0 run: nothing to compare with
        "| 0.1 | 4 | 0.300 | 0.450 | 0.500 | 0.350 | 0.700 | n/a | n/a | n/a | n/a | n/a |",
        "| 1 | 4 | 0.400 | 0.500 | 0.600 | 0.550 | 0.800 | 0.850 | n/a | n/a | n/a | n/a |"]
    assert "no eval.json in lambda_2" in captured.err and "jax_cache" not in captured.err
    rows = json.loads((tmp_path / "sweep.json").read_text())["runs"]  # strict JSON: NaN is null
    assert rows[0]["verifier_auroc"] is None and rows[1]["best_of_n"] == 0.55
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # a resume of lambda_1 exported step 8 and was stopped before its report: the report of step 6 is left out,
    # named (it was read as the run's); once the report is about the export the run holds, it counts again
    stamp(tmp_path / "lambda_1" / "final", "new", 8)
    about(tmp_path / "lambda_1" / "eval.json", "old", 6)
    collect.main(["--workdir_root", str(tmp_path)])
    err = capsys.readouterr().err
    assert (f"collect: warning: {tmp_path / 'lambda_1' / 'eval.json'} is not about the run's exports now (final is "
            "step 6 in the report, step 8 in the run); left out: rerun the run with --resume") in err
    assert [r["run"] for r in json.loads((tmp_path / "sweep.json").read_text())["runs"]] == ["lambda_0.1"]
    stamp(tmp_path / "lambda_0.1" / "final", "newer", 9)  # evaluate's report of lambda_0.1 names no export: kept
    shutil.copytree(tmp_path, tmp_path.parent / "only_stale")
    shutil.rmtree(tmp_path.parent / "only_stale" / "lambda_0.1")
    with pytest.raises(FileNotFoundError, match=r"no current eval.json under .*only_stale: the reports of lambda_1 "
                                                r"are about earlier exports; rerun those runs with --resume"):
        collect.collect(tmp_path.parent / "only_stale")  # it said "train with RunConfig.final_eval_samples > 0"
    capsys.readouterr()
    about(tmp_path / "lambda_1" / "eval.json", "new", 8)
    collect.main(["--workdir_root", str(tmp_path)])
    assert "lambda_1" not in capsys.readouterr().err
    assert [r["run"] for r in json.loads((tmp_path / "sweep.json").read_text())["runs"]] == ["lambda_0.1", "lambda_1"]


def test_collect_against_the_lambda0_run(tmp_path, capsys):
    # λ0's majority curve is 0, 0, 0.5 at N = 1, 2, 4; λ = 1's weighted 0, 0, 0.6 and λ = 2's 0, 0, 0.4.
    write_eval(tmp_path / "lambda_0" / "eval.json", pass1=0.5, majority=0.5, weighted=0.5, best=0.5, bal_acc=0.5,
               auroc=0.5)
    write_eval(tmp_path / "lambda_1" / "eval.json", pass1=0.45, majority=0.5, weighted=0.6, best=0.5, bal_acc=0.8,
               auroc=0.9)
    write_eval(tmp_path / "lambda_2" / "eval.json", pass1=0.3, majority=0.3, weighted=0.4, best=0.5, bal_acc=0.8,
               auroc=0.9)
    write_eval(tmp_path / "lambda_3" / "eval.json", pass1=0.3, majority=0.3, weighted=0.4, best=0.5, bal_acc=0.8,
               auroc=0.9, t=2.0)  # another temperature: not comparable
    write_eval(tmp_path / "lambda_4" / "eval.json", pass1=0.3, majority=0.3, weighted=0.4, best=0.5, bal_acc=0.8,
               auroc=0.9, problems=500)  # other problems: not comparable, and said so
    write_eval(tmp_path / "lambda_5" / "eval.json", pass1=0.6, majority=0.6, weighted=0.6, best=0.6, bal_acc=0.8,
               auroc=0.9, flat=True)  # λ0's best majority (0.5 at N = 4) reached at N = 1: at least 4x
    write_eval(tmp_path / "lambda_6" / "eval.json", pass1=0.3, majority=0.3, weighted=0.9, best=0.5, bal_acc=0.8,
               auroc=0.9, conventions={"score": "raw"})  # other voting conventions: not comparable (it was)
    rows = collect.collect(tmp_path)
    by_lambda = {r["lambda"]: r for r in rows}
    assert by_lambda[4.0]["pass@1_minus_lambda0"] is None and by_lambda[6.0]["mean_lead_over_n"] is None
    err = capsys.readouterr().err
    assert "lambda_4 was evaluated otherwise than lambda_0 (num_problems 500 vs 10)" in err
    assert "lambda_6 was evaluated otherwise than lambda_0 (conventions {'score': 'raw'} vs None)" in err
    assert by_lambda[5.0]["efficiency_vs_lambda0"]["ratio"] == 4.0
    assert by_lambda[5.0]["efficiency_vs_lambda0"]["lower_bound"] is True
    assert by_lambda[1.0]["pass@1_minus_lambda0"] == pytest.approx(-0.05)
    assert by_lambda[1.0]["weighted_minus_lambda0_majority"] == pytest.approx(0.1)
    assert by_lambda[1.0]["mean_lead_over_n"] == pytest.approx(0.1 / 3)
    # 0.5 is 5/6 of the way from 0 (N = 2) to 0.6 (N = 4): N = 2 ** (1 + 5/6) against λ0's 4.
    assert by_lambda[1.0]["efficiency_vs_lambda0"]["ratio"] == pytest.approx(4 / 2 ** (1 + 5 / 6))
    assert by_lambda[1.0]["efficiency_vs_lambda0"]["lower_bound"] is False
    assert by_lambda[2.0]["efficiency_vs_lambda0"]["ratio"] is None
    assert by_lambda[3.0]["efficiency_vs_lambda0"] is None
    assert by_lambda[3.0]["pass@1_minus_lambda0"] is None
    table = collect.markdown_table(rows).splitlines()
    assert table[4].endswith("| -0.200 | -0.100 | -0.033 | never |")
    # λ0's majority target is read where its report says the plateau starts: N = 2, accuracy 0, reached at N = 1
    write_eval(tmp_path / "lambda_0" / "eval.json", pass1=0.5, majority=0.5, weighted=0.5, best=0.5, bal_acc=0.5,
               auroc=0.5, plateau=2)
    eff = {r["lambda"]: r for r in collect.collect(tmp_path)}[1.0]["efficiency_vs_lambda0"]
    assert (eff["target"], eff["n_target"], eff["ratio"], eff["lower_bound"]) == (0.0, 2, 2.0, True)
    assert table[5].endswith("| n/a | n/a | n/a | n/a |") and table[7].endswith("| >=4.000 |")


def test_collect_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        collect.collect(tmp_path / "nope")
    (tmp_path / "lambda_0").mkdir()
    done = subprocess.run([sys.executable, "launch/collect.py", "--workdir_root", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("collect: error: no eval.json in any run under")
    assert "RunConfig.final_eval_samples > 0" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    write_eval(tmp_path / "run_x" / "eval.json", pass1=0, majority=0, weighted=0, best=0, bal_acc=0.5, auroc=0.5)
    with pytest.raises(ValueError, match="its name is not lambda_<value>"):
        collect.collect(tmp_path)
    # a number only: Python's float reads "0.1_2" as 0.12
    assert [collect.lambda_from_name(Path(f"lambda_{x}")) for x in ("0.1", "1e-05", "2", "0.1_2", "1_0", "nan")] \
        == [0.1, 1e-05, 2.0, None, None, None]
    (tmp_path / "run_x" / "eval.json").write_text("{}")  # cut short or hand-edited: named, not a KeyError traceback
    with pytest.raises(ValueError, match=r"run_x/eval.json is not a whole rlvjax eval.json \(KeyError: 'reports'\)"):
        collect.collect(tmp_path)
    evaluation = tmp_path / "lambda_0" / "eval.json"  # a null in a vote curve, a key missing: also named
    write_eval(evaluation, pass1=0, majority=0, weighted=0, best=0, bal_acc=0.5, auroc=0.5)
    shutil.rmtree(tmp_path / "run_x")
    text = json.loads(evaluation.read_text())
    text["reports"]["1"]["final"]["accuracy"]["weighted"]["2"] = None
    evaluation.write_text(json.dumps(text))
    with pytest.raises(ValueError, match=r"lambda_0/eval.json is not a whole rlvjax eval.json \(TypeError: weighted "
                                         r"curve is None, not a number\)"):
        collect.collect(tmp_path)
    del text["reports"]["1"]["final"]["compute_efficiency_weighted_vs_majority"]
    text["reports"]["1"]["final"]["accuracy"]["weighted"]["2"] = 0.0
    evaluation.write_text(json.dumps(text))
    with pytest.raises(ValueError, match=r"\(KeyError: 'compute_efficiency_weighted_vs_majority'\)"):
        collect.collect(tmp_path)


def test_collect_labels_lambdas_that_read_the_same_short_exactly(tmp_path, capsys):
    """0.1234567 and 0.1234568 are two runs (sweep.py names them exactly); the table and the plot's ticks labelled
    both 0.123457."""
    for label in ("0.1234567", "0.1234568", "0.5"):
        write_eval(tmp_path / f"lambda_{label}" / "eval.json", pass1=0.5, majority=0.5, weighted=0.5, best=0.5,
                   bal_acc=0.5, auroc=0.5)
    rows = collect.collect(tmp_path)
    assert collect.labels(rows) == ["0.1234567", "0.1234568", "0.5"]
    labels = [line.split("|")[1].strip() for line in collect.markdown_table(rows).splitlines()[2:]]
    assert labels == ["0.1234567", "0.1234568", "0.5"]


def test_collect_names_every_unreadable_report_at_once(tmp_path):
    """Each fix took a rerun to find the next broken eval.json."""
    for name in ("lambda_1", "lambda_2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text("{}")
    write_eval(tmp_path / "lambda_0" / "eval.json", pass1=0.5, majority=0.5, weighted=0.5, best=0.5, bal_acc=0.5,
               auroc=0.5)
    with pytest.raises(ValueError) as caught:
        collect.collect(tmp_path)
    assert "lambda_1/eval.json is not a whole rlvjax eval.json" in str(caught.value)
    assert "lambda_2/eval.json is not a whole rlvjax eval.json" in str(caught.value)


def test_collect_tells_runs_of_one_lambda_apart(tmp_path, capsys):
    for name, pass1 in (("lambda_0", 0.5), ("lambda_0.0", 0.3), ("lambda_1", 0.4)):
        write_eval(tmp_path / name / "eval.json", pass1=pass1, majority=0.5, weighted=0.5, best=0.5, bal_acc=0.5,
                   auroc=0.5)
    rows = collect.collect(tmp_path)
    assert "2 runs have λ = 0 (lambda_0, lambda_0.0); every row is compared with lambda_0" in capsys.readouterr().err
    labels = [line.split("|")[1].strip() for line in collect.markdown_table(rows).splitlines()[2:]]
    assert labels == ["0 (lambda_0)", "0 (lambda_0.0)", "1"]


seeds = load_script("seeds")


def write_seed_eval(path, *, rlv, base, rlv_majority, weighted, base_majority, ratio, ci_high, rlv_ver, base_ver,
                    lower_bound=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    rep = lambda p1, maj, wt, ver: {"num_samples": 64, "pass@1": p1,  # noqa: E731
                                    "accuracy": {"majority": {"64": maj}, "weighted": {"64": wt}},
                                    "verifier": {"verifier_balanced_accuracy": ver}}
    cmp = {"pass@1": {"difference": rlv - base, "difference_ci95": [rlv - base - 0.1, ci_high]},
           "efficiency_vs_lambda0_majority": {"ratio": ratio, "lower_bound": lower_bound}}
    path.write_text(json.dumps({"train_temperature": 1.5, "headline_temperature": 1.5,
                                "reports": {"1.5": {"final": rep(rlv, rlv_majority, weighted, rlv_ver),
                                                    "lambda0": rep(base, base_majority, 0.0, base_ver)}},
                                "comparison": {"1.5": cmp}}))


def test_seeds_claims_by_hand(tmp_path, capsys):
    write_seed_eval(tmp_path / "seed_0" / "eval.json", rlv=0.6, base=0.7, rlv_majority=0.8, weighted=0.9,
                    base_majority=0.85, ratio=8.0, ci_high=0.01, rlv_ver=0.8, base_ver=0.5)  # every claim holds
    write_seed_eval(tmp_path / "seed_1" / "eval.json", rlv=0.4, base=0.7, rlv_majority=0.8, weighted=0.8,
                    base_majority=0.9, ratio=None, ci_high=-0.2, rlv_ver=0.8, base_ver=0.5)  # only the verifier
    (tmp_path / "seed_2").mkdir()  # unfinished
    write_seed_eval(tmp_path / "seed_7" / "eval.json", rlv=0.1, base=0.9, rlv_majority=0.1, weighted=0.1,
                    base_majority=0.9, ratio=None, ci_high=-0.5, rlv_ver=0.1, base_ver=0.9)  # another study's
    assert seeds.main(["--workdir_root", str(tmp_path), "--collect_only"]) == 0  # --seeds 0,1,2: not seed 7
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[2] == "| 0 | 0.600 | 0.700 | -0.100 | 0.850 | 0.900 | 0.800 | 0.800 | 0.500 | 8.000 |"
    assert lines[3] == "| 1 | 0.400 | 0.700 | -0.300 | 0.900 | 0.800 | 0.800 | 0.800 | 0.500 | never |"
    # means, sample standard deviations (pass@1 0.6 and 0.4: 0.5 +- 0.141), the efficiency's range and its nevers
    assert lines[4] == ("| mean ± sd | 0.500 ± 0.141 | 0.700 ± 0.000 | -0.200 ± 0.141 | 0.875 ± 0.035 | "
                        "0.850 ± 0.071 | 0.800 ± 0.000 | 0.800 ± 0.000 | 0.500 ± 0.000 | 8.00–8.00 (1 never) |")
    assert "- pass@1 not worse: 1 of 2" in out and "- efficiency >= 8: 1 of 2" in out
    assert "- wt@K >= λ0 maj@K: 1 of 2" in out and "- verifier better: 2 of 2" in out
    assert "- wt@K > maj@K: 1 of 2" in out
    assert "no eval.json in seed_2" in err
    assert (tmp_path / "claims.md").read_text().startswith("| seed |")
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert len(claims["runs"]) == 2  # and the table's summary, which it lacked
    assert claims["summary"]["figures"]["pass@1 RL^V"] == {"mean": pytest.approx(0.5), "sd": pytest.approx(0.02 ** 0.5)}
    assert claims["summary"]["figures"]["efficiency vs λ0"] == {"min": {"ratio": 8.0, "lower_bound": False},
                                                                 "max": {"ratio": 8.0, "lower_bound": False},
                                                                 "never": 1}
    assert claims["summary"]["claims_met"] == {"pass@1 not worse": 1, "wt@K >= λ0 maj@K": 1, "efficiency >= 8": 1,
                                               "verifier better": 2, "wt@K > maj@K": 1}
    # One seed has no spread (it printed +- 0.000); a ratio that is a lower bound says so, as collect.py does.
    write_seed_eval(tmp_path / "seed_0" / "eval.json", rlv=0.6, base=0.7, rlv_majority=0.8, weighted=0.9,
                    base_majority=0.85, ratio=4.0, ci_high=0.01, rlv_ver=0.8, base_ver=0.5, lower_bound=True)
    assert seeds.main(["--workdir_root", str(tmp_path), "--collect_only", "--seeds", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].endswith("| 0.500 | >=4.000 |") and lines[3].startswith("| mean ± sd | 0.600 ± n/a | 0.700 ± n/a")
    assert lines[3].endswith("| >=4.00–>=4.00 |")  # the range of bounds is a bound too (it read 4.00–4.00)
    # seed 1's report is about step 6, its final/ holds step 8 (a resume stopped before its report): left out
    stamp(tmp_path / "seed_1" / "final", "new", 8)
    about(tmp_path / "seed_1" / "eval.json", "old", 6)
    assert seeds.main(["--workdir_root", str(tmp_path), "--collect_only", "--seeds", "0,1"]) == 0
    assert (f"seeds: warning: {tmp_path / 'seed_1' / 'eval.json'} is not about the run's exports now (final is step "
            "6 in the report, step 8 in the run); left out: rerun with --resume") in capsys.readouterr().err
    assert len(json.loads((tmp_path / "claims.json").read_text())["runs"]) == 1
    with pytest.raises(FileNotFoundError, match=r"no current eval.json in seed_1 under .*; run this script without "
                                                r"--collect_only first \(with --resume\)"):
        seeds.main(["--workdir_root", str(tmp_path), "--collect_only", "--seeds", "1"])
    # cut short or hand-edited: named, with what to do, not a KeyError traceback
    (tmp_path / "seed_0" / "eval.json").write_text("{}")
    with pytest.raises(ValueError, match=r"seed_0/eval.json is not a whole rlvjax eval.json \(KeyError: "
                                         r"'headline_temperature'\); rerun the seed with --resume"):
        seeds.main(["--workdir_root", str(tmp_path), "--collect_only", "--seeds", "0"])
    (tmp_path / "seed_0" / "eval.json").write_text('{"headline_temperature": 1.5, "rep')
    with pytest.raises(ValueError, match=r"seed_0/eval.json is not a whole rlvjax eval.json \(JSONDecodeError"):
        seeds.main(["--workdir_root", str(tmp_path), "--collect_only", "--seeds", "0"])


def test_seeds_reads_a_home_relative_root_where_it_trained(tmp_path, capsys, monkeypatch):
    """The shell leaves "--workdir_root=~/runs" as written: the runs went to $HOME/runs, the table was looked for
    in a ./~/runs, and after training every seed the script failed, telling to retrain."""
    monkeypatch.setenv("HOME", str(tmp_path))
    write_seed_eval(tmp_path / "runs" / "seed_0" / "eval.json", rlv=0.6, base=0.7, rlv_majority=0.8, weighted=0.9,
                    base_majority=0.85, ratio=8.0, ci_high=0.01, rlv_ver=0.8, base_ver=0.5)
    trained = []
    from rlvjax.experiment import RunConfig

    monkeypatch.setattr(seeds.sweep, "check_config", lambda *args: RunConfig(final_eval_samples=4))
    monkeypatch.setattr(seeds.sweep, "execute", lambda jobs, parallel: trained.extend(jobs) or [0] * len(jobs))
    assert seeds.main(["--workdir_root=~/runs", "--seeds", "0", "--resume"]) == 0
    assert [str(job.workdir) for job in trained] == [str(tmp_path / "runs" / "seed_0")]
    assert capsys.readouterr().out.splitlines()[2].startswith("| 0 | 0.600 |")
    assert (tmp_path / "runs" / "claims.md").is_file() and not (Path.cwd() / "~").exists()


def test_seeds_dry_run_and_bad_input(tmp_path, capsys):
    assert seeds.main(["--seeds", "3,4", "--workdir_root", str(tmp_path), "--dry_run"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 2 and f"--workdir {tmp_path / 'seed_4'}" in commands[1]
    for binding in ("RunConfig.baseline = True", "RunConfig.seed = 4", "WarmStartConfig.seed = 4",
                    "ModelSpec.init_seed = 4", "TaskSpec.seed = 4"):
        assert shlex.quote(binding) in commands[1]
    with pytest.raises(ValueError, match="binds RunConfig.seed; the script sets it from --seeds"):
        seeds.main(["--workdir_root", str(tmp_path), "--gin_param", "RunConfig.seed=1", "--dry_run"])
    with pytest.raises(ValueError, match="each seed once"):
        seeds.main(["--seeds", "1,1", "--workdir_root", str(tmp_path), "--dry_run"])
    with pytest.raises(FileNotFoundError, match="no current eval.json in seed_0, seed_1, seed_2 under"):
        seeds.main(["--workdir_root", str(tmp_path), "--collect_only"])
    # it trained every seed and then said "no eval.json ... run this script without --collect_only first"
    with pytest.raises(ValueError, match="^RunConfig.final_eval_samples = 0 or export_final = False: the runs would "
                                         "write no eval.json to compare; keep the end-of-run report on$"):
        seeds.main(["--workdir_root", str(tmp_path), "--gin_param", "RunConfig.final_eval_samples = 0", "--dry_run"])
    with pytest.raises(ValueError, match="^--workdir_root gs://b/x is a URL"):  # it trained into a local ./gs:/b/x
        seeds.main(["--workdir_root", "gs://b/x", "--dry_run"])


def test_seeds_checks_each_run_as_it_will_start(tmp_path, capsys):
    """With a gin file that leaves the baseline off, a config only the lambda = 0 baseline refuses passed the check
    and the dry run; each seed's run then failed after training."""
    with pytest.raises(ValueError, match=r"^the lambda = 0 baseline \(RunConfig.baseline = True\) would not run: "
                                         r"minibatch of 4 training rows is not a multiple of RLConfig.micro_batch"):
        seeds.main(["--seeds", "0", "--gin_file", str(REPO / TINY), "--gin_param", "RLConfig.verify_prefixes = 1",
                    "--gin_param", "RLConfig.micro_batch_size = 8", "--workdir_root", str(tmp_path), "--dry_run"])
    assert not list(tmp_path.iterdir())


def test_seeds_names_the_seeds_not_started_after_a_failure(tmp_path, capsys, monkeypatch):
    from rlvjax.experiment import RunConfig

    monkeypatch.setattr(seeds.sweep, "check_config", lambda *args: RunConfig(final_eval_samples=4))
    monkeypatch.setattr(seeds.sweep, "execute", lambda jobs, parallel: [2, None, None])
    assert seeds.main(["--seeds", "0,1,2", "--workdir_root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "seeds: error: run seed=0 failed with exit status 2; log: " in err
    assert "seeds: not started after the failure: seed=1, seed=2; rerun with --resume" in err


def test_a_dry_run_refuses_what_the_launch_would(tmp_path, capsys):
    """A root whose runs hold checkpoints: the launch refuses it without --resume; the dry run printed the commands
    and exited 0."""
    (tmp_path / "lambda_0" / "checkpoints" / "2").mkdir(parents=True)
    (tmp_path / "seed_0" / "checkpoints" / "2").mkdir(parents=True)
    with pytest.raises(ValueError, match="lambda_0 already hold checkpoints; pass --resume"):
        dry_run(capsys, "--workdir_root", tmp_path)
    with pytest.raises(ValueError, match="seed_0 already hold checkpoints; pass --resume"):
        seeds.main(["--seeds", "0", "--workdir_root", str(tmp_path), "--dry_run"])
    assert capsys.readouterr().out == ""
    assert seeds.main(["--seeds", "0", "--workdir_root", str(tmp_path), "--dry_run", "--resume"]) == 0


def test_seeds_leaves_an_inherited_compilation_cache_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    assert seeds.main(["--seeds", "0", "--workdir_root", str(tmp_path), "--dry_run"]) == 0
    assert f"JAX_COMPILATION_CACHE_DIR={tmp_path / 'jax_cache'} " in capsys.readouterr().out
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "shared"))  # set by the user: it was overridden
    assert seeds.main(["--seeds", "0", "--workdir_root", str(tmp_path), "--dry_run"]) == 0
    assert "JAX_COMPILATION_CACHE_DIR" not in capsys.readouterr().out


def test_seeds_in_parallel_on_gpus_share_them(tmp_path, capsys, monkeypatch):
    """Two seeds at once on a 2-GPU machine: one device each with its memory (each preallocated 75% of every GPU it
    saw, so the second ran out of memory); one at a time, or without GPUs, nothing is set."""
    monkeypatch.setattr(seeds.sweep, "visible_gpus", lambda: ["0", "1"])
    assert seeds.main(["--seeds", "0,1", "--workdir_root", str(tmp_path), "--parallel", "2", "--dry_run"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert [c.split(" ")[1:3] for c in commands] == [["JAX_PLATFORMS=cuda", "CUDA_VISIBLE_DEVICES=0"],
                                                      ["JAX_PLATFORMS=cuda", "CUDA_VISIBLE_DEVICES=1"]]
    assert all("XLA_PYTHON_CLIENT_MEM_FRACTION=" in c for c in commands)
    assert seeds.main(["--seeds", "0,1", "--workdir_root", str(tmp_path), "--dry_run"]) == 0
    assert "CUDA_VISIBLE_DEVICES" not in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"^--parallel 3 does not split this machine's 2 GPUs \(0,1\) evenly; use a "
                                         r"divisor or a multiple of 2, or set CUDA_VISIBLE_DEVICES"):
        seeds.main(["--seeds", "0,1,2", "--workdir_root", str(tmp_path), "--parallel", "3", "--dry_run"])
    monkeypatch.setattr(seeds.sweep, "visible_gpus", lambda: [])
    assert seeds.main(["--seeds", "0,1", "--workdir_root", str(tmp_path), "--parallel", "2", "--dry_run"]) == 0
    assert "JAX_PLATFORMS" not in capsys.readouterr().out


RUN_THAT_SAVES = """
import os, signal, sys, time
got = []
for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, lambda signum, frame: got.append(signum))
open(sys.argv[1], "w").close()
while not got:
    time.sleep(0.01)
time.sleep(1.0)  # the rest of the step, then its checkpoint
print("got", [signal.Signals(s).name for s in got], "own group", os.getpgid(0) == os.getpid())
print("rlvjax.train: SIGINT: saved the checkpoint of step 3 in ...; rerun with --resume to continue")
"""


@pytest.mark.parametrize("signum,passed", [(signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM"),
                                           (signal.SIGHUP, "SIGTERM")])
def test_a_signal_to_a_launcher_reaches_each_run_once_and_the_launcher_waits_for_them(tmp_path, capsys, signum,
                                                                                      passed):
    """The launcher passes a signal on to its running run (each in its own process group: a terminal's Ctrl-C
    reaches it once, through the launcher), starts nothing more, and returns only once the run has saved. It used
    to return at once while its run was still saving (a --resume found it busy) and, on SIGTERM, to leave its run
    going alone."""
    up = tmp_path / "up"
    run = sweep.Job("lambda=0", [sys.executable, "-c", RUN_THAT_SAVES, str(up)], {},
                    tmp_path / "lambda_0" / "train.log", str(tmp_path / "lambda_0"))
    later = sweep.Job("lambda=1", [sys.executable, "-c", "pass"], {}, tmp_path / "lambda_1" / "train.log",
                      str(tmp_path / "lambda_1"))

    def signal_once_up():
        while not up.exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signum)  # the launcher alone

    # as from a terminal: a pytest-xdist worker ignores SIGINT, which the launcher leaves ignored (nohup)
    before = signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    try:
        threading.Thread(target=signal_once_up, daemon=True).start()
        with pytest.raises(sweep.Interrupted) as stopped:
            sweep.execute([run, later], 1)
        assert signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL)  # put back
    finally:
        signal.signal(signum, before)
    assert stopped.value.signum == signum and str(stopped.value) == signal.Signals(signum).name
    log = run.log.read_text()
    assert f"got ['{passed}'] own group True" in log and log.rstrip().endswith("rerun with --resume to continue")
    assert "[lambda=0] stopped (SIGTERM or Ctrl-C)" in capsys.readouterr().out and not later.log.exists()


def test_a_launcher_under_nohup_leaves_its_runs_alone_on_sighup(tmp_path, capsys, monkeypatch):
    """SIGHUP inherited as ignored (nohup) stays ignored: closing the terminal stopped every run (review
    2026-12-06); the run finishes and is done."""
    up = tmp_path / "up"
    run = sweep.Job("lambda=0", [sys.executable, "-c", f"import time; open({str(up)!r}, 'w').close(); "
                                 "time.sleep(1); print('finished')"], {}, tmp_path / "run.log", str(tmp_path / "run"))

    def hang_up_once_up():
        while not up.exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGHUP)

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        threading.Thread(target=hang_up_once_up, daemon=True).start()
        assert sweep.execute([run], 1) == [0]
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert run.log.read_text().rstrip().endswith("finished") and "[lambda=0] done" in capsys.readouterr().out


def test_a_run_stopped_with_its_state_saved_is_not_counted_done_and_logs_are_kept(tmp_path, capsys):
    """rlvjax.train exits 0 when a SIGTERM or Ctrl-C stopped it with a checkpoint: the sweep reports it stopped and
    starts nothing after it; a rerun appends to the run's log instead of replacing it."""
    log = tmp_path / "lambda_0" / "train.log"
    # as the log of a stop in the warm start ends: its progress bar, left open, follows the message
    stopped = sweep.Job("lambda=0", [sys.executable, "-c", "print('rlvjax.train: SIGTERM before the first RL step; "
                                     "nothing to save, rerun with --resume\\n\\r  0%|          | 0/4')"], {}, log,
                        str(tmp_path / "lambda_0"))
    later = sweep.Job("lambda=1", [sys.executable, "-c", "pass"], {}, tmp_path / "lambda_1" / "train.log",
                      str(tmp_path / "lambda_1"))
    assert sweep.execute([stopped, later], 1) == [sweep.STOPPED, None]
    assert "[lambda=0] stopped (SIGTERM or Ctrl-C)" in capsys.readouterr().out
    # a stop before the first RL step, after the run opened its progress bar: the message shares the bar's line
    # (the real log; it was counted done, review 2026-12-06)
    (tmp_path / "glued.txt").write_text("\r  0%|  | 0/2 [00:00<?, ?it/s]rlvjax.train: SIGTERM before the first RL step; "
                                        "nothing to save, rerun with --resume\n\r  0%|  | 0/2\n")
    glued = dataclasses.replace(stopped, argv=[sys.executable, "-c", "import sys; sys.stdout.write(open(sys.argv[1])"
                                               ".read())", str(tmp_path / "glued.txt")])  # the log's header names argv
    assert sweep.execute([glued, later], 1) == [sweep.STOPPED, None]
    # stopped while it started, before it wrote anything (it was counted done: the sweep went on without it)
    starting = dataclasses.replace(stopped, argv=[sys.executable, "-c", f"print({'SIGTERM ' + train.STARTING!r})"])
    assert sweep.execute([starting, later], 1) == [sweep.STOPPED, None]
    baseline = dataclasses.replace(stopped, argv=[sys.executable, "-c", f"print({train.BASELINE_STARTING!r})"])
    assert sweep.execute([baseline, later], 1) == [sweep.STOPPED, None]
    done = dataclasses.replace(stopped, argv=[sys.executable, "-c", "print('finished')"])
    assert sweep.execute([done], 1) == [0]
    text = log.read_text()
    assert "rerun with --resume" in text and text.rstrip().endswith("finished") and text.count("\n# ") == 4
