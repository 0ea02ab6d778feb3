"""One training run per workdir: an advisory ``flock`` on the workdir directory itself, held by JAX process 0.

The kernel drops the lock when its process ends, however it ends, so a dead process (kill -9, a lost node) never
blocks a resume. While it holds the lock, the holder names itself (pid, host, start time) in ``WORKDIR/.lock``, so
the process refused can say who holds the workdir; the file is removed on release (one a kill leaves behind is only
a name, rewritten by the next holder). Locking the directory, not a file in it, adds nothing to a workdir whose run
is refused. Advisory locks on NFS are as good as the server's lock manager; local disks and Lustre/GPFS honour them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from rlvjax.cli import UserError

HOLDER_FILE = ".lock"


class WorkdirBusy(UserError):
    """Another live process trains in this workdir."""


@contextlib.contextmanager
def workdir_lock(workdir: Path, *, enabled: bool = True) -> Iterator[None]:
    """Holds ``workdir``'s lock for the block (nothing when not ``enabled``: JAX processes other than 0); raises
    :class:`WorkdirBusy`, one line naming the holder, at once when another live process holds it."""
    if not enabled:
        yield
        return
    holder = Path(workdir) / HOLDER_FILE
    fd = os.open(workdir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                name = holder.read_text(encoding="utf-8").strip() or "another process"
            except OSError:
                name = "another process"
            raise WorkdirBusy(f"{workdir} is in use by {name}; wait for that run to end (or stop it), or choose "
                              "another --workdir") from None
        holder.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
                          "\n", encoding="utf-8")
        try:
            yield
        finally:
            holder.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock
