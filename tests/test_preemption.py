"""The signal handler only records a notice (raised from inside an XLA compile, an exception could crash the
interpreter at exit); the start-up's safe points raise it as the one-line stop, and after ``defer`` it waits for the
step boundary."""

import gc
import os
import signal
import sys

import pytest

from rlvjax import cli, preemption


class SignalsInFinalizer:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside a finalizer


def test_a_notice_is_recorded_and_raised_at_the_safe_points(monkeypatch):
    printed = []  # what Python would print as "Exception ignored in ...", with its traceback
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    with preemption.notice() as notice:
        notice.check()  # nothing received: goes on
        holder = [SignalsInFinalizer()]
        holder.append(holder)  # a cycle: collected by gc, not at once
        del holder
        gc.collect()
        assert notice.received() and printed == []
        with pytest.raises(cli.Preempted, match="SIGTERM before the first RL step; nothing to save"):
            notice.check()  # e.g. the warm start's next step
        with pytest.raises(cli.Preempted, match="SIGTERM before the first RL step; nothing to save"):
            notice.defer()
    with preemption.notice() as notice:
        notice.defer()
        os.kill(os.getpid(), signal.SIGTERM)  # in the loop: recorded for the step boundary, nothing raised
        notice.check()
        assert notice.received() and notice.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
