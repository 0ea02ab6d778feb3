"""A notice that lands inside a callback (where Python cannot raise it) is kept, not printed, and ``defer`` raises it
as the one-line stop."""

import gc
import os
import signal
import sys

import pytest

from rlvjax import cli, preemption


class RaisesInFinalizer:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside a finalizer


def test_a_notice_inside_a_finalizer_is_raised_by_defer_not_printed(monkeypatch):
    printed = []  # what Python would print as "Exception ignored in ...", with its traceback
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    with preemption.notice() as notice:
        holder = [RaisesInFinalizer()]
        holder.append(holder)  # a cycle: collected by gc, not at once
        del holder
        gc.collect()
        assert notice.received() and printed == []
        with pytest.raises(cli.Preempted, match="SIGTERM before the first RL step; nothing to save"):
            notice.defer()
    assert sys.unraisablehook == printed.append  # put back
