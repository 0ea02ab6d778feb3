"""A multi-host job stops as one: a process that stops on an error tells process 0, which stops the job.

Each process's error is its own (bad input on that host, a full disk, a traceback): a process other than 0 that
stopped left process 0 waiting in its next collective until the heartbeat timeout (100 s), and then it aborted
(exit 134) without the cause. The processes tell each other through the job's coordination service, a key-value
store that process 0 serves: under ``FAILED`` + a process's index, why it stopped; under ``STOPPED``, why process 0
stops the job, so that the others stop with that line (they aborted, 134, once process 0 and its service were gone)
and say under ``FOLLOWED`` that they have.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import jax

from rlvjax.cli import one_line, raised_from

FAILED = "rlvjax/failed/"
STOPPED = "rlvjax/stopped/"
FOLLOWED = "rlvjax/followed/"
PEERS_WAIT_S = 3.0  # process 0, stopping the job, waits at most this long for the others to stop (theirs or its)
GRACE_S = 1.0  # and once another has stopped, this long for its own error, raised by the same collective, to come
_stopping = threading.Event()  # this process stops on its own error: its watcher stands down
_exiting = threading.RLock()  # one exit at a time: the main thread's or the watcher's
_exit_started = False  # a stop re-entered on its own thread (a Ctrl-C handler during the wait) exits at once
_stopped_before: list[dict] = []  # process 0: the others that had stopped when it began to
_watching = False


def watch() -> None:
    """Once this process has joined a job: process 0 watches for the others' reports (``_stop_with_a_failed_process``),
    the others for process 0's stop (``_follow_process_0``), and an uncaught exception (a Python API script) stops the
    job too (``_stop_on_uncaught``). Once a process."""
    global _watching
    if _watching:
        return
    _watching = True
    watcher = _stop_with_a_failed_process if jax.process_index() == 0 else _follow_process_0
    threading.Thread(target=watcher, name="rlvjax-job-stop", daemon=True).start()
    sys.excepthook = _stop_on_uncaught(sys.excepthook)


def _client():
    from jax._src import distributed  # the coordination service's client; JAX has no public handle on it

    return distributed.global_state.client


def _joined() -> tuple[int, int]:
    """(this process's index, the job's process count) as it was joined, for the watchers' threads: there,
    ``jax.process_count()`` set up a backend of its own and raised (``key cpu:global_topology/cpu already exists``)."""
    from jax._src import distributed

    return distributed.global_state.process_id, distributed.global_state.num_processes


def _failures(client, folder: str = FAILED) -> list[dict] | None:
    """The processes that reported stopping on an error (``STOPPED``: process 0's stop of the job, ``FOLLOWED``: the
    processes that stopped with it); None once the job's client has shut down."""
    try:
        return [json.loads(value) for _, value in client.key_value_dir_get(folder)]
    except Exception:
        return None


def stopping() -> None:
    """This process is stopping on an error of its own (call before printing it): its watcher no longer stops it
    for another process's. Its error may be the consequence of theirs (a collective whose peer left):
    ``stop`` prints theirs after it."""
    _stopping.set()
    client = _client()
    if client is not None and jax.process_index() == 0:
        _stopped_before[:] = _failures(client) or []


def stop(name: str, code: int, message: str) -> NoReturn:
    """Exit a multi-process job's process with ``code`` at once, after ``stopping`` and its line. A process other
    than 0 first tells process 0 (``message``), which prints it and stops the job; process 0 prints the lines of
    those that had stopped before it and exits with the code of the first of them, once the others have stopped on
    their own errors (a check failing on every process alike stops each of them) or with its (``_end_the_job``)."""
    global _exit_started
    _stopping.set()
    with _exiting:
        if _exit_started:
            os._exit(code)
        _exit_started = True
        client = _client()
        if client is not None and jax.process_index() != 0:
            failure = {"process": jax.process_index(), "name": name, "code": code, "message": message}
            with contextlib.suppress(Exception):  # process 0 is gone: nothing to tell
                client.key_value_set(f"{FAILED}{jax.process_index()}", json.dumps(failure))
        elif client is not None:
            for failure in sorted(_stopped_before, key=lambda f: f["process"]):
                if failure["message"] != message:
                    print(_line(failure), file=sys.stderr)
            own = {"process": 0, "name": name, "code": code, "message": message}
            cause = min(_stopped_before, key=lambda f: f["process"]) if _stopped_before else own
            code = cause["code"]  # they stopped first: the job ends as they did
            _end_the_job(client, cause)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _stop_with_a_failed_process() -> None:
    """Process 0, in a thread: once another process reports that it stopped, print its line and exit with its code
    (the job's other processes stop when process 0, their coordinator, does), unless process 0 stops on its own."""
    client = _client()
    while not _stopping.is_set():
        time.sleep(0.25)
        failures = _failures(client)
        if failures is None:  # the client shut down: this process is ending
            return
        if failures and not _stopping.wait(GRACE_S):
            with _exiting:
                first = min(failures, key=lambda f: f["process"])
                print(_line(first), file=sys.stderr, flush=True)
                sys.stdout.flush()
                _end_the_job(client, first)
                os._exit(first["code"])


def _end_the_job(client, cause: dict) -> None:
    """Process 0: tell the others why the job stops (``cause``, a report) and wait, at most ``PEERS_WAIT_S``, until
    each has stopped, on its own error or with this one (``_follow_process_0``): exiting first took the coordination
    service from under them."""
    with contextlib.suppress(Exception):
        client.key_value_set(f"{STOPPED}job", json.dumps(cause))
    deadline = time.monotonic() + PEERS_WAIT_S
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C again: no more waiting
        while time.monotonic() < deadline:
            stopped = {f["process"] for folder in (FAILED, FOLLOWED) for f in _failures(client, folder) or []}
            if len(stopped) >= _joined()[1] - 1:
                return
            time.sleep(0.05)


def _follow_process_0() -> None:
    """A process other than 0, in a thread: once process 0 stops the job (on its error or another process's), print
    its cause, say so (``FOLLOWED``) and exit with its code, unless this process stops on its own meanwhile."""
    client = _client()
    while not _stopping.is_set():
        time.sleep(0.25)
        stops = _failures(client, STOPPED)
        if stops is None:  # the client shut down: this process is ending
            return
        if stops and not _stopping.wait(GRACE_S):
            with _exiting:
                print(_line(stops[0]), file=sys.stderr, flush=True)
                sys.stdout.flush()
                with contextlib.suppress(Exception):
                    client.key_value_set(f"{FOLLOWED}{_joined()[0]}", json.dumps({"process": _joined()[0]}))
                os._exit(stops[0]["code"])


def _stop_on_uncaught(previous):
    """A Python API script's uncaught exception on one process of the job: its traceback, then ``stop`` (the
    commands stop so through ``cli.run_main``). The process waited for the others at JAX's shutdown barrier, blocked
    in their next collective, until every process aborted (134), the cause nowhere but in its own output."""
    def hook(kind, value, trace):
        if peer_lost(value):  # not this process's error: exits as it would have
            previous(kind, value, trace)
            return
        stopping()
        previous(kind, value, trace)
        name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] not in ("", "-c") else "python"
        code = 130 if issubclass(kind, KeyboardInterrupt) else 1
        stop(name, code, f"{kind.__name__}: {one_line(value)}")

    return hook


def peer_lost(e: BaseException) -> bool:
    """A collective that failed because another process of the job is gone: the cause is that process's, told by
    it (``stop``) or, for a process killed without a word, named by JAX's coordination service once its heartbeat
    stops, as this process exits."""
    return raised_from(e, lambda x: type(x).__name__ == "JaxRuntimeError"
                       and re.search(r"Connection (closed|reset) by peer", str(x)) is not None)


def _line(failure: dict) -> str:
    return f"{failure['name']}: error: process {failure['process']} stopped: {failure['message']}"
