"""Files and directories written whole or not at all: a reader sees the old one or the new one, never a part.

A large output (an exported model, an evaluation's samples) is staged under a hidden name beside its final one that
carries its writer's pid and host (``staged_prefix``); what a killed writer left is removed by the next writer
(``abandoned``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from rlvjax.lock import process_running

STALE_S = 3600  # a staged item of another host untouched this long was left by a killed writer
SWAP_WAIT_S = 10.0  # how long a directory swap waits for another's (``_swapping_in``)


def write_text(path, text: str) -> None:
    """``text`` into ``path`` through a hidden temporary beside it, renamed into place; a failed write (a full disk)
    removes the temporary, which would otherwise hold the disk full."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def staged_prefix(name: str) -> str:
    """The start of the hidden name that ``name`` is staged under: ``.NAME.<pid>@<host>-`` (a random part follows:
    8 characters of ``mkdtemp`` or 12 hex digits, then ``suffix`` where ``abandoned`` is given one)."""
    return f".{name}.{os.getpid()}@{socket.gethostname()}-"


def abandoned(path: Path, name: str, suffix: str = "") -> bool:
    """Whether ``path`` is a staging item of ``name``, exactly as ``staged_prefix`` names them, left by a writer
    that is gone: a process of this host no longer running, or, of another host sharing the folder, one that has not
    touched it for ``STALE_S``. Anything else (a user's own ``.NAME.2024-06-01``) is not; nor are the pid-only
    names of the code before 2026-12-05 (``.NAME.12-original`` has their shape)."""
    staged = re.fullmatch(rf"\.{re.escape(name)}\.(\d+)@([\w.-]+)-(?:[a-z0-9_]{{8}}|[0-9a-f]{{12}}){re.escape(suffix)}",
                          path.name)
    if staged is None:
        return False
    pid, host = staged.groups()
    if host == socket.gethostname():
        return not process_running(int(pid))
    with contextlib.suppress(FileNotFoundError):  # another writer removed it first
        return time.time() - path.stat().st_mtime > STALE_S
    return False


def staging_dir(path: Path) -> Path:
    """A new hidden directory beside ``path`` to write its next version into (0700, as ``mkdtemp`` makes it), once
    what killed writers left there is removed (``remove_abandoned``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(path)
    return Path(tempfile.mkdtemp(prefix=staged_prefix(path.name), dir=path.parent))


def remove_abandoned(path: Path) -> None:
    """Removes what killed writers of the directory ``path`` left beside it, each a whole model's size at scale:
    their staging folders (``abandoned``) and, once ``path`` is whole again, the previous version one kept aside
    between its two renames (``.NAME.old-*``, ``replace_dir``)."""
    for sibling in path.parent.glob(f".{glob.escape(path.name)}.*-*"):
        kept_aside = re.fullmatch(rf"\.{re.escape(path.name)}\.old-[a-z0-9_]{{8}}", sibling.name)
        if kept_aside and path.is_dir() or abandoned(sibling, path.name):
            shutil.rmtree(sibling, ignore_errors=True)


def check_replaceable(path: Path) -> None:
    """``replace_dir`` replaces ``path`` whole: refused for a file or the working directory (which no rename can
    replace)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"{path} is a file; save the model into a directory")
    if Path.cwd().resolve().is_relative_to(path.resolve()):
        raise ValueError(f"{path} is the working directory or holds it; save into a new directory")


@contextlib.contextmanager
def _swapping_in(parent: Path):
    """Holds an flock of ``parent`` while a directory in it is swapped for another: two writers overwriting one
    folder at once interleaved their renames (a traceback, or a wrong "is a file"). A swap is two renames, so a
    writer waits at most ``SWAP_WAIT_S`` (the lock may be another tool's, e.g. ``flock DIR command``), then goes on
    unlocked, as where the directory cannot be opened or the filesystem has no locks."""
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:  # a directory one may write into but not list
        yield
        return
    try:
        deadline = time.monotonic() + SWAP_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            except OSError:  # no locks here
                break
        yield
    finally:
        os.close(fd)  # releases the lock


def replace_dir(tmp: Path, path: Path, *, overwrite: bool = True) -> None:
    """Moves the finished directory ``tmp`` (a sibling of ``path``, from ``staging_dir``) to ``path``, with the
    modes any other tool would give its files. An existing ``path`` is renamed aside first and deleted only after;
    an exception or signal between the renames puts it back, so ``path`` holds the new directory or the old one
    whole (after a kill -9 between the two renames, the old one is in ``.NAME.old-*`` beside it), never a
    half-deleted one. Without ``overwrite`` a non-empty ``path`` (one another process wrote since the caller looked)
    is never replaced: a :class:`FileExistsError`, and ``tmp`` is removed."""
    old = None
    try:
        umask = os.umask(0)
        os.umask(umask)
        for item in [tmp, *tmp.rglob("*")]:
            item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)
        with _swapping_in(path.parent):
            if overwrite and path.exists():
                check_replaceable(path)
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)  # onto a non-empty directory the kernel refuses: nothing replaced
            except OSError as e:
                if overwrite or e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                raise FileExistsError(f"{path} was written by another process meanwhile and was left as it is; "
                                      "choose another directory, or overwrite it") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old / path.name, path)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
