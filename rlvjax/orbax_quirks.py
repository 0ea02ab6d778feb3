"""What rlvjax does about Orbax around a checkpoint's reads and failed saves: the warnings it logs for a read-only
open, the records and tracebacks it (and tensorstore, and its never-started coroutines) print after the one line
rlvjax reports for a failed save, its signalling threads left waiting on such a save or never signalled by it, the
failure of this host's writes, recorded where Orbax holds it back (the two private classes of Orbax's it touches,
``_SignalingThread`` and ``_AsyncManager``: orbax-checkpoint is pinned in constraints.txt, and
tests/test_checkpoint.py and tests/test_multihost.py fail when it moves)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings

from rlvjax.cli import OUT_OF_SPACE, out_of_space, unwritable


@contextlib.contextmanager
def quiet_read_only():
    """Orbax logs a warning for each read-only setting it applies; reading a run is what the user asked for."""
    def drop(record: logging.LogRecord) -> bool:
        return "read only" not in record.getMessage() and "read_only=True" not in record.getMessage()

    logger = logging.getLogger("absl")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _drop_failed_save_logs(record: logging.LogRecord) -> bool:
    """Orbax logs a failed save's traceback from its threads; a full disk or a folder it cannot write is reported
    once, by :class:`DiskFullError` or :class:`CheckpointUnwritable`, so those records are dropped (every other
    record passes)."""
    failed = record.exc_info[1] if record.exc_info else None
    return not (out_of_space(failed) or unwritable(failed)
                or any(os.strerror(code) in record.getMessage() for code in OUT_OF_SPACE))


def quiet_failed_saves() -> None:
    """Installs, once per process, the filter of Orbax's and its event loop's records of a failed save
    (``_drop_failed_save_logs``) and the hook that drops tensorstore's "Event loop is closed" tracebacks."""
    for name in ("absl", "asyncio"):  # Orbax's records, and its event loop's ("Task exception was never ...")
        if _drop_failed_save_logs not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_drop_failed_save_logs)
    _drop_closed_event_loop_errors()


def release_waiting_saves() -> int:
    """Orbax's threads of a save whose step folder was never created (a full disk, inodes run out, no permission)
    wait for its "folder created" signal, ``multihost.coordination_timeout`` (300 s), before failing in turn, and
    they are not daemons: the process printed its error and then could not exit for 5 minutes. Each is cancelled
    and its signals set, so it returns at once; returns how many there were."""
    from orbax.checkpoint._src.futures import future

    waiting = [t for t in threading.enumerate() if isinstance(t, future._SignalingThread) and t.is_alive()]
    for thread in waiting:
        thread.cancel()
        future.set_signals(thread._receive_signals, operation_id=thread._operation_id)
    return len(waiting)


def signal_failed_saves() -> None:
    """Once per process: a save thread that fails still sends its signals. Orbax sends them on success only, so when
    process 0 could not create a step's folder, every other host's threads waited for its "folder created" signal
    for ``multihost.coordination_timeout`` (300 s), and process 0 in turn for them. Signalled, they go on, fail at
    their own writes into the missing folder, and each host reports its failed save at once. One process signals
    nothing: ``release_waiting_saves`` stops its own waiting threads (signalled, they ran on, and a few were still
    alive when the process meant to exit)."""
    import jax
    from orbax.checkpoint._src.futures import future

    run = future._SignalingThread.run
    if getattr(run, "signals_failure", False):
        return

    def run_and_signal(thread):
        run(thread)
        if thread._exception is not None and not thread._cancelled and jax.process_count() > 1:
            future.set_signals(thread._send_signals, operation_id=thread._operation_id)

    run_and_signal.signals_failure = True
    future._SignalingThread.run = run_and_signal


_failed_commits: dict[str, BaseException] = {}  # a checkpoints folder -> the error of this host's writes of a save


def record_failed_commits() -> None:
    """Once per process: a save whose writes failed on this host is recorded for its folder (``failed_commit``) as
    its commit thread ends. Orbax raises that error only when the save's finalize ends, after a barrier of the job's
    hosts, and on a multi-host job whose other hosts' writes succeeded (one node's mount gone read-only) they wait in
    another barrier: every host hung for Orbax's coordination timeout (300 s), with no line."""
    import jax
    from orbax.checkpoint._src.checkpointers import async_checkpointer

    run = async_checkpointer._AsyncManager._thread_func
    if getattr(run, "records_failure", False):
        return

    def run_and_record(manager, directory, *args, **kwargs):
        run(manager, directory, *args, **kwargs)
        # read before the save's finalize, which joins this thread, takes it
        if manager._exception is not None and jax.process_count() > 1:
            _failed_commits[str(directory.parent)] = manager._exception

    run_and_record.records_failure = True
    async_checkpointer._AsyncManager._thread_func = run_and_record


def failed_commit(directory) -> BaseException | None:
    """The failure of this host's writes of a save into ``directory`` (``record_failed_commits``), taken off the
    record; None if none failed."""
    return _failed_commits.pop(str(directory), None)


def quiet_unstarted_coroutines() -> None:
    """After ``release_waiting_saves``: the released threads' coroutines, never started, would each print
    "coroutine ... was never awaited" after the error line."""
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)


def _drop_closed_event_loop_errors() -> None:
    """After a save or read fails, tensorstore's threads call back into Orbax's event loop, closed by then, and
    Python prints each "Event loop is closed" as an unraisable traceback (0 to 116 of them per full-disk save
    failure, after the one line that says what happened). The process's unraisable hook drops exactly those;
    everything else reaches the hook there was."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_event_loop_errors", False):
        return

    def hook(unraisable):
        error = unraisable.exc_value
        if not (unraisable.object is None and type(error) is RuntimeError and str(error) == "Event loop is closed"):
            previous(unraisable)

    hook.drops_closed_event_loop_errors = True
    sys.unraisablehook = hook
