"""The export CLI on a tiny trained run: transformers loads the directory and agrees with our model; user errors."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from safetensors.numpy import load_file

from rlvjax import atomic, evaluate, export, train
from rlvjax.checkpoint import Checkpointer
from rlvjax.config import Config
from rlvjax.data import arithmetic
from rlvjax.data.tokenizer import build_tokenizer
from rlvjax.model.hf import export_stamp
from rlvjax.rl.verifier import BASE_VERIFY_PROMPT
import forkserver

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Two RL^V steps of the tiny sweep config, a checkpoint after each, train's own HF export of the last; no warm
    start and no evaluation (fewer programs to compile): export needs trained weights, not good ones."""
    workdir = tmp_path_factory.mktemp("run")
    gin.clear_config()
    gin.parse_config_files_and_bindings([str(REPO / "configs" / "tiny_sweep.gin")], [
        "WarmStartConfig.num_steps = 0", "TaskSpec.num_eval = 0", "RunConfig.final_eval_samples = 0"])
    try:
        train.train(Config.from_gin(), str(workdir))
    finally:
        gin.clear_config()
    return workdir


def export_cli(*args):
    return forkserver.run([sys.executable, "-m", "rlvjax.export", *map(str, args)], timeout=300, cwd=REPO)


def test_export_loads_in_transformers_with_the_same_logits(run_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "hf"
    done = export_cli("--workdir", run_dir, "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"exported step 2 of {run_dir}" in done.stdout
    written = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left beside it

    # The latest step is the state train exported itself at the end.
    exported, final = load_file(out / "model.safetensors"), load_file(run_dir / "final" / "model.safetensors")
    assert exported.keys() == final.keys()
    for name in final:
        np.testing.assert_array_equal(exported[name], final[name], err_msg=name)

    # transformers v5 names a plain fast tokenizer "TokenizersBackend", which v4 cannot load; both load this name
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    record = arithmetic.digit_records(0, 1)[0]
    text = record["prompt"] + arithmetic.format_solution([], 7) + BASE_VERIFY_PROMPT + " Yes"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids == build_tokenizer().encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text

    torch_model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = torch_model(torch.tensor([ids])).logits.numpy()
    with Checkpointer(run_dir / "checkpoints") as checkpoints:
        stored = checkpoints.read_config(2)
    ours_model, _ = evaluate.load_checkpoint_policy(run_dir, 2, Config.from_dict(stored))
    ours = np.asarray(ours_model(jnp.asarray([ids])))
    assert ours.shape == theirs.shape == (1, len(ids), len(tokenizer))
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)


def test_export_of_an_earlier_step_and_overwrite(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(run_dir.parent)  # a relative --workdir, as README writes it (Orbax called the steps damaged)
    assert export.export(run_dir.name, tmp_path / "relative", step=1) == 1
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty; pass --overwrite"):
        export.export(run_dir, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # refused before anything was written
    assert export.export(run_dir, out, step=1, overwrite=True) == 1
    assert not (out / "keep.txt").exists()
    step1, step2 = (load_file(p) for p in (out / "model.safetensors", run_dir / "final" / "model.safetensors"))
    assert any(not np.array_equal(step1[name], step2[name]) for name in step2)  # the update changed the weights
    assert export_stamp(out)["rlvjax_step"] == "1"  # what evaluate --model_dir reports as the step it evaluated
    # in bfloat16: an f32 run of a bf16 checkpoint exported twice its size (review 2026-12-07)
    assert export.export(run_dir, tmp_path / "bf16", step=2, dtype="bfloat16") == 2
    halved = load_file(tmp_path / "bf16" / "model.safetensors")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    for name in step2:
        assert halved[name].dtype == jnp.bfloat16, name
        np.testing.assert_array_equal(halved[name], step2[name].astype(jnp.bfloat16), err_msg=name)
    assert (tmp_path / "bf16" / "model.safetensors").stat().st_size < 0.6 * (out / "model.safetensors").stat().st_size
    for bad in ("int8", "auto"):  # int8 wrote weights of zeros that loaded back without a word
        with pytest.raises(ValueError, match=rf"^save_hf: dtype='{bad}' is not a floating dtype"):
            export.export(run_dir, tmp_path / "bad", dtype=bad)
    assert not (tmp_path / "bad").exists()
    assert export.export(run_dir, tmp_path / "bf16", dtype=jnp.bfloat16, overwrite=True) == 2  # (was a JSON error)

    # the weights alone, as host arrays: not the AdamW moments (2x the weights) nor a reference policy
    with Checkpointer(run_dir / "checkpoints", read_only=True) as checkpoints:
        config = Config.from_dict(checkpoints.read_config(1))
        graphdef, state, _ = evaluate.abstract_checkpoint(config)
        params = checkpoints.restore_params(state.params, 1)
        whole, _, _ = checkpoints.restore(state, 1)
    assert jax.tree.structure(params) == jax.tree.structure(whole.params)
    assert all(type(x) is np.ndarray for x in jax.tree.leaves(params))
    jax.tree.map(np.testing.assert_array_equal, params, jax.tree.map(np.asarray, whole.params))


def test_a_home_relative_out_is_checked_where_it_is_written(run_dir, tmp_path, monkeypatch):
    """``--out=~/x`` (which the shell leaves unexpanded after '='): save_hf writes to $HOME/x, so the checks that
    refuse to replace a non-empty folder or a run look there too; they looked at ./~/x, and --overwrite then
    replaced whatever $HOME/x was, a training run included."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty; pass --overwrite"):
        export.export(run_dir, "~/mine")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "checkpoints").mkdir()  # a run (its folder), which --overwrite must never delete
    with pytest.raises(ValueError, match="is the training run"):
        export.export(run_dir, "~/runs", overwrite=True)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "mine" and (tmp_path / "runs" / "checkpoints").is_dir()
    assert not (tmp_path / "~").exists()
    assert export.export(run_dir, "~/hf") == 2
    assert (tmp_path / "hf" / "model.safetensors").is_file()


SLOW_EXPORT = """
import time
from absl import flags
import rlvjax.model.hf as hf
save_file = hf.save_file
def slow(*args, **kwargs):
    save_file(*args, **kwargs)
    print("weights written", flush=True)
    time.sleep(120)
hf.save_file = slow
from rlvjax import cli, export
flags.DEFINE_string("workdir", None, "")
flags.DEFINE_string("out", None, "")
flags.DEFINE_integer("checkpoint", None, "")
flags.DEFINE_bool("overwrite", False, "")
flags.DEFINE_string("max_shard_size", "5GB", "")
flags.DEFINE_string("dtype", None, "")
cli.run("rlvjax.export", export.main)
"""


def test_a_sigterm_during_an_export_leaves_nothing_and_says_so(run_dir, tmp_path):
    """A scheduler's SIGTERM while the weights are being written: the half-written hidden copy beside --out is
    removed (before: left behind, the whole weights, exit 143 with no word), one line, exit 130."""
    import signal

    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, f"--workdir={run_dir}", f"--out={tmp_path / 'hf'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "weights written"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".hf.")]  # the copy being written
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert [line for line in err.splitlines() if line.startswith("rlvjax.export")] == ["rlvjax.export: interrupted"]
    assert list(tmp_path.iterdir()) == []


def test_export_user_errors(run_dir, tmp_path):
    out = tmp_path / "hf"
    missing = export_cli("--workdir", tmp_path / "nope", "--out", out)
    assert missing.returncode == 2
    lines = [line for line in missing.stderr.splitlines() if line.startswith("rlvjax.export: error:")]
    assert len(lines) == 1 and "does not exist" in lines[0], missing.stderr[-2000:]

    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoints in"):
        export.export(tmp_path / "empty_run", out)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 5 .* saved steps: \[1, 2\]"):
        export.export(run_dir, out, step=5)
    with pytest.raises(ValueError, match="would replace the training run"):
        export.export(run_dir, run_dir.parent, overwrite=True)
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="a folder on its path is a file"):
        export.export(run_dir, tmp_path / "afile" / "sub")
    with pytest.raises(ValueError, match=r"is not a usable path \(File name too long\)"):  # was an OSError traceback
        export.export(run_dir, tmp_path / ("x" * 300))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        export.export(run_dir, tmp_path / "file")
    for size in ("5XB", "0MB", "-1GB"):
        with pytest.raises(ValueError, match=f"--max_shard_size '{size}' is not a size; pass a number with a unit"):
            export.export(run_dir, out, max_shard_size=size)
    assert not out.exists() and (run_dir / "checkpoints").is_dir()


def test_export_never_writes_into_what_a_run_manages(run_dir, tmp_path):
    other = tmp_path / "other_run"
    (other / "checkpoints").mkdir(parents=True)
    steps = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    for out, managed in [(run_dir / "checkpoints", run_dir / "checkpoints"),
                         (run_dir / "checkpoints" / "7", run_dir / "checkpoints"),  # a fake latest step
                         (run_dir / "final", run_dir / "final"),
                         (run_dir / "tensorboard" / "x", run_dir / "tensorboard"),
                         (run_dir / "eval" / "final", run_dir / "eval"),  # evaluate's reports
                         (other / "checkpoints" / "3", other / "checkpoints")]:  # another run's checkpoints
        done = export_cli("--workdir", run_dir, "--out", out, "--overwrite")
        assert done.returncode == 2, done.stderr
        where = "is" if out == managed else "is inside"  # "final is inside final" (review)
        assert f"rlvjax.export: error: --out {out} {where} {managed}, which the run in {managed.parent} manages" \
            in done.stderr
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == steps
    assert export.export(run_dir, run_dir / "export") == 2  # next to them is fine


def test_overwrite_never_deletes_another_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for other, mark in (("b", "checkpoints"), ("c", "config.gin"), ("d", ".lock")):  # a run, however young
        (tmp_path / other).mkdir()
        (tmp_path / other / mark).mkdir() if mark == "checkpoints" else (tmp_path / other / mark).write_text("")
        with pytest.raises(ValueError, match=f"--out {tmp_path / other} is the training run {tmp_path / other}; "):
            export.check_out(tmp_path / other, run, overwrite=True)
    (tmp_path / "runs" / "b").mkdir(parents=True)
    (tmp_path / "runs" / "b" / "config.gin").write_text("")
    with pytest.raises(ValueError, match=f"holds the training run {tmp_path / 'runs' / 'b'}; "):
        export.check_out(tmp_path / "runs", run, overwrite=True)
    (tmp_path / "projects" / "sweep" / "lambda_1" / "checkpoints").mkdir(parents=True)  # a sweep root: it deleted it
    with pytest.raises(ValueError, match=f"holds the training run {tmp_path / 'projects' / 'sweep' / 'lambda_1'}; "):
        export.check_out(tmp_path / "projects", run, overwrite=True)
    with pytest.raises(ValueError, match=r"data is \S*data, which the run in .* manages"):  # its in-memory rows
        export.check_out(run / "data", run, overwrite=True)
    (tmp_path / "old_export" / "sub").mkdir(parents=True)
    export.check_out(tmp_path / "old_export", run, overwrite=True)  # no run there: replaced as asked
    # '' and '.' (an unset shell variable) are the working directory, which no rename can replace: it was an
    # OSError traceback, with --overwrite after moving the user's files aside.
    (tmp_path / "cwd" / "sub").mkdir(parents=True)
    (tmp_path / "cwd" / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path / "cwd" / "sub")
    for out in ("", ".", ".."):
        with pytest.raises(ValueError, match=f"--out '{out or '.'}' is the working directory or holds it; pass a new "):
            export.check_out(Path(out), run, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "cwd").iterdir()) == ["notes.txt", "sub"]


def test_a_disk_that_fills_up_during_an_hf_export_is_one_error_and_leaves_nothing(tmp_path):
    import resource
    import signal

    from flax import nnx

    from rlvjax.checkpoint import DiskFullError
    from rlvjax.model.hf import save_hf
    from rlvjax.model.transformer import ModelConfig, Transformer

    model = Transformer(ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                                    num_kv_heads=2), nnx.Rngs(0))
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, limits[1]))  # files past 16 KiB fail with EFBIG
    try:
        with pytest.raises(DiskFullError, match=r"the disk under .* filled up while writing export; nothing was .* "
                           r"the command again \(a training run's: with --resume\)$"):
            save_hf(model, None, tmp_path / "export")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert list(tmp_path.iterdir()) == []  # no partial export, no temporary


def test_save_hf_replaces_only_an_earlier_export_unless_told(tmp_path, monkeypatch):
    """It deleted whatever the directory held (transformers' save_pretrained only adds files)."""
    from flax import nnx

    from rlvjax.model.hf import save_hf
    from rlvjax.model.transformer import ModelConfig, Transformer

    model = Transformer(ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                                    num_kv_heads=1, qkv_bias=True), nnx.Rngs(0))
    project = tmp_path / "project"
    (project / "runs").mkdir(parents=True)
    (project / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=f"^{project} holds files that are not an earlier rlvjax export .*; save into "
                                         "a new or empty "):
        save_hf(model, None, project)
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt", "runs"]
    # A model another tool saved (a downloaded base model: its README, license, generation config) is no earlier
    # export: it was replaced whole, its own files deleted
    downloaded = tmp_path / "base"
    save_hf(model, None, downloaded)
    from safetensors.numpy import load_file, save_file

    save_file(load_file(downloaded / "model.safetensors"), downloaded / "model.safetensors", metadata={"format": "pt"})
    (downloaded / "LICENSE").write_text("theirs")
    with pytest.raises(ValueError, match="holds files that are not an earlier rlvjax export"):
        save_hf(model, None, downloaded)
    assert (downloaded / "LICENSE").read_text() == "theirs"
    (tmp_path / "results.csv").write_text("a,b")
    with pytest.raises(ValueError, match="results.csv is a file; save the model into a directory"):
        save_hf(model, None, tmp_path / "results.csv", overwrite=True)
    monkeypatch.chdir(project)
    with pytest.raises(ValueError, match="^. is the working directory or holds it; save into a new directory"):
        save_hf(model, None, ".", overwrite=True)  # an OSError, leaving a ..old-* folder
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt", "runs"]
    monkeypatch.chdir(tmp_path)
    save_hf(model, None, tmp_path / "export")
    save_hf(model, None, tmp_path / "export")  # an earlier export: replaced, as before
    save_hf(model, None, project, overwrite=True)  # told to: replaced whatever it held
    assert not (project / "notes.txt").exists() and (project / "model.safetensors").is_file()
    # What killed exports left beside it, a model's size each, goes: a dead process's staging folder, and the export
    # kept aside between two renames once the directory is whole again; a running export's staging stays. Another
    # host's (the folder may be shared: host "node-7-1" is not "node-7", whose dead pid it may hold) goes once
    # untouched for an hour. A user's own hidden folders stay, however old, those shaped like the pid-only staging
    # names of the code before 2026-12-05 too (".export.12-original").
    monkeypatch.setattr(socket, "gethostname", lambda: "node-7")  # a name with a dash
    names = {".export.4194305@node-7-a1b2c3d4": False, f".export.{os.getpid()}@node-7-e5f6g7h8": True,
             ".export.old-i9j0k1l2": False, ".export.4194305@node-7-1-m3n4o5p6": True,
             ".export.13@node-8-q7r8s9t0": False, ".export.12-original": True, ".export.2024-06-01": True,
             ".export.4194305@node-7-notes": True}
    aged = (".export.13@node-8-q7r8s9t0", ".export.12-original", ".export.2024-06-01",
            ".export.4194305@node-7-notes")
    hour_ago = time.time() - atomic.STALE_S - 60
    for name in names:
        (tmp_path / name).mkdir()
        if name in aged:
            os.utime(tmp_path / name, (hour_ago, hour_ago))
    save_hf(model, None, tmp_path / "export")
    assert sorted(p.name for p in tmp_path.glob(".export.*")) == sorted(name for name, kept in names.items() if kept)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    save_hf(model, None, "~/x")  # a literal ./~/x before
    assert (tmp_path / "home" / "x" / "config.json").is_file() and not (project / "~").exists()


def test_replace_dir_never_loses_what_was_there(tmp_path, monkeypatch):
    def new_dir():
        tmp = tmp_path / ".out.tmp"
        tmp.mkdir()
        (tmp / "model.safetensors").write_text("new")
        return tmp

    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("another export's")  # written since check_out saw no --out
    with pytest.raises(FileExistsError, match="was written by another process meanwhile and was left as it is"):
        atomic.replace_dir(new_dir(), out, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "model.safetensors").read_text() == "another export's"

    renames = []

    def interrupted(src, dst):  # Ctrl-C between moving the old directory aside and moving the new one in
        renames.append(dst)
        if len(renames) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.replace_dir(new_dir(), out)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old one back, no temporaries
    assert (out / "model.safetensors").read_text() == "another export's"
    atomic.replace_dir(new_dir(), out)
    assert (out / "model.safetensors").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_two_writers_overwriting_one_folder_at_once_take_turns(tmp_path):
    """Two `export --overwrite` (or save_model(overwrite=True)) into one --out: their renames interleaved. In 300
    rounds of two threads: OSError "Directory not empty" tracebacks, FileNotFoundErrors and a wrong "is a file"."""
    import tempfile
    import threading

    out, errors = tmp_path / "X", []

    def write(tag, start):
        tmp = Path(tempfile.mkdtemp(prefix=f".X.{os.getpid()}@{socket.gethostname()}-", dir=tmp_path))
        (tmp / "config.json").write_text(tag)
        start.wait()
        try:
            atomic.replace_dir(tmp, out, overwrite=True)
        except Exception as e:  # any failure is the defect
            errors.append(repr(e))

    for _ in range(100):
        start = threading.Barrier(2)
        writers = [threading.Thread(target=write, args=(tag, start)) for tag in "AB"]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"] and (out / "config.json").read_text() in "AB"
    # The lock may be another tool's (`flock DIR train ...`): the swap waits a while, then goes on (it hung).
    import fcntl

    atomic.SWAP_WAIT_S = 0.5
    held = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        tmp = Path(tempfile.mkdtemp(prefix=".X.new-", dir=tmp_path))
        start = time.monotonic()
        atomic.replace_dir(tmp, out)
        assert 0.5 <= time.monotonic() - start < 5 and not (out / "config.json").exists()
    finally:
        os.close(held)
        atomic.SWAP_WAIT_S = 10.0


def test_export_follows_the_umask(run_dir, tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        export.export(run_dir, tmp_path / "hf")
    finally:
        os.umask(previous)
    assert (tmp_path / "hf").stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "hf").iterdir()}["model.safetensors"] == 0o644
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (tmp_path / "hf").iterdir())


def test_a_checkpoint_restores_with_only_the_base_models_config_and_tokenizer(hf_checkpoint, tmp_path):
    """Evaluating or exporting a checkpoint needs the base model's architecture and tokenizer, not its weights:
    a checkpoint of an HF-initialised state restores from a base directory whose safetensors are gone, and computes
    transformers' logits."""
    import dataclasses
    import shutil

    import torch
    from flax import nnx

    from rlvjax.model.hf import load_hf
    from rlvjax.rl import steps

    path, torch_model = hf_checkpoint("qwen2")
    base = tmp_path / "base"
    shutil.copytree(path, base)
    config = Config()
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, hf_dir=str(base)))
    model, _ = load_hf(base)
    tx = config.optim.make(config.run.num_steps * config.rl.num_ppo_epochs * config.rl.num_minibatches)
    state = steps.init_state(nnx.to_pure_dict(nnx.state(model)), tx, seed=0, keep_reference=config.rl.beta > 0)
    with Checkpointer(tmp_path / "run" / "checkpoints") as checkpoints:
        checkpoints.save(3, state, data_state={}, config=config.to_dict(), force=True)
    for weights in base.glob("*.safetensors"):
        weights.unlink()

    restored, tokenizer = evaluate.load_checkpoint_policy(tmp_path / "run", 3, config)
    ids = [1, 7, 30, 4, 95, 2]
    with torch.no_grad():
        theirs = torch_model(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(np.asarray(restored(jnp.asarray([ids]))), theirs, atol=1e-4, rtol=0)
    assert len(tokenizer) == 96

    for name in ("tokenizer.json", "tokenizer_config.json"):
        (base / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"no usable tokenizer for this run's model at {base}; restore"):
        evaluate.abstract_checkpoint(config)
    from rlvjax.model.hf import load_tokenizer

    with pytest.raises(ValueError, match=r"no tokenizer in .*base \(none of tokenizer.json, tokenizer_config.json, "
                                         r"tokenizer.model, vocab.json\); save one there with "
                                         r"tokenizer.save_pretrained"):
        load_tokenizer(base)  # AutoTokenizer would build an empty one from config.json
    tokenizer.save_pretrained(base)
    (base / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"no usable tokenizer in .*base \(it encodes text to no tokens: a "
                                         r"tokenizer_config.json without its vocabulary file\?\); save one there"):
        load_tokenizer(base)  # ... or from tokenizer_config.json: a 5-token tokenizer encoding every text as []


def test_an_exported_chat_policy_tells_generate_where_its_completions_end(hf_checkpoint, tmp_path):
    """A chat model's completions end at its end-of-turn token as well as at eos: the export's
    generation_config.json names both, so transformers' ``generate`` stops at <|im_end|> as rlvjax's sampler does;
    and it suppresses what the sampler never samples (padding, <bos>, <unk>, <|im_start|>)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from conftest import word_tokenizer
    from rlvjax import policy_tokens
    from rlvjax.model.hf import load_hf, save_hf
    from rlvjax.rl.verifier import VerifierConfig

    path, _ = hf_checkpoint("qwen2")
    model, _ = load_hf(path)
    tokenizer = word_tokenizer(94)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    eos, im_end = tokenizer.convert_tokens_to_ids(["</s>", "<|im_end|>"])
    assert (eos, im_end, len(tokenizer)) == (2, 95, 96)
    out = tmp_path / "chat"
    save_hf(model, tokenizer, out, files=policy_tokens.export_files(tokenizer, VerifierConfig(question="w5 w6")))
    generation = GenerationConfig.from_pretrained(out, local_files_only=True)
    assert (generation.eos_token_id, generation.pad_token_id, generation.bos_token_id) == ([eos, im_end], 0, 1)

    torch_model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32).eval()
    torch_model.lm_head.bias = torch.nn.Parameter(torch.zeros(96))  # <|im_end|> always wins
    torch_model.lm_head.bias.data[im_end] = 1e4
    with torch.no_grad():
        tokens = torch_model.generate(torch.tensor([[1, 7, 8]]), max_new_tokens=5, do_sample=False)[0].tolist()
    assert tokens == [1, 7, 8, im_end]

    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert generation.suppress_tokens == [0, 1, 3, im_start]  # <pad>, <s>, <unk>, <|im_start|>
    torch_model.lm_head.bias.data[im_start] = 2e4  # the top token now, and one the sampler never draws
    with torch.no_grad():
        tokens = torch_model.generate(torch.tensor([[1, 7, 8]]), max_new_tokens=5, do_sample=False)[0].tolist()
    assert tokens == [1, 7, 8, im_end]


def test_the_models_own_eos_ids_end_completions_too(hf_checkpoint, tmp_path):
    """Llama-3.1-Instruct's generation_config.json ends generation at <|end_of_text|>, <|eom_id|> and <|eot_id|>,
    its tokenizer names only the last: rlvjax sampled on past the others (transformers and vLLM stop), and a model
    whose tokenizer names no eos had its config's eos suppressed, every rollout truncated (review 2026-12-07)."""
    import shutil

    from transformers import GenerationConfig

    from rlvjax import experiment, policy_tokens
    from rlvjax.model.hf import load_hf, save_hf
    from rlvjax.rl.verifier import VerifierConfig, tokens

    path = shutil.copytree(hf_checkpoint("qwen2")[0], tmp_path / "model")
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7, 9], "bos_token_id": 1}))
    model, tokenizer = load_hf(path)
    assert policy_tokens.stop_ids(tokenizer) == (2, 7, 9)
    # also where scripts written against the older README import it from
    assert experiment.stop_ids(tokenizer) == (2, 7, 9) and experiment.export_files is policy_tokens.export_files
    verifier_tokens = tokens(tokenizer, "w5 w6")
    assert policy_tokens.sampling_tokens(tokenizer, verifier_tokens).stop_ids == (2, 7, 9)
    out = tmp_path / "exported"  # and the export tells generate so; reloaded, rlvjax reads them back
    save_hf(model, tokenizer, out, files=policy_tokens.export_files(tokenizer, VerifierConfig(question="w5 w6")))
    assert GenerationConfig.from_pretrained(out, local_files_only=True).eos_token_id == [2, 7, 9]
    assert policy_tokens.stop_ids(load_hf(out)[1]) == (2, 7, 9)
    # a tokenizer naming no eos (nor padding): the config's eos ends completions, is not suppressed, and pads
    (path / "generation_config.json").unlink()
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "eos_token_id": 2}))
    _, tokenizer = load_hf(path)
    tokenizer.eos_token, tokenizer.pad_token = None, None
    special = policy_tokens.sampling_tokens(tokenizer, tokens(tokenizer, "w5 w6"))
    assert (special.stop_ids, special.pad_id) == ((2,), 2) and 2 not in special.suppress_ids
    (path / "config.json").write_text(json.dumps({**config, "eos_token_id": None}))
    _, tokenizer = load_hf(path)
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match=r"^the tokenizer names no eos_token and the model no eos_token_id "
                                         r"\(generation_config.json or config.json\): completions would never end"):
        policy_tokens.sampling_tokens(tokenizer, tokens(tokenizer, "w5 w6"))


def test_a_random_model_trained_with_its_own_tokenizer_reloads_it_unchanged(tmp_path, caplog):
    """A ``ModelSpec.tokenizer_dir`` tokenizer (a plain tokenizer.json) on the random qwen2 model: the export named
    model_type qwen2 and a generic tokenizer class, and ``AutoTokenizer`` loaded it as Qwen2Tokenizer, which rebuilds
    the pre-tokenizer from the vocabulary: the end-of-run report, the lambda = 0 baseline (trained from
    warm_start/) and ``evaluate --workdir`` encoded "\\n\\n" (and the verify prompt) otherwise than training did."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from rlvjax import experiment
    from rlvjax.model.hf import TOKENIZER_PROBE, load_hf, save_hf

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    corpus = ["Step 1: add.\n\nStep 2: multiply.\n\n\\boxed{19}", "Is the answer correct? Yes", "12 + 7 = 19\n\n"]
    bpe.train_from_iterator(corpus * 50, trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>"],
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>").save_pretrained(tmp_path / "tok")
    model, tokenizer = experiment.build_policy(experiment.ModelSpec(
        tokenizer_dir=str(tmp_path / "tok"), hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
        num_kv_heads=1))
    with caplog.at_level("WARNING"):
        save_hf(model, tokenizer, tmp_path / "export")
    _, back = load_hf(tmp_path / "export")
    for text in (TOKENIZER_PROBE, "a\n\n\nb  c", "x = 3\n\n\\boxed{3}"):
        assert back(text).input_ids == tokenizer(text).input_ids, text
    # transformers' own loader still picks the model type's class: the export says so, once
    auto = AutoTokenizer.from_pretrained(str(tmp_path / "export"))
    assert auto(TOKENIZER_PROBE).input_ids != tokenizer(TOKENIZER_PROBE).input_ids
    assert "PreTrainedTokenizerFast.from_pretrained" in caplog.text
