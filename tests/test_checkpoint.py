"""Checkpointer: round trips (typed PRNG keys, optax state, data state, config), retention, config refusal, bad
or full workdirs, read-only use, a step held uncommitted (tests/pause_saves.py), and — on a fake 8-device mesh in
a subprocess — a sharded save restored onto another mesh, then a save killed halfway that the next process must not
pick."""

import errno
import json
import os
import shutil
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from orbax.checkpoint.path import atomicity
from pause_saves import paused_finalize

from rlvjax import checkpoint
from rlvjax.checkpoint import Checkpointer, check_config, check_free_space
from conftest import xla_flags
import forkserver

CONFIG = {"model": {"num_layers": 2, "hidden_size": 64, "rope_scaling": (("factor", 8.0),)}, "lr": 1e-5}


def train_state(seed: int = 0, sharding=None):
    """A TrainState-shaped pytree: params, adam state (with its int count), a step and a typed PRNG key."""
    w = jnp.arange(16 * 8, dtype=jnp.float32).reshape(16, 8) / (seed + 1)
    if sharding is not None:
        w = jax.device_put(w, sharding)
    params = {"layer": {"w": w, "b": jnp.full((8,), 0.5 + seed, jnp.float32)}}
    opt_state = optax.adam(1e-3).init(params)
    opt_state = (opt_state[0]._replace(count=jnp.int32(seed + 3),
                                       mu=jax.tree.map(lambda p: p * 0.1, opt_state[0].mu)),) + opt_state[1:]
    return {"params": params, "opt_state": opt_state, "step": jnp.int32(seed + 3),
            "rng": jax.random.split(jax.random.key(seed))[1]}


def abstract(state, sharding_of=lambda x: x.sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_of(x)), state)


def assert_same_state(restored, expected):
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    assert jnp.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
    unwrap = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    got_leaves, want_leaves = (jax.tree.leaves(jax.tree.map(unwrap, t)) for t in (restored, expected))
    for got, want in zip(got_leaves, want_leaves):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_round_trip_of_state_data_state_and_config(tmp_path):
    state = train_state(seed=1)
    data_state = {"next_index": 7, "seed": 0, "batch_size": 4, "shard_count": 1, "num_records": 500}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(5, state, data_state=data_state, config=CONFIG)
        ckpt.wait()
        assert ckpt.latest_step() == 5
        restored, restored_data, restored_config = ckpt.restore(abstract(state), config=CONFIG)
    assert_same_state(restored, state)
    assert restored_data == data_state
    assert restored_config == json.loads(json.dumps(CONFIG)) and ckpt.read_config(5)["lr"] == 1e-5


def test_retention_interval_and_latest_step_ignore_half_written_steps(tmp_path):
    state = train_state()
    ckpt = Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=2)
    saved = [ckpt.save(step, state, data_state={"next_index": step}, config=CONFIG) for step in range(1, 6)]
    assert saved == [True, True, False, True, False]  # Orbax always makes the first save of an empty directory
    assert ckpt.save(5, state, data_state={"next_index": 5}, config=CONFIG, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [4, 5] and ckpt.latest_step() == 5
    # What an interrupted save leaves behind (see the subprocess test for a real one): never a candidate step.
    (tmp_path / "9.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
    ckpt.close()
    reopened = Checkpointer(tmp_path, max_to_keep=2)
    assert reopened.latest_step() == 5
    assert reopened.restore(abstract(state))[1] == {"next_index": 5}
    assert reopened.restore(abstract(state), step=4)[1] == {"next_index": 4}
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 3 in .*; saved steps: \[4, 5\]"):
        reopened.restore(abstract(state), step=3)
    reopened.close()


def test_config_mismatch_is_refused_with_every_differing_key(tmp_path):
    stored = {"architecture": {"num_layers": 2, "hidden_size": 64, "vocab_size": 96}, "lr": 1e-5,
              "model": {"hf_dir": "/data/base"}}
    current = {"architecture": {"num_layers": 4, "hidden_size": 64, "vocab_size": 128}, "lr": 3e-6,
               "model": {"hf_dir": "/scratch/base"}}
    check_config(stored, current, ["architecture.hidden_size", "lr.nope", "missing"])  # agreeing / absent-on-both
    check_config({"scaling": [["factor", 8.0]]}, {"scaling": (("factor", 8.0),)}, ["scaling"])  # JSON-equal
    with pytest.raises(ValueError, match=r"^checkpoint config differs in architecture.num_layers \(checkpoint 2, now "
                                         r"4\), architecture.vocab_size \(checkpoint 96, now 128\), "
                                         r"architecture.head_dim \(checkpoint '<absent>', now 8\); restore with the "
                                         r"config it was trained with, or use a fresh workdir$"):
        check_config(stored, {**current, "architecture": {**current["architecture"], "head_dim": 8}},
                     ["architecture.num_layers", "architecture.hidden_size", "architecture.vocab_size",
                      "architecture.head_dim"])

    # A field the checkpoint did not store (saved by an rlvjax before the field existed) agrees with its default,
    # and only with it: an upgrade does not strand a run, and a new setting is not changed behind it.
    defaults = {"architecture": {"head_dim": None}, "rl": {"verify_prefixes": 0}}
    old = {"architecture": {"hidden_size": 64}, "rl": {}}
    new = {"architecture": {"hidden_size": 64, "head_dim": None}, "rl": {"verify_prefixes": 0}}
    check_config(old, new, ["architecture", "rl"], defaults)
    with pytest.raises(ValueError, match=r"differs in rl.verify_prefixes \(checkpoint '<absent>', now 2\);"):
        check_config(old, {**new, "rl": {"verify_prefixes": 2}}, ["architecture", "rl"], defaults)
    with pytest.raises(ValueError, match=r"rl.verify_prefixes \(checkpoint .<absent>., now 0\)"):
        check_config(old, new, ["architecture", "rl"])  # without defaults, absent is a difference
    # A checkpoint from before the architecture was stored (2026-12-02) was refused as an architecture change.
    check_config({"rl": {"verify_prefixes": 0}}, new, ["architecture", "rl"], defaults)
    from rlvjax import resume  # what a resume compares against: every stored section, each field's default
    from rlvjax.config import Config
    assert set(resume.config_defaults()) == {*Config.from_dict({}).to_dict(), "architecture"}
    assert resume.config_defaults()["architecture"]["compute_dtype"] is None

    state = train_state()
    ckpt = Checkpointer(tmp_path, async_=False)
    ckpt.save(1, state, data_state={}, config=stored)
    with pytest.raises(ValueError, match=r"^checkpoint config differs in architecture.num_layers \(checkpoint 2, now "
                                         r"4\), architecture.vocab_size \(checkpoint 96, now 128\); restore with"):
        ckpt.restore(abstract(state), config=current)  # default keys: the whole architecture, field by field
    # The model's path may change (a base model copied to scratch), and so may the learning rate.
    moved = {**current, "architecture": stored["architecture"]}
    assert ckpt.restore(abstract(state), config=moved)[2] == stored
    ckpt.close()


def test_bad_workdir_and_bad_values_fail_at_the_call(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(PermissionError, match=r"^checkpoint directory .*file/ckpt is not writable \(Not a directory\); "
                                              r"choose a workdir you can write to$"):
        Checkpointer(tmp_path / "file" / "ckpt")
    ckpt = Checkpointer(tmp_path / "ok")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*ok; train first or drop --resume"):
        ckpt.restore(abstract(train_state()))
    with pytest.raises(TypeError, match=r"config must be JSON-serialisable \(.*\); convert dataclasses"):
        ckpt.save(1, train_state(), data_state={}, config={"dtype": jnp.float32})
    assert ckpt.all_steps() == []
    ckpt.close()
    with Checkpointer(tmp_path / "ok", read_only=True) as reader:  # evaluate, export: no --resume to drop
        with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*ok; the run has not saved one yet$"):
            reader.restore(abstract(train_state()))


def test_read_only_checkpointer_creates_nothing_and_reads(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^no checkpoint directory .*absent/ckpt; point --workdir at a "
                                                 r"training run's workdir$"):
        Checkpointer(tmp_path / "absent" / "ckpt", read_only=True)
    assert not (tmp_path / "absent").exists()
    state = train_state(seed=4)
    with Checkpointer(tmp_path / "ckpt", async_=False) as ckpt:
        ckpt.save(2, state, data_state={"next_index": 2}, config=CONFIG)
    with Checkpointer(tmp_path / "ckpt", read_only=True) as reader:
        assert reader.latest_step() == 2 and reader.read_config()["lr"] == 1e-5
        restored, data_state, _ = reader.restore(abstract(state))
    assert_same_state(restored, state)
    assert data_state == {"next_index": 2} and sorted(os.listdir(tmp_path / "ckpt")) == ["2"]


def test_a_step_the_training_removes_while_it_is_read_is_named_removed_not_damaged(tmp_path, monkeypatch):
    state = train_state(seed=4)
    with Checkpointer(tmp_path / "ckpt", async_=False) as ckpt:
        for step in (2, 4):
            ckpt.save(step, state, data_state={"next_index": step}, config=CONFIG)
    with Checkpointer(tmp_path / "ckpt", read_only=True) as reader:
        assert reader.all_steps() == [2, 4]
        shutil.rmtree(tmp_path / "ckpt" / "2")  # the running training's retention, between listing and reading
        with pytest.raises(checkpoint.DamagedCheckpoint, match=r"^checkpoint step 2 in .* was removed while it was "
                           r"being read \(a running training keeps only its newest RunConfig.max_to_keep steps\); "
                           r"pass --checkpoint with another saved step \(4\)$"):
            reader.restore(abstract(state), 2)
        shutil.rmtree(tmp_path / "ckpt" / "4" / "state")  # the step is still there, its arrays are not: damage
        with pytest.raises(checkpoint.DamagedCheckpoint, match=r"^checkpoint step 4 in .* is damaged"):
            reader.restore(abstract(state), 4)


def test_a_step_that_cannot_be_read_now_is_not_skipped_as_damaged(tmp_path):
    """No permission, no memory, a filesystem failing: the newest step is not taken for damage (a resume skipped it
    and set it aside, going on from an older one); the error says so in one line and the steps stay."""
    state = train_state(seed=4)
    with Checkpointer(tmp_path / "ckpt", async_=False) as ckpt:
        for step in (2, 4):
            ckpt.save(step, state, data_state={"next_index": step}, config=CONFIG)
    failures = [PermissionError(errno.EACCES, os.strerror(errno.EACCES), "ckpt/4/state"),
                ValueError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00GiB"),
                RuntimeError("Error reading \"state\": UNAVAILABLE: Input/output error [source locations='...']")]
    for failure in failures:
        with Checkpointer(tmp_path / "ckpt") as ckpt:
            def fail(*args, **kwargs):
                raise failure

            ckpt._manager.restore = fail
            with pytest.raises(checkpoint.CheckpointUnavailable, match=r"^checkpoint step 4 in .* cannot be read now "
                               r"\(its arrays: .*\); that is not damage, so nothing was skipped or set aside: "
                               r"fix the cause \(permissions, memory, the filesystem\) and run again, or pass "
                               r"--checkpoint with another saved step \(2\)$"):
                ckpt.restore_intact(abstract(state))
            assert ckpt.all_steps() == [2, 4]
    assert not checkpoint.unavailable(ValueError("tensorstore: DATA_LOSS: checksum mismatch"))  # that is damage


def test_free_space_is_checked_on_the_nearest_existing_parent(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda path: asked.append(path) or shutil._ntuple_diskusage(10**12, 10**12, 5 * 2**20))
    check_free_space(tmp_path / "a" / "b", 5 * 2**20)  # exactly enough
    with pytest.raises(checkpoint.DiskFullError, match=r"^only 5.0 MiB free under .*, a checkpoint needs about "
                                                       r"5.0 MiB; free some space or choose a workdir on a larger"):
        check_free_space(tmp_path / "a" / "b", 5 * 2**20 + 1)
    assert asked == [str(tmp_path)] * 2 and not (tmp_path / "a").exists()
    assert isinstance(checkpoint.DiskFullError("x"), OSError)


def full_after_step_1(tmp_path, monkeypatch):
    """A Checkpointer holding step 1, whose next save hits ENOSPC writing its stored config (in Orbax's background
    thread, after the arrays): ``(checkpointer, step 1's state)``."""
    state = train_state()
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(1, state, data_state={"next_index": 1}, config=CONFIG)
    ckpt.wait()
    path_type = type(checkpoint.epath.Path(tmp_path))
    write_text = path_type.write_text

    def full(self, *args, **kwargs):
        if self.name == "metadata" and self.parent.name.startswith("config.orbax-checkpoint-tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(path_type, "write_text", full)
    return ckpt, state


def test_a_disk_that_fills_up_mid_save_leaves_the_previous_step_and_no_partial_one(tmp_path, monkeypatch):
    """Step 2's arrays are written, then its stored config hits ENOSPC in Orbax's background thread: one-line
    DiskFullError, no ``*.orbax-checkpoint-tmp*`` left, step 1 intact and still the latest."""
    ckpt, state = full_after_step_1(tmp_path, monkeypatch)
    with pytest.raises(checkpoint.DiskFullError) as failed:
        ckpt.save(2, train_state(seed=1), data_state={"next_index": 2}, config=CONFIG)
        ckpt.wait()
    assert str(failed.value) == (f"the disk under {tmp_path / 'ckpt'} filled up while saving a checkpoint; the partial "
                                 "save was removed and the latest complete checkpoint is step 1; free some space (or "
                                 "lower RunConfig.max_to_keep), then rerun with --resume")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["1"]
    ckpt.close()
    with Checkpointer(tmp_path / "ckpt", read_only=True) as reopened:
        assert reopened.latest_step() == 1
        restored, data_state, _ = reopened.restore(abstract(state))
        assert_same_state(restored, state)
        assert data_state == {"next_index": 1}


def test_a_save_that_failed_in_the_background_is_raised_before_the_next_save(tmp_path, monkeypatch):
    """The training loop asks after each step (``check_errors``): a full disk surfaced only at the next save,
    ``checkpoint_every`` steps later, and the steps trained in between were lost."""
    ckpt, state = full_after_step_1(tmp_path, monkeypatch)
    ckpt.save(2, train_state(seed=1), data_state={"next_index": 2}, config=CONFIG)  # returns; fails in the background
    deadline = time.monotonic() + 60
    with pytest.raises(checkpoint.DiskFullError, match="the latest complete checkpoint is step 1;"):
        while time.monotonic() < deadline:
            ckpt.check_errors()
            time.sleep(0.05)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["1"]
    ckpt.close()


STEP_FOLDER_FAILS = """
import errno, sys, threading
import jax.numpy as jnp
from orbax.checkpoint._src.path import atomicity
from rlvjax import checkpoint
ckpt = checkpoint.Checkpointer(sys.argv[1])
ckpt.save(1, {"w": jnp.ones(4)}, data_state={}, config={})
ckpt.wait()
make, calls = atomicity._create_tmp_directory, []
async def fails(*args, **kwargs):  # the step's (or an item's) folder cannot be made: inodes run out, no permission
    calls.append(args[1])
    if sys.argv[3] == "step" or len(calls) > 1:
        raise OSError(int(sys.argv[2]), "injected", str(args[1]))
    return await make(*args, **kwargs)
atomicity._create_tmp_directory = fails
try:
    ckpt.save(2, {"w": jnp.zeros(4)}, data_state={}, config={})
    ckpt.wait()
except OSError as e:
    print(type(e).__name__, e)
ckpt.close()
left = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
for t in left:  # ending (under load, a moment after close); the bug's threads waited 300 s
    t.join(10)
print(sorted(t.name for t in left if t.is_alive()))
"""


@pytest.mark.parametrize("code, folder", [(errno.ENOSPC, "step"), (errno.EACCES, "step"), (errno.EROFS, "step"),
                                          (errno.EACCES, "item")])
def test_a_save_whose_step_folder_cannot_be_made_is_one_error_and_the_process_exits(tmp_path, code, folder):
    """Orbax's threads of such a save waited 300 s for the folder's signal, and they are not daemons: a run printed
    its error line and then did not exit for 5 minutes (with three tracebacks where the folder was not writable; a
    read-only filesystem was tracebacks and exit 1; an item's folder, "coroutine ... was never awaited" after the
    line). A multi-host job: test_multihost `test_a_save_that_fails_on_every_host_is_reported_by_each_at_once`."""
    out = forkserver.run([sys.executable, "-c", STEP_FOLDER_FAILS, str(tmp_path / "ckpt"), str(code), folder],
                         timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    first, threads = out.stdout.splitlines()
    latest = "the latest complete checkpoint is step 1;"
    assert first.startswith("DiskFullError" if code == errno.ENOSPC else "CheckpointUnwritable") and latest in first
    if code == errno.EACCES:
        assert first.endswith(f"make {tmp_path / 'ckpt'} writable again (permissions, the filesystem), then rerun "
                              "with --resume"), first
    assert threads == "[]"  # no thread left waiting: the interpreter exits at once
    assert out.stderr == "", out.stderr[-2000:]  # no traceback, no warning
    # a full disk's partial step is removed; one that could not be written is left (no resume reads it)
    left = sorted(os.listdir(tmp_path / "ckpt"))
    assert left == ["1"] if code == errno.ENOSPC else left[0] == "1" and all("tmp" in name for name in left[1:])


def test_closed_event_loop_noise_is_dropped_and_nothing_else(tmp_path, monkeypatch):
    """After a failed save or read, tensorstore's threads call back into Orbax's closed event loop, and Python
    printed each "Event loop is closed" as a traceback (0 to 116 per full-disk failure of a CLI run, after its one
    line). A Checkpointer's process drops exactly those unraisable errors."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    Checkpointer(tmp_path / "ckpt").close()
    Checkpointer(tmp_path / "other").close()  # wraps the hook once
    noise = RuntimeError("Event loop is closed")
    for error, source in ((noise, None), (RuntimeError("another"), None), (noise, "a coroutine"),
                          (ValueError("Event loop is closed"), None)):
        sys.unraisablehook(types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=None,
                                                 err_msg=None, object=source))
    assert [(type(u.exc_value), str(u.exc_value), u.object) for u in seen] == [
        (RuntimeError, "another", None), (RuntimeError, "Event loop is closed", "a coroutine"),
        (ValueError, "Event loop is closed", None)]


def test_failed_write_probe_removes_the_directories_it_made(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.epath.Path, "write_text", full)
    with pytest.raises(PermissionError, match=r"a/b/ckpt is not writable \(No space left on device\)"):
        Checkpointer(tmp_path / "a" / "b" / "ckpt")
    assert os.listdir(tmp_path) == []


def test_a_paused_commit_holds_a_written_step_uncommitted(tmp_path, monkeypatch):
    """The patch that lets test_reliability.py kill a run mid-save (tests/pause_saves.py): during the pause the step
    is complete on disk but only as a tmp directory, which latest_step ignores."""
    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", paused_finalize(1.5))
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, train_state(), data_state={}, config=CONFIG)
        time.sleep(0.5)
        assert [p for p in os.listdir(tmp_path) if p.startswith("1.orbax-checkpoint-tmp")]
        with Checkpointer(tmp_path, read_only=True) as reader:  # what a restarted process would see
            assert reader.latest_step() is None and reader.unfinished_steps() == [1]
            # evaluate --checkpoint 1 / export meanwhile: told what to wait for (it said "saved steps: []" alone)
            with pytest.raises(FileNotFoundError, match=r"step 1 has no complete save yet: a training run is "
                                                        r"writing it, or was killed while writing it; wait for the "
                                                        r"save\); saved steps: \[\]"):
                reader.read_config(1)
        ckpt.wait()
        assert ckpt.latest_step() == 1 and "1" in os.listdir(tmp_path)


def test_sharded_round_trip_on_8_devices_and_killed_save(tmp_path):
    """Runs this file as a script with 8 fake CPU devices (the test process may have 1), then checks what it left."""
    env = {**os.environ, "XLA_FLAGS": xla_flags(8), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, __file__, str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    assert report["restored_sharding"] == [["fsdp", "tensor"], ["fsdp", "tensor"]]  # mesh axes, partition spec
    assert report["restored_shard_shape"] == [4, 4] and report["same_values"]
    assert report["data_state"] == {"next_index": 3}

    assert "2.orbax-checkpoint-tmp" in os.listdir(tmp_path)  # the kill did land mid-save
    ckpt = Checkpointer(tmp_path)  # a fresh process after the kill: step 2 never completed, so step 1 is the latest
    assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1], sorted(os.listdir(tmp_path))
    state = train_state(seed=2)
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    restored, data_state, _ = ckpt.restore(abstract(state, lambda x: one_device))
    assert_same_state(restored, state)
    assert data_state == {"next_index": 3}
    assert ckpt.save(2, restored, data_state={"next_index": 4}, config=CONFIG)  # the resumed run redoes step 2
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2] and ckpt.restore(abstract(state))[1] == {"next_index": 4}
    ckpt.close()


def _sharded_script(directory: str) -> None:
    """Saves on a data=8 mesh, restores onto an fsdp=4 x tensor=2 mesh, then dies in the middle of saving step 2."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    devices = np.array(jax.devices())
    data_mesh, model_mesh = Mesh(devices, ("data",)), Mesh(devices.reshape(4, 2), ("fsdp", "tensor"))
    state = train_state(seed=2, sharding=NamedSharding(data_mesh, P("data", None)))
    ckpt = Checkpointer(directory)
    ckpt.save(1, state, data_state={"next_index": 3}, config=CONFIG)
    ckpt.wait()

    target = NamedSharding(model_mesh, P("fsdp", "tensor"))
    replicated = NamedSharding(model_mesh, P())
    restored, data_state, _ = ckpt.restore(abstract(state, lambda x: target if x.ndim == 2 else replicated))
    w = restored["params"]["layer"]["w"]
    assert_same_state(restored, state)
    report = {"devices": len(devices), "restored_sharding": [list(w.sharding.mesh.axis_names), list(w.sharding.spec)],
              "restored_shard_shape": list(w.addressable_shards[0].data.shape),
              "same_values": bool(np.array_equal(np.asarray(w), np.asarray(state["params"]["layer"]["w"]))),
              "data_state": data_state}
    print(json.dumps(report), flush=True)

    big = {"blob": jax.device_put(jnp.ones((8, 1 << 20), jnp.float32), NamedSharding(data_mesh, P("data")))}
    ckpt.save(2, big, data_state={"next_index": 4}, config=CONFIG)  # async: returns before the write is done
    # ... and sometimes before its folder exists: wait for it (a 32 MB write is far from done then)
    deadline = time.monotonic() + 60
    while not any(name.startswith("2.orbax-checkpoint-tmp") for name in os.listdir(directory)):
        assert time.monotonic() < deadline, "step 2's save never started"
        time.sleep(0.001)
    os._exit(0)  # a preempted host: no wait, no cleanup


if __name__ == "__main__":
    _sharded_script(sys.argv[1])


def test_a_signal_while_resume_reads_the_newest_step_does_not_make_it_look_damaged(tmp_path):
    """SIGTERM lands inside Orbax's restore of the newest step, before the loop defers notices: the read finishes
    (the handler only records the notice), the newest step is restored, not taken for damage and skipped (and then
    set aside), and the start-up stops at its next safe point."""
    import signal

    from rlvjax import cli, preemption

    state = train_state()
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        for step in (1, 2):
            ckpt.save(step, state, data_state={}, config=CONFIG, force=True)
        ckpt.wait()
        read = ckpt._manager.restore

        def signalled(step, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, in the main thread
            return read(step, *args, **kwargs)

        ckpt._manager.restore = signalled
        with preemption.notice() as notice:
            *_, restored, skipped = ckpt.restore_intact(abstract(state))
            assert (restored, skipped) == (2, []) and notice.received()
            with pytest.raises(cli.Preempted, match="SIGTERM before the first RL step"):
                notice.defer()
        assert ckpt.all_steps() == [1, 2]
