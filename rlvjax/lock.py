"""One training run per workdir: an advisory record lock on ``WORKDIR/.lock``, held by JAX process 0.

The kernel drops the lock when its process ends, however it ends, so a dead process (kill -9, a lost node) never
blocks a resume (a child it forked closes its copy of the lock's descriptor, so it does not keep the lock alive).
While it holds the lock, the holder names itself (pid, host, start time) in the same file, so the process refused
can say who holds the workdir. The file is removed on release, before the lock goes (a run refused after taking it
leaves nothing behind), and a process that locked a file its last holder had just removed sees that it is no longer
the workdir's ``.lock`` and tries again, so two processes never hold two files. A kill leaves the file, with the dead
holder's name, which the next holder rewrites.

A record lock (open-file-description on Linux, as flock's is) rather than a ``flock`` of the directory: on NFS a
directory's flock is local to each client (``nfs_dir_operations`` has no ``flock``), so two hosts would both have
taken it, while record locks go to the server's lock manager. A FUSE mount such as gcsfuse keeps record locks on each
host only: it keeps a second run on the same host out, not one on another host. A filesystem with no locks at all is
refused in one line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
import time
from pathlib import Path
from typing import Iterator

from rlvjax.cli import UserError

HOLDER_FILE = ".lock"


class WorkdirBusy(UserError):
    """Another live process trains in this workdir."""


class WorkdirUnlockable(UserError):
    """The workdir's filesystem has no locks."""


@contextlib.contextmanager
def workdir_lock(workdir: Path, *, enabled: bool = True) -> Iterator[None]:
    """Holds ``workdir``'s lock for the block (nothing when not ``enabled``: JAX processes other than 0); raises
    :class:`WorkdirBusy`, one line naming the holder, at once when another live process holds it."""
    if not enabled:
        yield
        return
    holder = Path(workdir) / HOLDER_FILE
    fd = _lock(holder)
    owner = os.getpid()
    _HELD.add(fd)
    try:
        name = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
        os.ftruncate(fd, 0)  # written through the locking descriptor: the lock is this descriptor's
        os.pwrite(fd, name.encode(), 0)
        try:
            yield
        finally:
            if os.getpid() == owner:  # a forked child leaving the block holds nothing (``_forget_in_child``)
                # while still locked: see ``_lock``. A workdir that stopped being writable keeps the file (the next
                # holder rewrites it, as after a kill): the removal's error replaced the one the run stopped on.
                with contextlib.suppress(OSError):
                    holder.unlink(missing_ok=True)
    finally:
        if os.getpid() == owner:
            _HELD.discard(fd)
            os.close(fd)  # releases the lock


_HELD: set[int] = set()  # the descriptors holding a workdir lock in this process


def _forget_in_child() -> None:
    """A forked child (a user's multiprocessing worker, a data loader) shares the locking descriptor, and the lock
    lasts while any holder of it lives: the child closes its copy, so the run's lock still ends with the run."""
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _lock(holder: Path) -> int:
    """The descriptor of ``holder`` that holds the workdir's lock: locked, and still the file at that path (its last
    holder removes it before releasing it; one locked after that removal is an orphan, and the path is tried
    again)."""
    while True:
        fd = os.open(holder, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if hasattr(fcntl, "F_OFD_SETLK"):  # Linux: the lock is this descriptor's, as flock's is
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
            else:  # no open-file-description record locks (macOS): flock, this descriptor's too (local to each host)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EAGAIN):
                raise _busy(holder.parent, holder) from None
            raise WorkdirUnlockable(f"{holder.parent} cannot be locked on this filesystem ({e.strerror}), so a second "
                                    "run there could not be kept out; choose a --workdir on a filesystem with locks (a "
                                    "local disk, NFS with its lock manager, Lustre mounted with flock)") from None
        try:
            current = os.stat(holder)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)


def _busy(workdir: Path, holder: Path) -> WorkdirBusy:
    try:
        name = holder.read_text(encoding="utf-8").strip() or "another process"
    except OSError:
        name = "another process"
    return WorkdirBusy(f"{workdir} is in use by {name}; wait for that run to end (or stop it), or choose another "
                       "--workdir")


def process_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (whoever's it is): staged files it left are still being written."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
