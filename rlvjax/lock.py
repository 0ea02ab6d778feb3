"""One training process per workdir: an advisory ``flock`` on ``WORKDIR/.lock.<process index>``.

The kernel drops the lock when its process ends, however it ends, so a lock left by a dead process (kill -9, a lost
node) never blocks a resume: the file stays, the lock does not. The file names the holder (pid, host, start time),
so the process refused can say who holds the workdir. Each JAX process of a multi-host run locks its own file.
Advisory locks on NFS are only as good as the server's lock manager; local disks and Lustre/GPFS honour them.
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


class WorkdirBusy(UserError):
    """Another live process trains in this workdir."""


@contextlib.contextmanager
def workdir_lock(workdir: Path, process_index: int = 0) -> Iterator[None]:
    """Holds the workdir's lock for the block; raises :class:`WorkdirBusy` (one line, naming the holder) at once
    when another live process holds it."""
    path = Path(workdir) / f".lock.{process_index}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            raise WorkdirBusy(f"{workdir} is in use by {holder}; wait for that run to end (or stop it), or choose "
                              "another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
