"""Checkpoints: the TrainState pytree, the data iterator's position and the run config, in one Orbax step directory.

Orbax does the hard parts and we rely on them rather than re-implement them: every host writes its own shards of
each array cooperatively; writes go to ``<step>.orbax-checkpoint-tmp*`` and are renamed into place only when
complete, so a run killed mid-save leaves no step that ``latest_step`` would pick; restores land directly in the
shardings of the abstract state they are given (also a different mesh than the one that saved). Typed PRNG keys
(``jax.random.key``) round-trip as they are; callers need not unwrap them.

What this module adds: the three items saved together under fixed names, the config check that refuses to resume
a model with another architecture, one-line errors for the ways users get this wrong (an unwritable or full
workdir, a disk that fills up mid-save: the partial step is removed and the error is one line, resuming or
evaluating where nothing was saved), and damaged steps: a step that cannot be read back (no
``state/``, truncated arrays, a corrupt config, an empty folder left by an interrupted copy) is
:class:`DamagedCheckpoint`, naming the step; a resume falls back to the newest intact step and sets the newer ones
aside (moved to ``WORKDIR/checkpoints_set_aside/``, never deleted).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint.path import atomicity

from rlvjax import orbax_quirks, parallel
from rlvjax.cli import UserError, one_line, out_of_space, raised_from, unwritable

# Where the architecture lives in the run config (``experiment.config_dict``): a key naming a sub-dict compares all
# of it.
ARCHITECTURE_KEYS = ("architecture",)


class Checkpointer:
    """Saves and restores ``(state, data_state, config)`` at integer steps under ``directory``.

    ``read_only=True`` (evaluation) never creates or changes anything: a missing directory is a one-line
    FileNotFoundError instead of an empty directory left behind.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3, save_interval_steps: int = 1,
                 async_: bool = True, read_only: bool = False):
        if "://" not in str(directory):  # Orbax refuses a relative path (and a read said "damaged")
            directory = os.path.abspath(directory)
        self.directory, self.read_only = epath.Path(directory), read_only
        if read_only:
            if not self.directory.is_dir():
                raise FileNotFoundError(f"no checkpoint directory {self.directory}; point --workdir at a training "
                                        "run's workdir")
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0,
                                                   max_to_keep=None)
        else:
            ensure_writable(self.directory)
            options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
                                                   enable_async_checkpointing=async_, create=True)
        with orbax_quirks.quiet_read_only():
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        orbax_quirks.quiet_failed_saves()
        orbax_quirks.signal_failed_saves()
        orbax_quirks.record_failed_commits()
        orbax_quirks.failed_commit(self._manager.directory)  # an earlier Checkpointer's, raised through Orbax
        self._failed_here: BaseException | None = None

    def save(self, step: int, state: Any, *, data_state: dict, config: dict, force: bool = False) -> bool:
        """Starts saving (asynchronously by default); False when the interval skips ``step`` or it is already saved.

        Orbax's save policy applies: the first save into an empty directory always happens, later ones every
        ``save_interval_steps`` (or when ``force``, or when a preemption notice has reached every host); a resumed
        run reaching its restore step again does not rewrite it.

        ``data_state`` and ``config`` must be JSON-serialisable; that is checked here, before any async work starts,
        so a bad value fails at the call and not minutes later in a background thread.
        """
        data_state, config = _as_json("data_state", data_state), _as_json("config", config)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), data_state=ocp.args.JsonSave(data_state),
                                  config=ocp.args.JsonSave(config))
        with self._failed_save():  # a failed earlier async save surfaces here too
            if not self._settle():
                raise self._failed_here
            return self._manager.save(step, args=args, force=force)

    def restore(self, abstract_state: Any, step: int | None = None, *, config: dict | None = None,
                keys: Sequence[str] = ARCHITECTURE_KEYS, defaults: dict | None = None) -> tuple[Any, dict, dict]:
        """Returns ``(state, data_state, stored_config)`` of ``step`` (default: the latest complete one).

        ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with shardings (e.g. ``jax.eval_shape`` of the
        init plus the partition rules); arrays are read straight into those shardings. When ``config`` is given,
        the stored config must agree with it at ``keys`` (dotted paths) or nothing is loaded (``defaults``: see
        :func:`check_config`).
        """
        step = self._resolve(step)
        if config is not None:
            check_config(self.read_config(step), config, keys, defaults)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                  data_state=ocp.args.JsonRestore(), config=ocp.args.JsonRestore())
        restored = self._read(step, args, "its arrays")
        return restored.state, restored.data_state, restored.config

    def restore_params(self, abstract_params: Any, step: int | None = None) -> Any:
        """The policy's weights of ``step`` (default: the latest complete one) alone, as host arrays shaped like
        ``abstract_params``: exporting or evaluating a checkpoint reads neither the AdamW moments nor the reference
        policy, which together are 2-3x the weights."""
        step = self._resolve(step)
        target = {"params": abstract_params}
        args = ocp.args.PyTreeRestore(item=target, partial_restore=True, restore_args=jax.tree.map(
            lambda x: ocp.RestoreArgs(restore_type=np.ndarray, dtype=x.dtype), target))

        def read(step, args):  # beside the manager, whose "state" item keeps the handler it first restored with
            with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
                return checkpointer.restore(self.directory / str(step) / "state", args=args)

        return self._read(step, args, "its weights", read=read)["params"]

    def restore_intact(self, abstract_state: Any, step: int | None = None, *, config: dict | None = None,
                       keys: Sequence[str] = ARCHITECTURE_KEYS,
                       defaults: dict | None = None) -> tuple[Any, dict, dict, int, list[str]]:
        """:meth:`restore` of ``step``, or (None) of the newest step that reads back whole, trying older ones past
        damaged ones: ``(state, data_state, stored_config, step, skipped)`` with a one-line reason per skipped step.
        A config that differs at ``keys`` is not damage: it raises at once."""
        skipped = []
        for candidate in [step] if step is not None else sorted(self.all_steps(), reverse=True):
            try:
                return (*self.restore(abstract_state, candidate, config=config, keys=keys, defaults=defaults),
                        candidate, skipped)
            except DamagedCheckpoint as e:
                if step is not None:
                    raise
                skipped.append(e.damage)
        raise DamagedCheckpoint(f"no intact checkpoint in {self.directory}: {'; '.join(skipped)}; start again in a "
                                "fresh --workdir")

    def set_aside(self, steps: Sequence[int]) -> epath.Path:
        """Moves ``steps`` out of the managed directory to ``WORKDIR/checkpoints_set_aside/<step>`` (a later
        save would collide with them; nothing is deleted); returns that directory."""
        aside = self.directory.parent / "checkpoints_set_aside"
        if jax.process_index() == 0:
            aside.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target = aside / str(step)
                suffix = 1
                while target.exists():
                    target, suffix = aside / f"{step}.{suffix}", suffix + 1
                (self.directory / str(step)).rename(target)
        parallel.barrier("checkpoints set aside")
        self._manager.reload()
        return aside

    def read_config(self, step: int | None = None) -> dict:
        """The config stored with ``step`` (default latest), without touching the arrays: evaluation builds its
        model from it before it can describe the abstract state."""
        step = self._resolve(step)
        config = self._read(step, ocp.args.Composite(config=ocp.args.JsonRestore()), "its stored config").config
        if not isinstance(config, dict):
            raise DamagedCheckpoint(f"checkpoint step {step} in {self.directory} is damaged (its stored config is "
                                    "not a JSON object)", self._choose_another(step))
        return config

    def _read(self, step: int, args, what: str, read=None):
        try:
            return (read or self._manager.restore)(step, args=args)
        except Exception as e:  # Orbax and tensorstore name damage in many ways; all mean "cannot read it back"
            reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
            if unavailable(e):  # not the step's fault: a resume must not skip it and set it aside
                raise CheckpointUnavailable(
                    f"checkpoint step {step} in {self.directory} cannot be read now ({what}: {type(e).__name__}: "
                    f"{reason[:200]}); that is not damage, so nothing was skipped or set aside: fix the cause "
                    f"(permissions, memory, the filesystem) and run again"
                    + (f", or {self._choose_another(step)}" if len(self.all_steps()) > 1 else "")) from None
            if not (self.directory / str(step)).exists():  # not damage: the training writing the run deleted it
                self._manager.reload()
                raise DamagedCheckpoint(
                    f"checkpoint step {step} in {self.directory} was removed while it was being read (a running "
                    "training keeps only its newest RunConfig.max_to_keep steps)", self._choose_another(step)) from None
            raise DamagedCheckpoint(f"checkpoint step {step} in {self.directory} is damaged ({what} cannot be read: "
                                    f"{type(e).__name__}: {reason[:200]})", self._choose_another(step)) from None

    def _choose_another(self, step: int) -> str:
        others = sorted(s for s in self.all_steps() if s != step)
        return (f"pass --checkpoint with another saved step ({', '.join(map(str, others))})" if others else
                "no other step is saved: start again in a fresh --workdir")

    def latest_step(self) -> int | None:
        """The newest complete step, None when there is none; half-written (tmp) steps never count."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def check_errors(self) -> None:
        """Raises the error of an async save that has failed (a full disk: :class:`DiskFullError`) now, not at the next
        save ``checkpoint_every`` steps later, when the steps trained since would be lost."""
        with self._failed_save():
            self._raise_failed_here()
        if not self._manager.is_saving_in_progress():  # finished: waiting returns at once, raising its error
            self.wait()

    def wait(self) -> None:
        """Blocks until pending async saves are on disk (before exiting, or before reading them back)."""
        with self._failed_save():
            if self._settle():
                self._manager.wait_until_finished()

    def close(self) -> None:
        with self._failed_save():
            if self._settle():
                self._manager.close()

    def _settle(self) -> bool:
        """On a multi-host job, waits here for the save in flight rather than in Orbax (``_raise_failed_here``).
        False once this host's failure has been raised: its save's threads wait in a barrier of Orbax's that the
        other hosts never reach, and nothing may wait on them."""
        while self._failed_here is None and jax.process_count() > 1:
            self._raise_failed_here()
            if not self._manager.is_saving_in_progress():
                break
            time.sleep(0.05)
        return self._failed_here is None

    def _raise_failed_here(self) -> None:
        """Raises now the failure of this host's writes of a save on a multi-host job, which Orbax holds back
        (``orbax_quirks.record_failed_commits``): the job stops with this host's line (``job_stop``), the step left
        half-written (no resume reads it)."""
        if jax.process_count() > 1 and self._failed_here is None:
            self._failed_here = orbax_quirks.failed_commit(self._manager.directory)
            if self._failed_here is not None:
                raise self._failed_here

    @contextlib.contextmanager
    def _failed_save(self):
        """A failed save (in Orbax's background thread or not) releases Orbax's threads still waiting on it
        (``orbax_quirks.release_waiting_saves``; a job's other hosts were sent its signals when it failed:
        ``orbax_quirks.signal_failed_saves``). One that ran out of disk becomes one :class:`DiskFullError`, after
        its partial ``*.orbax-checkpoint-tmp*`` step is removed (by process 0; another host names it: on a failure
        of its own writes, ``_raise_failed_here``, the job stops with it); one that could not write there
        (permissions, a read-only or vanished folder, an I/O error) one :class:`CheckpointUnwritable`, its partial
        step left (no resume reads it; it could not be removed either). The committed steps stay as they were."""
        try:
            yield
        except Exception as e:
            released = orbax_quirks.release_waiting_saves()
            if not (out_of_space(e) or unwritable(e)):
                raise
            if released:
                orbax_quirks.quiet_unstarted_coroutines()
            # Process 0 removes the partial step; another host leaves it (process 0 may still be writing there)
            primary, left = jax.process_index() == 0, []
            if out_of_space(e):
                left = self._remove_partial_saves() if primary else self._partial_saves()
            self._manager.reload()
            latest = "none" if (step := self._manager.latest_step()) is None else f"step {step}"
            if out_of_space(e):
                named = f"the partial save {', '.join(map(str, left))}"
                partial = ("the partial save was removed" if not left else f"{named} is left (delete it)" if primary
                           else f"{named} may be left (delete it if it is still there)")
                raise DiskFullError(f"the disk under {self.directory} filled up while saving a checkpoint; {partial} "
                                    f"and the latest complete checkpoint is {latest}; free some space (or lower "
                                    "RunConfig.max_to_keep), then rerun with --resume") from None
            # tensorstore names its temporary files with their binary suffix escaped (\x00\x64...): left out
            reason = re.sub(r"(\\x[0-9a-f]{2})+", "...", one_line(e))
            raise CheckpointUnwritable(f"a checkpoint could not be written under {self.directory} ({reason}); "
                                       f"the latest complete checkpoint is {latest}; make {self.directory} writable "
                                       "again (permissions, the filesystem), then rerun with --resume") from None

    def _remove_partial_saves(self, settle_s: float = 0.5, timeout_s: float = 30.0) -> list[epath.Path]:
        """Deletes ``*.orbax-checkpoint-tmp*`` steps; returns those it could not (a folder it may not write). A failed
        save's other writes (tensorstore's threads) may still be landing and recreate folders, so this repeats until
        nothing has reappeared for ``settle_s``."""
        deadline, quiet_since = time.monotonic() + timeout_s, time.monotonic()
        while time.monotonic() < deadline:
            partial = self._partial_saves()
            for path in partial:
                shutil.rmtree(os.fspath(path), ignore_errors=True)
            if partial:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle_s:
                return []
            time.sleep(0.05)
        return self._partial_saves()

    def _partial_saves(self) -> list[epath.Path]:
        return sorted(self.directory.glob(f"*{atomicity.TMP_DIR_SUFFIX}*"))

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _resolve(self, step: int | None) -> int:
        steps = self._manager.all_steps()
        if step is None:
            step = self._manager.latest_step()
            if step is None:
                fix = "the run has not saved one yet" if self.read_only else "train first or drop --resume"
                raise FileNotFoundError(f"no checkpoint in {self.directory}; {fix}")
        elif step not in steps:
            pending = (f" (step {step} has no complete save yet: a training run is writing it, or was killed while "
                       "writing it; wait for the save)") if step in self.unfinished_steps() else ""
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}{pending}; saved steps: "
                                    f"{sorted(steps)}")
        return step

    def unfinished_steps(self) -> list[int]:
        """Steps with a save started and not committed: being written now, or left by a process killed mid-save."""
        names = (p.name.partition(".")[0] for p in self.directory.glob(f"*{atomicity.TMP_DIR_SUFFIX}*"))
        return sorted({int(name) for name in names if name.isdigit()})


def step_folders(directory) -> list[int]:
    """The steps saved in a checkpoint ``directory`` by their folders (``N``; a save in flight is ``N.orbax-...``),
    without opening Orbax, which creates the directory; [] where there is none."""
    return sorted(int(p.name) for p in Path(directory).glob("*") if p.name.isdigit())


def check_config(stored: dict, current: dict, keys: Sequence[str], defaults: dict | None = None) -> None:
    """Raises a one-line ValueError listing every key (dotted path) where ``stored`` and ``current`` differ.

    ``current`` is compared after a JSON round trip, as ``stored`` was, so tuples equal lists and dataclass-free
    configs compare by value. A key absent on both sides agrees, and so does one absent from ``stored`` (saved
    before the field existed) where ``current`` holds its value in ``defaults``.
    """
    current, defaults = _as_json("config", current), _as_json("defaults", defaults or {})
    # A checkpoint saved before rlvjax stored the architecture (2026-12-02) is checked by its arrays' shapes alone,
    # as it was then: the default architecture says nothing about the one it trained.
    keys = [key for key in keys if not (key in ARCHITECTURE_KEYS and _lookup(stored, key) == _ABSENT)]
    differing = [f"{path} (checkpoint {old!r}, now {new!r})" for key in keys
                 for path, old, new in _differences(_lookup(stored, key), _lookup(current, key), key)
                 if not (old == _ABSENT and new == _lookup(defaults, path))]
    if differing:
        raise ValueError(f"checkpoint config differs in {', '.join(differing)}; restore with the config it was "
                         "trained with, or use a fresh workdir")


def ensure_writable(directory: epath.Path, what: str = "checkpoint directory") -> None:
    """Creates ``directory`` and proves a file can be written there, so a bad workdir fails before training."""
    probe = directory / f".write-probe-{os.getpid()}-{jax.process_index()}"
    created = [p for p in [directory, *directory.parents] if not p.exists()]  # removed again if the probe fails
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        for path in created:  # deepest first
            if path.exists():
                try:
                    path.rmdir()
                except (OSError, ValueError):  # another process (a job's other host) has written there since
                    break
        raise PermissionError(f"{what} {directory} is not writable ({e.strerror or e}); choose a workdir you can "
                              "write to") from None


def check_free_space(directory: str | os.PathLike, needed_bytes: int, what: str = "a checkpoint") -> None:
    """Raises a one-line OSError when the file system of ``directory`` (or of its nearest existing parent, so that
    nothing is created) has less than ``needed_bytes`` free (for ``what``, named in the message): a full disk should
    stop a run before it trains, not at a checkpoint."""
    existing = epath.Path(directory)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        free = shutil.disk_usage(os.fspath(existing)).free
    except (OSError, TypeError):  # not a local file system (e.g. a bucket): the write probe is the only check
        return
    if free < needed_bytes:
        raise DiskFullError(f"only {_size(free)} free under {existing}, {what} needs about {_size(needed_bytes)}; "
                            "free some space or choose a workdir on a larger disk")


class DamagedCheckpoint(UserError):
    """A saved step that cannot be read back: ``damage`` says what, ``advice`` what to do (left out where a resume
    goes on past the step by itself)."""

    def __init__(self, damage: str, advice: str = ""):
        super().__init__(f"{damage}; {advice}" if advice else damage)
        self.damage = damage


class CheckpointUnavailable(UserError):
    """A saved step that could not be read for a reason outside it (permissions, memory, the filesystem)."""


# What tensorstore and XLA say (in their messages only) when a read fails for a reason outside the files read.
UNAVAILABLE = ("PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "UNAVAILABLE:",
               os.strerror(errno.EACCES), os.strerror(errno.EIO), os.strerror(errno.ETIMEDOUT))


def unavailable(e: BaseException | None) -> bool:
    """Whether ``e``, or an exception it was raised from, says a read failed for a reason outside the checkpoint:
    no permission, no memory, a filesystem failing or timing out (an I/O error is not taken for damage either: a
    network filesystem's can pass)."""
    return raised_from(e, lambda x: isinstance(x, (PermissionError, MemoryError, TimeoutError, ConnectionError))
                       or isinstance(x, OSError) and x.errno == errno.EIO or any(m in str(x) for m in UNAVAILABLE))


class CheckpointUnwritable(UserError, OSError):
    """A save that could not write under the checkpoint directory for a reason other than space (permissions, a
    read-only or failing filesystem)."""


class DiskFullError(UserError, OSError):
    """Too little free space for a run, or a disk that filled up during a save (a user error: the CLI prints it as
    one line)."""


def _size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


_ABSENT = "<absent>"


def _differences(stored: Any, current: Any, path: str) -> list[tuple[str, Any, Any]]:
    """The leaves where two values differ, as ``(dotted path, stored, current)``; dicts are compared key by key, so
    a section names the fields that changed, not its whole contents."""
    if isinstance(stored, dict) and isinstance(current, dict):
        return [d for k in [*stored, *(k for k in current if k not in stored)]
                for d in _differences(stored.get(k, _ABSENT), current.get(k, _ABSENT), f"{path}.{k}")]
    return [] if stored == current else [(path, stored, current)]


def _lookup(config: dict, dotted_key: str) -> Any:
    value = config
    for part in dotted_key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _as_json(name: str, value: dict) -> dict:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be JSON-serialisable ({e}); convert dataclasses with dataclasses.asdict") \
            from None
