"""Reliability of `python -m rlvjax.train`: kill -9 anywhere (also mid-checkpoint) then --resume gives the
uninterrupted run's metrics bit for bit; SIGTERM and Ctrl-C save at the next step boundary and exit 0 (a second
Ctrl-C stops at once); a second process on a busy workdir is refused, a dead one's lock blocks nothing; a damaged
latest checkpoint falls back to the newest intact one; non-finite updates are skipped, counted, and stop the run
with its last checkpoint intact.

The subprocess runs share one persistent JAX compilation cache, so a restart costs its imports, not its compiles.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gin
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rlvjax import cli, evaluate, export, outputs, resume, train
from rlvjax.checkpoint import Checkpointer, DamagedCheckpoint, step_folders
from rlvjax.config import Config
from rlvjax.model.hf import export_stamp
from rlvjax.rewards.registry import Rewards
import forkserver

REPO = Path(__file__).resolve().parents[1]
DIGIT = str(REPO / "configs" / "digit_smoke.gin")
NUM_STEPS = 8
# Two minibatches per step: the update shuffles rows with the state's RNG, so a resume must restore it exactly.
TINY = ["WarmStartConfig.num_steps = 30", "RunConfig.eval_every = 0", "RunConfig.export_final = False",
        "TaskSpec.num_eval = 0", f"RunConfig.num_steps = {NUM_STEPS}", "RunConfig.checkpoint_every = 2",
        "RunConfig.max_to_keep = 2", "RLConfig.num_minibatches = 2"]
TIMING = ("time/", "_per_s")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def command(workdir, bindings=(), *, resume=False, pause_saves: float = 0):
    """The run's command; ``pause_saves``: every checkpoint commit paused that long (tests/pause_saves.py)."""
    params = [arg for binding in [*TINY, *bindings] for arg in ("--gin_param", binding)]
    paused = [str(REPO / "tests" / "pause_saves.py"), str(pause_saves)] if pause_saves else []
    return [sys.executable, *paused, "-m", "rlvjax.train", "--gin_file", DIGIT, *params, "--workdir", str(workdir),
            *(["--resume"] if resume else [])]


def start(workdir, env, bindings=(), *, resume=False, extra_env=None, pause_saves: float = 0):
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir.parent / f"{workdir.name}.stderr", "ab")
    return subprocess.Popen(command(workdir, bindings, resume=resume, pause_saves=pause_saves), cwd=REPO,
                            env={**env, **(extra_env or {})}, stdout=subprocess.DEVNULL, stderr=log)


def finish(workdir, env, bindings=(), *, resume=False, extra=()) -> subprocess.CompletedProcess:
    out = forkserver.run(command(workdir, bindings, resume=resume) + list(extra), cwd=REPO, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def metrics(workdir) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not any(t in k for t in TIMING)} for row in rows]


def assert_same(rows: list[dict], reference: list[dict], what: str) -> None:
    """Equal row by row and key by key; the message names the first step and the keys that differ."""
    assert [r["step"] for r in rows] == [r["step"] for r in reference], what
    for row, want in zip(rows, reference):
        differing = {k: (row.get(k), want.get(k)) for k in {*row, *want} if row.get(k) != want.get(k)}
        assert not differing, f"{what}: step {row['step']} differs (got, uninterrupted): {differing}"


def lines(workdir) -> int:
    path = workdir / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def saved_steps(workdir) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def wait_for(condition, proc, timeout=240.0, poll=0.01):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the kill point"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(poll)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, env) -> Path:
    """The uninterrupted run's workdir, shared by every interrupted one (copy it before changing it)."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    finish(workdir, env)
    return workdir


@pytest.fixture(scope="module")
def reference(reference_run):
    rows = metrics(reference_run)
    assert [r["step"] for r in rows] == list(range(1, NUM_STEPS + 1))
    assert any(r["reward_mean"] > 0 for r in rows), "no rewards: the policy loss would never be exercised"
    return rows


def test_kill_9_anywhere_then_resume_matches_the_uninterrupted_run(tmp_path, env, reference):
    """Seed 0 kills at a random moment around the end of the warm start (before any checkpoint), seeds 1-3 after a
    random number of logged steps, seed 4 in the middle of a checkpoint write (tests/pause_saves.py holds the
    written step uncommitted). Each then resumes to the end with --resume."""
    report = []
    for seed in range(5):
        rng = random.Random(seed)
        workdir = tmp_path / f"seed{seed}"
        proc = start(workdir, env, pause_saves=2 if seed == 4 else 0)
        if seed == 0:
            wait_for(lambda: (workdir / "warm_start").exists() or lines(workdir) > 0, proc)
            time.sleep(rng.uniform(0.0, 0.5))
        elif seed < 4:  # strata 1-2, 3-4, 5-6 logged steps, so that early, middle and late kills all occur
            target = 2 * seed - 1 + rng.randint(0, 1)
            wait_for(lambda: lines(workdir) >= target, proc)
            time.sleep(rng.uniform(0.0, 0.2))
        else:
            step = rng.choice([4, 6])  # not the first save: an older complete checkpoint exists to fall back to
            wait_for(lambda: any((workdir / "checkpoints").glob(f"{step}.orbax-checkpoint-tmp*")), proc)
            time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        before = saved_steps(workdir)
        if seed == 4:  # the kill did land mid-write: the step exists only as a tmp directory
            assert any((workdir / "checkpoints").glob(f"{step}.orbax-checkpoint-tmp*")) and step not in before
            assert before and max(before) == step - 2
        finish(workdir, env, resume=True)
        report.append((seed, before))
        assert_same(metrics(workdir), reference, f"seed {seed}, resumed from the checkpoints {before}")
    print("seed, complete checkpoints at the kill:", report)
    assert len({max(before, default=0) for _, before in report}) >= 2, report  # resumed from several points


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_save_at_the_next_step_and_exit_0(tmp_path, env, reference, sig):
    workdir = tmp_path / "run"
    bindings = ["RunConfig.checkpoint_every = 1000"]  # the only checkpoint before the end is the preemption's
    proc = start(workdir, env, bindings)
    wait_for(lambda: lines(workdir) >= 3, proc)
    proc.send_signal(sig)
    sent = time.monotonic()
    assert proc.wait(timeout=60) == 0
    assert time.monotonic() - sent < 30  # one step and one save, not the rest of the run
    stopped = lines(workdir)
    assert 3 <= stopped < NUM_STEPS and saved_steps(workdir) == [stopped]
    stderr = (workdir.parent / "run.stderr").read_text()
    assert f"rlvjax.train: {sig.name}: saved the checkpoint of step {stopped}" in stderr and "Traceback" not in stderr
    finish(workdir, env, bindings, resume=True)
    assert_same(metrics(workdir), reference, f"{sig.name} at step {stopped}")
    assert saved_steps(workdir) == [stopped, NUM_STEPS]


def test_a_second_ctrl_c_stops_at_once(tmp_path, env):
    workdir = tmp_path / "run"
    stderr = workdir.parent / "run.stderr"
    proc = start(workdir, env, ["RunConfig.checkpoint_every = 1000"])
    wait_for(lambda: lines(workdir) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: b"Ctrl-C: saving a checkpoint at the end of this step" in stderr.read_bytes(), proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    text = stderr.read_text()
    assert "rlvjax.train: interrupted again: stopped at once, without saving this step" in text
    assert "Traceback" not in text and saved_steps(workdir) == []


def test_a_busy_workdir_is_refused_and_a_dead_holder_does_not_block_it(tmp_path, env, reference):
    workdir = tmp_path / "run"
    proc = start(workdir, env, pause_saves=10)  # each save takes 10 s: the run outlasts the second's start
    wait_for(lambda: lines(workdir) >= 1, proc)
    second = forkserver.run(command(workdir, resume=True), cwd=REPO, env=env, timeout=300)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"rlvjax.train: error: {workdir} is in use by pid {proc.pid} on {socket.gethostname()} since " \
        in second.stderr
    assert "wait for that run to end (or stop it), or choose another --workdir" in second.stderr
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert (workdir / ".lock").exists()  # the dead holder's name stays; its lock went with it
    finish(workdir, env, resume=True)
    assert_same(metrics(workdir), reference, "resumed after a kill -9 that left its lock file")


def _remove_state(step_dir):
    shutil.rmtree(step_dir / "state")


def _truncate_arrays(step_dir):
    """Every array file emptied, as a save cut before its data reached the disk. (Halving each file is not enough:
    which arrays land in which file's first half varies from run to run, and the weights alone, all an export reads,
    can sit whole in first halves: CI once exported such a step.)"""
    data_files = [path for path in (step_dir / "state").glob("ocdbt.process_*/d/*") if path.stat().st_size > 1024]
    assert data_files
    for path in data_files:
        with open(path, "r+b") as f:
            f.truncate(0)


def _corrupt_config(step_dir):
    (step_dir / "config" / "metadata").write_text("{not json")


def _empty_folder(step_dir):
    shutil.rmtree(step_dir)
    step_dir.mkdir()


DAMAGE = {"no state": _remove_state, "truncated arrays": _truncate_arrays, "corrupt config": _corrupt_config,
          "empty folder": _empty_folder}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_kind_of_damage_is_named_and_skipped(tmp_path, reference_run, kind):
    """In-process, per kind of damage: reading the step names it; restore_intact falls back past it."""
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    DAMAGE[kind](workdir / "checkpoints" / "8")
    with pytest.raises(DamagedCheckpoint, match=f"checkpoint step 8 in {workdir / 'checkpoints'} is damaged .*; "
                                                "pass --checkpoint with another saved step \\(6\\)"):
        export.export(workdir, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()
    with Checkpointer(workdir / "checkpoints") as checkpoints:
        stored = checkpoints.read_config(6)
        abstract = evaluate.abstract_checkpoint(Config.from_dict(stored))[1]
        _, data_state, _, step, skipped = checkpoints.restore_intact(abstract)
        assert step == 6 and len(skipped) == 1 and skipped[0].startswith("checkpoint step 8 ")
        assert "--checkpoint" not in skipped[0]  # the resume went on past it by itself: no advice to pick a step
        assert data_state and checkpoints.set_aside([8]) == workdir / "checkpoints_set_aside"
        assert checkpoints.all_steps() == [6]
    assert (workdir / "checkpoints_set_aside" / "8").is_dir()


def test_the_cli_resumes_past_a_damaged_latest_checkpoint(tmp_path, env, reference, reference_run):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    _truncate_arrays(workdir / "checkpoints" / "8")
    out = finish(workdir, env, resume=True)
    assert f"resuming from step 6; moved the later steps [8] to {workdir / 'checkpoints_set_aside'}" in out.stderr
    assert "checkpoint step 8" in out.stderr and "is damaged" in out.stderr
    assert_same(metrics(workdir), reference, "resumed past a damaged step 8")
    assert saved_steps(workdir) == [6, 8] and (workdir / "checkpoints_set_aside" / "8").is_dir()


# ``python -m rlvjax.train`` with a disk that fills up while step 4's config is written (Orbax's background thread).
DISK_FULL = """
import errno, os, runpy, sys
from etils import epath
path_type = type(epath.Path("/"))
write_text = path_type.write_text
def full(self, *args, **kwargs):
    if self.name == "metadata" and self.parent.name.startswith("config.") and self.parent.parent.name.startswith("4."):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return write_text(self, *args, **kwargs)
path_type.write_text = full
sys.argv = ["rlvjax.train", *sys.argv[1:]]
runpy.run_module("rlvjax.train", run_name="__main__")
"""


def test_a_disk_that_fills_up_mid_save_ends_in_one_line_and_the_run_resumes(tmp_path, env, reference):
    workdir = tmp_path / "run"
    out = forkserver.run([sys.executable, "-c", DISK_FULL, *command(workdir)[3:]], cwd=REPO, env=env,
                         timeout=300)
    errors = [line for line in out.stderr.splitlines() if line.startswith("rlvjax.train: error:")]
    assert out.returncode == 2 and errors == [
        f"rlvjax.train: error: the disk under {workdir / 'checkpoints'} filled up while saving a checkpoint; the "
        "partial save was removed and the latest complete checkpoint is step 2; free some space (or lower "
        "RunConfig.max_to_keep), then rerun with --resume"], out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]  # no *.orbax-checkpoint-tmp*
    finish(workdir, env, resume=True)  # space freed: the run continues from step 2 to the uninterrupted end
    assert_same(metrics(workdir), reference, "resumed after a full disk")


def test_resume_from_a_chosen_step(tmp_path, env, reference, reference_run):
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    missing = forkserver.run(command(workdir, resume=True) + ["--checkpoint", "7"], cwd=REPO, env=env,
                             timeout=300)
    assert missing.returncode == 2 and "no checkpoint for step 7" in missing.stderr and "saved steps: [6, 8]" in \
        missing.stderr
    later = [line for line in (workdir / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] > 6]
    assert later
    out = finish(workdir, env, resume=True, extra=["--checkpoint", "6"])
    assert "resuming from step 6; moved the later steps [8]" in out.stderr
    assert_same(metrics(workdir), reference, "resumed from the chosen step 6")
    # the set-aside steps' log rows went with their checkpoints, not away
    assert (workdir / "checkpoints_set_aside" / "metrics.jsonl").read_text().splitlines() == later
    without = forkserver.run(command(tmp_path / "fresh") + ["--checkpoint", "6"], cwd=REPO, env=env,
                             timeout=300)
    assert without.returncode == 2 and "--checkpoint 6 chooses the step to resume from; pass it with --resume" in \
        without.stderr and not (tmp_path / "fresh").exists()


def test_a_resume_keeps_the_runs_num_steps_unless_a_flag_changes_it(tmp_path, env, reference, reference_run):
    # The launch command repeated with --resume but without its num_steps flag: digit_smoke.gin's 120 steps trained
    # the finished 8-step run on, max_to_keep deleting its last checkpoints, without a word.
    workdir = tmp_path / "run"
    shutil.copytree(reference_run, workdir)
    before = {p.relative_to(workdir): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    params = [arg for binding in TINY if binding != f"RunConfig.num_steps = {NUM_STEPS}"
              for arg in ("--gin_param", binding)]
    forgot = [sys.executable, "-m", "rlvjax.train", "--gin_file", DIGIT, *params, "--workdir", str(workdir), "--resume"]
    out = forkserver.run(forgot, cwd=REPO, env=env, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"rlvjax.train: error: --resume: the --gin_file sets RunConfig.num_steps = 120, the run in {workdir} was set "
        f"to {NUM_STEPS}; pass --gin_param 'RunConfig.num_steps = {NUM_STEPS}' to continue it as it was, or "
        "--gin_param 'RunConfig.num_steps = 120' to train it to that step"], out.stderr
    assert {p.relative_to(workdir): p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before
    # Asked for by a flag, it goes on, and says what changed since the run's last launch
    out = finish(workdir, env, ["RunConfig.num_steps = 10", "RunConfig.log_every = 2"], resume=True)
    assert "rlvjax.train: resuming with changed settings: run.num_steps 8 -> 10, run.log_every 1 -> 2" in \
        out.stderr, out.stderr
    assert [r["step"] for r in metrics(workdir)] == list(range(1, 11))
    assert_same(metrics(workdir)[:NUM_STEPS], reference, "the first 8 steps")


def test_a_rollback_takes_the_baseline_back_with_the_run(tmp_path, capsys):
    """``--resume --checkpoint N`` takes the lambda = 0 baseline back to its newest step at or before N in the same
    invocation. It went back only when it had step N itself: here (the baseline started after the run's step 3, so
    it saved 2 and 4) the run went back to 3, then the baseline's step 4 was refused against num_steps = 3, the run
    was left changed and stuck; and a retraining interrupted before the baseline left it at its later steps."""
    workdir = tmp_path / "run"

    def run(steps, baseline, **kw):
        bindings = ["WarmStartConfig.num_steps = 0", "RunConfig.eval_every = 0", "TaskSpec.num_eval = 0",
                    "RunConfig.final_eval_samples = 0", "RunConfig.checkpoint_every = 2",
                    "RunConfig.max_to_keep = None", f"RunConfig.num_steps = {steps}",
                    f"RunConfig.baseline = {baseline}"]
        gin.clear_config()
        try:
            cli.run_main("rlvjax.train", lambda argv: train.launch([DIGIT], bindings, str(workdir), **kw))([])
        finally:
            gin.clear_config()

    run(3, False)
    run(4, True, resume=True)
    baseline = workdir / outputs.BASELINE
    assert step_folders(workdir / "checkpoints") == [2, 3, 4] and step_folders(baseline / "checkpoints") == [2, 4]
    capsys.readouterr()
    run(3, True, resume=True, resume_step=3)
    err = capsys.readouterr().err
    assert "the lambda = 0 baseline goes back to step 2 too; moved its later steps [4]" in err, err
    assert step_folders(workdir / "checkpoints") == [2, 3] and step_folders(baseline / "checkpoints") == [2, 3]
    assert step_folders(baseline / "checkpoints_set_aside") == [4]
    assert export_stamp(baseline / "final")["rlvjax_step"] == "3"  # its step-4 policy went aside with its step
    assert (baseline / "checkpoints_set_aside" / "outputs_of_step_4" / "final").is_dir()
    assert [r["step"] for r in metrics(baseline)] == [1, 2, 3]


def test_a_kill_between_the_moves_of_a_rollback_loses_no_log_rows(tmp_path, monkeypatch):
    """``--checkpoint N`` moves the later steps' log rows and outputs aside before their checkpoints: killed between
    the two, the rerun finds those checkpoints and moves the rest. The checkpoints went first, and a kill before the
    rows followed left a rerun with no later steps, which dropped those rows for good."""
    workdir = tmp_path / "run"
    bindings = ["WarmStartConfig.num_steps = 0", "RunConfig.eval_every = 0", "TaskSpec.num_eval = 0",
                "RunConfig.final_eval_samples = 0", "RunConfig.checkpoint_every = 2", "RunConfig.max_to_keep = None",
                "RunConfig.num_steps = 4"]

    def run(**kw):
        gin.clear_config()
        try:
            cli.run_main("rlvjax.train", lambda argv: train.launch([DIGIT], bindings, str(workdir), **kw))([])
        finally:
            gin.clear_config()

    run()
    later = [line for line in (workdir / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] > 2]
    assert len(later) == 2

    def killed(*args, **kwargs):  # as a kill -9 at the rows' move
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "rewind_logs", killed)
    with pytest.raises(SystemExit):
        run(resume=True, resume_step=2)
    monkeypatch.undo()
    run(resume=True, resume_step=2)
    assert (workdir / "checkpoints_set_aside" / "metrics.jsonl").read_text().splitlines() == later
    assert step_folders(workdir / "checkpoints_set_aside") == [4] and step_folders(workdir / "checkpoints") == [2, 4]
    # Killed after the rows moved, before the checkpoints: a plain --resume finishes the rollback and retrains steps
    # 3-4 (it resumed from the old step 4, and the run's own log lacked rows 3 and 4 for good).
    aside_rows = (workdir / "checkpoints_set_aside" / "metrics.jsonl").read_text().splitlines()
    monkeypatch.setattr(Checkpointer, "set_aside", killed)
    with pytest.raises(SystemExit):
        run(resume=True, resume_step=2)
    monkeypatch.undo()
    assert [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    run(resume=True)
    assert [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert step_folders(workdir / "checkpoints_set_aside") == [4] and step_folders(workdir / "checkpoints") == [2, 4]
    assert len((workdir / "checkpoints_set_aside" / "metrics.jsonl").read_text().splitlines()) == len(aside_rows) + 2
    assert outputs.pending_rollback(workdir) is None
    # Killed just after the checkpoints moved: the rerun moves nothing, and the mark must still go (left, every later
    # plain --resume would have taken the run back to step 2 again)
    set_aside = Checkpointer.set_aside

    def then_killed(self, steps):
        set_aside(self, steps)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "set_aside", then_killed)
    with pytest.raises(SystemExit):
        run(resume=True, resume_step=2)
    monkeypatch.undo()
    assert outputs.pending_rollback(workdir) == 2 and step_folders(workdir / "checkpoints") == [2]
    run(resume=True)
    assert outputs.pending_rollback(workdir) is None and step_folders(workdir / "checkpoints") == [2, 4]


def in_process(workdir, bindings, *, resume=False):
    """``python -m rlvjax.train`` in this process: (exit code, stderr lines of the CLI)."""
    gin.clear_config()
    try:
        cli.run_main("rlvjax.train", lambda argv: train.launch([DIGIT], [*TINY, *bindings], str(workdir),
                                                                 resume=resume))([])
        return 0
    except SystemExit as e:
        return e.code
    finally:
        gin.clear_config()



def test_a_resume_after_the_warm_start_was_exported_does_not_redo_it(tmp_path, monkeypatch, capsys, reference):
    """SIGTERM after the warm start's export (while the RL steps compile, minutes at scale): the resume starts from
    that export instead of redoing the warm start, and continues as the uninterrupted run."""
    exported = train.save_hf

    def export_then_sigterm(model, tokenizer, path, **kw):
        exported(model, tokenizer, path, **kw)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train, "save_hf", export_then_sigterm)
    workdir = tmp_path / "run"
    planned = re.compile(r"^  warm start +warm params ", re.M)  # the memory plan's row
    assert in_process(workdir, []) == 0
    out, err = capsys.readouterr()
    assert "SIGTERM before the first RL step" in err and saved_steps(workdir) == []
    assert planned.search(out), out  # the run that warm-starts plans it

    def again(*args, **kwargs):
        raise RuntimeError("the warm start ran again")

    monkeypatch.setattr(train.sft, "warm_start", again)
    assert in_process(workdir, [], resume=True) == 0
    out, err = capsys.readouterr()
    assert f"resuming from the warm start in {workdir / 'warm_start'}" in err
    assert not planned.search(out), out  # nor would a smaller budget be refused for a warm start it won't run
    assert_same(metrics(workdir), reference, "resumed from the exported warm start")
    # another warm start asked for (here: more steps) is not the exported one: it is redone, and planned
    for name in ("checkpoints", *outputs.OUTPUTS):  # a finished run's own final policy and report: not replaced
        if (workdir / name).is_dir():
            shutil.rmtree(workdir / name)
        else:
            (workdir / name).unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match="the warm start ran again"):
        in_process(workdir, ["WarmStartConfig.num_steps = 31"], resume=True)
    assert planned.search(capsys.readouterr().out)


def test_a_warm_start_that_diverges_stops_before_its_export(tmp_path, capsys):
    """Its NaN weights were exported, stamped and reused by every resume, under a message saying the checkpoint
    held finite parameters."""
    workdir = tmp_path / "run"
    assert in_process(workdir, ["WarmStartConfig.learning_rate = 1e30"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlvjax.train: error:")]
    assert len(err) == 1 and re.search(r"the warm start diverged \((loss nan at step \d+|non-finite parameters after "
                                       r"step \d+) of \d+\); nothing was exported: lower "
                                       r"WarmStartConfig.learning_rate \(now 1e\+30\) and rerun, e.g. with "
                                       r"--gin_param 'WarmStartConfig.learning_rate = 1e\+29'$", err[0]), err
    assert not (workdir / "warm_start").exists() and saved_steps(workdir) == []


def test_sigterm_before_the_first_step_exits_0_at_once(tmp_path, monkeypatch, capsys):
    def preempted_warm_start(graphdef, params, *args, stop, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives during the warm start's first step
        stop()  # the next step's check stops the run
        raise AssertionError("SIGTERM did not stop the warm start")

    monkeypatch.setattr(train.sft, "warm_start", preempted_warm_start)
    assert in_process(tmp_path / "run", []) == 0
    assert "rlvjax.train: SIGTERM before the first RL step; nothing to save, rerun with --resume" in \
        capsys.readouterr().err
    assert saved_steps(tmp_path / "run") == [] and not (tmp_path / "run" / "metrics.jsonl").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    # "rerun with --resume" works without the gin flags: the config was written before the warm start (it used to
    # be written after it, and `--resume` alone found no config to continue with).
    gin.clear_config()
    try:
        stored = resume.stored_config(tmp_path / "run", None)
        gin.clear_config()
        gin.parse_config_files_and_bindings([DIGIT], TINY)
        assert stored == Config.from_gin()
    finally:
        gin.clear_config()


@pytest.mark.parametrize("minibatches,limit,nan_from,stop,counts", [(1, 3, 3, 5, [0, 0, 1, 2, 3]),
                                                                    (2, 3, 3, 4, [0, 0, 2, 4]), (1, 1, 1, 1, [1])])
def test_nonfinite_updates_are_skipped_counted_and_stop_the_run(tmp_path, monkeypatch, capsys, minibatches, limit,
                                                                nan_from, stop, counts):
    """NaN rewards from step 3 on make every gradient NaN. One update per step: steps 3, 4 are skipped (and
    checkpointed: their params are step 2's), step 5 is the third in a row and stops the run before its checkpoint.
    Two updates per step: step 4 holds the 3rd and 4th; optax *applies* the 4th (NaN params), and the run stops
    before saving them. A limit of 1 with NaN from the first step stops before any checkpoint: the resume the line
    advises starts the run afresh."""
    calls, real_rewards = [], Rewards.__call__

    def rewards(self, prompts, completions, records, completion_ids=None):  # past a reward function's checks
        values = real_rewards(self, prompts, completions, records, completion_ids)
        if len(completions) != 64:  # not a training step's 8 prompts x 8 samples (the probe, an eval pool)
            return values
        calls.append(len(completions))
        nan = values._replace(rewards=np.full(len(completions), np.nan, np.float32))
        return values if len(calls) < nan_from else nan

    monkeypatch.setattr(Rewards, "__call__", rewards)
    workdir = tmp_path / "run"
    code = in_process(workdir, [f"OptimConfig.max_consecutive_nonfinite = {limit}", "RunConfig.checkpoint_every = 1",
                                "RunConfig.max_to_keep = 5", f"RLConfig.num_minibatches = {minibatches}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlvjax.train: error:")]
    assert code == 1 and len(err) == 1, err
    updates = "an optimizer update" if counts[-1] == 1 else f"{counts[-1]} optimizer updates in a row"
    assert (f"{updates} had a non-finite loss or gradient (the last at step {stop}; "
            f"OptimConfig.max_consecutive_nonfinite={limit}); stopped before saving step {stop}" + (
                f", the latest checkpoint (step {stop - 1}) holds finite parameters. " if stop > 1 else
                " (no checkpoint saved yet). ")) in err[0]
    rows = metrics(workdir)
    assert [r["nonfinite_updates"] for r in rows] == counts
    assert [r["consecutive_nonfinite"] for r in rows] == counts
    assert saved_steps(workdir) == list(range(1, stop))
    if stop > 1:
        stored = {step: ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
                  for step in (2, stop - 1)}
        for got, want in zip(jax.tree.leaves(stored[stop - 1]["params"]), jax.tree.leaves(stored[2]["params"])):
            assert np.all(np.isfinite(got))
            np.testing.assert_array_equal(got, want)  # skipped updates leave the parameters alone
        assert int(stored[stop - 1]["opt_state"]["notfinite_count"]) == counts[-2]
    # The message's advice works: --resume with the run's own config and the lower learning rate on top of it.
    advice = err[0].split("--resume, e.g. with --gin_param ")[1].strip("'")
    assert advice == "OptimConfig.learning_rate = 0.0005"  # digit_smoke's 1e-3, halved
    monkeypatch.setattr(Rewards, "__call__", real_rewards)
    gin.clear_config()
    try:
        cli.run_main("rlvjax.train", lambda argv: train.launch(None, [advice], str(workdir), resume=True))([])
    finally:
        gin.clear_config()
    assert [r["step"] for r in metrics(workdir)] == list(range(1, NUM_STEPS + 1))
    assert all(r["consecutive_nonfinite"] == 0 for r in metrics(workdir)[stop - 1:])


def small_run(bindings) -> Config:
    gin.clear_config()
    gin.parse_config_files_and_bindings([DIGIT], ["WarmStartConfig.num_steps = 0", "RunConfig.num_steps = 1",
                                                  "RunConfig.baseline = True", *bindings])
    try:
        return Config.from_gin()
    finally:
        gin.clear_config()


def test_ctrl_c_during_the_final_export_stops_before_the_baseline(tmp_path, monkeypatch):
    """The export finishes (the notice waits for it); then the run stops instead of training the baseline."""
    exported = train.save_hf

    def export_then_ctrl_c(model, tokenizer, path, **kw):
        exported(model, tokenizer, path, **kw)
        if Path(path).name == "final":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train, "save_hf", export_then_ctrl_c)
    with pytest.raises(cli.Preempted, match="SIGINT: training is complete and saved; stopped before what follows it "
                                            r"\(the baseline, the report\); rerun with --resume to do it"):
        train.run_and_report(small_run(["RunConfig.final_eval_samples = 0"]), tmp_path / "run")
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "baseline_lambda0").exists()



SIGTERM_IN_REPORT = """
import os, signal, sys, time
import gin
from rlvjax import cli, evaluate, train
from rlvjax.config import Config

def report(*args, **kwargs):  # hours of sampling, when the scheduler's notice (or the user's Ctrl-C) comes
    os.kill(os.getpid(), getattr(signal, sys.argv[3]))
    time.sleep(60)

evaluate.final_report = report
gin.parse_config_files_and_bindings([sys.argv[1]], ["WarmStartConfig.num_steps = 0", "RunConfig.num_steps = 1",
                                                    "RunConfig.final_eval_samples = 2"])
if sys.argv[4] == "cli":
    cli.run_main("rlvjax.train", lambda argv: train.run_and_report(Config.from_gin(), sys.argv[2], command=True))([])
else:  # a Python session (a notebook's interrupt): KeyboardInterrupt, the session goes on
    # as an interactive session or a kernel has it, however the tests were started (a background job of a script
    # starts with SIGINT ignored, and Python then keeps it so)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        train.run_and_report(Config.from_gin(), sys.argv[2])
    except KeyboardInterrupt:
        print("the session goes on")
"""


@pytest.mark.parametrize("notice", ["SIGTERM", "SIGINT"])
def test_sigterm_during_the_report_stops_at_once_with_one_line(tmp_path, env, notice):
    """Nothing is left to save: the process ends at once, exit 0 and one line (it died with 143 and no word; a
    Ctrl-C with 130 and "interrupted", where one in training is honoured with exit 0)."""
    from rlvjax.lock import workdir_lock

    out = forkserver.run([sys.executable, "-c", SIGTERM_IN_REPORT, DIGIT, str(tmp_path / "run"), notice, "cli"],
                         cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"rlvjax.train: {'Ctrl-C' if notice == 'SIGINT' else 'SIGTERM'} during the end-of-run report: training is "
        "complete and saved; stopped without it; rerun with --resume to do it")
    if notice == "SIGINT":  # the same call in a Python session (a notebook): its interrupt ended the process
        session = forkserver.run([sys.executable, "-c", SIGTERM_IN_REPORT, DIGIT, str(tmp_path / "session"), notice,
                                  "python"], cwd=REPO, env=env, timeout=300)
        assert session.returncode == 0, session.stderr[-3000:]
        assert session.stdout.strip().endswith("the session goes on"), session.stdout[-2000:]
    run = tmp_path / "run"
    assert (run / "final" / "model.safetensors").is_file() and not (run / "eval.json").exists()
    with workdir_lock(tmp_path / "run"):  # released with the process
        pass


SIGTERM_IN_SETUP = """
import json, os, signal, sys, time
import gin
from rlvjax import cli, experiment, train
from rlvjax.config import Config

real = experiment.build_policy

def load(*args, **kwargs):  # minutes for a 1.5B model, when the scheduler's notice comes
    if sys.argv[3] == "baseline" and not os.path.isdir(os.path.join(sys.argv[2], "final")):
        return real(*args, **kwargs)  # the run itself; the notice comes as its lambda = 0 baseline loads
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)

experiment.build_policy = load
gin.parse_config_files_and_bindings([sys.argv[1]], json.loads(sys.argv[4]))
if sys.argv[3] in ("command", "baseline"):
    cli.run_main("rlvjax.train", lambda argv: train.run_and_report(Config.from_gin(), sys.argv[2], command=True))([])
else:  # a Python API script
    try:
        train.run_and_report(Config.from_gin(), sys.argv[2])
    except cli.Preempted as e:
        print("raised:", e)
    finally:
        print("the script's cleanup ran")
    print("the script goes on")
"""


@pytest.mark.parametrize("caller", ["command", "script", "baseline"])
def test_sigterm_while_the_model_loads_stops_at_once_with_one_line(tmp_path, env, caller):
    """Before the notice handlers were in, it died with 143 and no word (a sweep counted the run as failed). A
    Python API script was ended at once too, exit 0: its cleanup never ran, and `python script.py && publish` went on
    (review, 2026-12-06); there the SIGTERM now raises Preempted where the script is. In the lambda = 0 baseline's
    start-up the run itself is saved: the line said "before anything was written; rerun with the same command",
    which was then refused (review, 2026-12-06); the --resume it now advises does the baseline."""
    bindings = [*TINY, "RunConfig.export_final = True", "RunConfig.baseline = True"] if caller == "baseline" else []
    out = forkserver.run([sys.executable, "-c", SIGTERM_IN_SETUP, DIGIT, str(tmp_path / "run"), caller,
                          json.dumps(bindings)], cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = "SIGTERM " + (train.BASELINE_STARTING if caller == "baseline" else train.STARTING)
    if caller == "script":
        assert out.stdout.splitlines() == [f"raised: {line}", "the script's cleanup ran", "the script goes on"], \
            out.stdout + out.stderr[-3000:]
    else:
        assert out.stderr.strip().splitlines()[-1] == f"rlvjax.train: {line}"
    if caller != "baseline":
        assert line.endswith("before anything was written; rerun with the same command")
        assert not (tmp_path / "run").exists()
        return
    assert line.endswith("the run itself is trained and saved: rerun with --resume to go on with the baseline")
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "baseline_lambda0" / "checkpoints").exists()
    gin.clear_config()
    try:  # the advice: --resume, which trains the baseline (the run itself is not trained again)
        train.launch([DIGIT], bindings, str(tmp_path / "run"), resume=True)
    finally:
        gin.clear_config()
    assert (tmp_path / "run" / "baseline_lambda0" / "final" / "model.safetensors").is_file()
    assert len(metrics(tmp_path / "run")) == NUM_STEPS


def test_the_baseline_and_the_report_run_under_the_workdir_locks(tmp_path, monkeypatch):
    """A second process cannot resume the run (or its baseline) while the report reads the exported policies."""
    from rlvjax.lock import WorkdirBusy, workdir_lock

    held = []

    def report(config, workdir, policies, **given):
        for directory in (workdir, workdir / "baseline_lambda0"):
            with pytest.raises(WorkdirBusy):
                with workdir_lock(directory):
                    pass
            held.append(directory.name)
        return {"policies": sorted(policies)}

    monkeypatch.setattr(evaluate, "final_report", report)
    done = train.run_and_report(small_run(["RunConfig.final_eval_samples = 2", "RunConfig.export_final = True"]),
                                tmp_path / "run")
    assert done == {"policies": ["final", "lambda0"]} and held == ["run", "baseline_lambda0"]
    config = json.loads((tmp_path / "run" / "baseline_lambda0" / "config.json").read_text())
    assert config["rl"]["lambda_verify"] == 0.0
    with workdir_lock(tmp_path / "run"):  # released at the end
        pass
