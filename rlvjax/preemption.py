"""Preemption: SIGTERM (a scheduler's notice) and Ctrl-C honoured at a step boundary, with a checkpoint, on every
host together."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import jax

from rlvjax import cli, job_stop, parallel


class Notice:
    """SIGTERM / SIGINT (Ctrl-C) handling. The handler only records the notice: raised from inside whatever runs
    (an XLA compile, an Orbax read), an exception can leave JAX's threads in a state that crashes the interpreter at
    exit (a segfault, exit 139, where the scheduler expects 0). It is acted on at safe points: during start-up at
    :meth:`check` (every few warm-start steps) and :meth:`defer`, where it stops the run (nothing is lost: the warm
    start is redone, a restored state is still on disk); in the loop at the next step boundary, where the step is
    saved. A second Ctrl-C exits at once, as a kill would (a save in flight is left as Orbax's temporary directory,
    which no resume reads)."""

    def __init__(self):
        self._received = threading.Event()
        self._deferred = False
        self.name = "SIGTERM"

    def handle(self, signum, frame) -> None:
        del frame
        if signum == signal.SIGINT and self._received.is_set():  # like kill -9, which a resume is proof against
            message = "interrupted again: stopped at once, without saving this step; --resume continues from the " \
                      "latest complete checkpoint"
            if jax.distributed.is_initialized():
                job_stop.stopping()
            print(f"rlvjax.train: {message}", file=sys.stderr, flush=True)
            if jax.distributed.is_initialized():
                job_stop.stop("rlvjax.train", 130, message)  # process 0 told
            os._exit(130)
        self.name = signal.Signals(signum).name
        self._received.set()
        if signum == signal.SIGINT:
            then = ("saving a checkpoint at the end of this step, then stopping" if self._deferred else
                    "stopping at the next safe point of the start-up")
            print(f"\nCtrl-C: {then} (Ctrl-C again: stop now, without it)", file=sys.stderr, flush=True)

    def agreed(self) -> bool:
        """A notice has come to any process, said alike on every process: hosts receive a preemption notice at
        slightly different times, but must save the same step together."""
        return parallel.any_process(self.received())

    def check(self) -> None:
        """Before the first RL step: stops the run (on every host together) once a notice has come."""
        if not self._deferred and self.agreed():
            raise cli.Preempted(f"{self.name} before the first RL step; nothing to save, rerun with --resume")

    def defer(self) -> None:
        """The start-up is done: a notice that came during it stops the run now; from here one is honoured at the
        next step boundary, with a checkpoint."""
        self.check()
        self._deferred = True

    def received(self) -> bool:
        return self._received.is_set()


@contextlib.contextmanager
def notice():
    """Installs the SIGTERM and SIGINT handlers of :class:`Notice` for the block (main thread only; elsewhere a
    no-op)."""
    received = Notice()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, received.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def stop_at_once(line: str, *, ctrl_c: bool = False, command: str = "rlvjax.train", code: int = 0):
    """For a phase with nothing to save (the start-up before anything is written, the end-of-run report, written
    whole at its end, an evaluation's sampling): a SIGTERM ends the process at once, exit ``code``, printing
    ``{command}: SIGTERM {line}`` (without this the default action ended it with 143 and no word; raising instead,
    inside JAX, can segfault at exit). With ``ctrl_c`` (a CLI's; never where a Python session runs it: a notebook's
    interrupt would end its kernel) a Ctrl-C does too, printing ``Ctrl-C {line}``, as a notice honoured in training
    does. Main thread only; elsewhere a no-op."""

    def handle(signum, frame):
        del frame
        if jax.distributed.is_initialized():
            job_stop.stopping()
        message = f"{'Ctrl-C' if signum == signal.SIGINT else 'SIGTERM'} {line}"
        print(f"{command}: {message}", file=sys.stderr, flush=True)
        if jax.distributed.is_initialized():  # the job stops with it (the others aborted, 134, with a C++ trace)
            job_stop.stop(command, code, message)
        os._exit(code)

    with _on_sigterm(handle, *([signal.SIGINT] if ctrl_c else [])):
        yield


@contextlib.contextmanager
def interrupt_on_sigterm(error: BaseException | type[BaseException] = KeyboardInterrupt, *, ctrl_c: bool = False):
    """For a command with no state to save but a temporary to remove (an export's half-written copy): a SIGTERM
    (and with ``ctrl_c`` a Ctrl-C, inside a block that set another handler for it) raises ``error`` where the main
    thread is, so the cleanup that Ctrl-C runs runs for a scheduler's notice too, and the command ends with one
    line, exit 130 (without this: 143, no word, the copy left behind). Main thread only; elsewhere a no-op.

    A notice that lands while a garbage-collection callback runs (JAX registers one) raises inside it, where Python
    prints and drops the exception: the export went on to the end and exited 0 (review). Such a drop is caught by
    ``sys.unraisablehook`` and the notice raised again where the main thread is."""
    kind = error if isinstance(error, type) else type(error)
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    active, guard, dropped = [True], threading.Lock(), []

    def handle(signum, frame):
        del signum, frame
        raise error

    def resend():  # a real signal: it also wakes a main thread that waits on a lock or a future
        with guard:
            if active[0]:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    def rearm(unraisable):
        if isinstance(unraisable.exc_value, kind) and threading.current_thread() is threading.main_thread():
            # sent again once the main thread is out of the collection (sent from here, it ran inside this hook at
            # once); one landing in the next callback is caught here again
            later = threading.Timer(0.05, resend)
            later.daemon = True
            later.start()
            dropped.append(later)
        else:
            previous_hook(unraisable)

    previous_hook, sys.unraisablehook = sys.unraisablehook, rearm
    try:
        with _on_sigterm(handle, *([signal.SIGINT] if ctrl_c else [])):
            try:
                yield
                if dropped:  # dropped as the block ended, before it was sent again: this block's notice all the same
                    raise error
            finally:
                with guard:  # nothing is sent once the handlers are put back (a SIGTERM then ended the process)
                    active[0] = False
                for later in dropped:
                    later.cancel()
    finally:
        sys.unraisablehook = previous_hook


@contextlib.contextmanager
def _on_sigterm(handle, *also: signal.Signals):
    """``handle`` as the SIGTERM handler (and of the signals ``also``) for the block, the previous ones after it (main
    thread only: elsewhere signals cannot be handled, and the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, *also)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
