"""The workdir lock, a record lock on WORKDIR/.lock (a directory's flock is local to each NFS client): it keeps a
second process out, names the holder, and is released with its process."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlvjax import lock
import forkserver

REPO = Path(__file__).resolve().parents[1]
# Another process trying the same workdir.
SECOND = """
import sys
from rlvjax import lock
try:
    with lock.workdir_lock(sys.argv[1]):
        print("locked")
except lock.WorkdirBusy as e:
    print(e)
"""


def second_process(workdir) -> str:
    out = forkserver.run([sys.executable, "-c", SECOND, str(workdir)], timeout=120,
                         cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_a_record_lock_on_the_holder_file_keeps_a_second_process_out(tmp_path, monkeypatch):
    # Not flock: a directory's flock on NFS is local to each client, so a run on another host took it too.
    monkeypatch.setattr(lock.fcntl, "flock", lambda *a: pytest.fail("flock is not arbitrated across NFS clients"))
    with lock.workdir_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} on ")  # an open and close of its own
        refused = second_process(tmp_path)
        assert refused.startswith(f"{tmp_path} is in use by pid {os.getpid()} on "), refused
        with pytest.raises(lock.WorkdirBusy):  # this process too (an open-file-description lock)
            with lock.workdir_lock(tmp_path):
                pass
    assert not (tmp_path / ".lock").exists()  # removed on release: a refused run leaves nothing behind
    assert second_process(tmp_path) == "locked"


def test_a_lock_file_its_last_holder_removed_is_not_held(tmp_path, monkeypatch):
    """The last holder removes .lock before releasing it: a process that opened the file just before and locks it
    just after holds an orphan, beside the next process's new .lock. It must see that and lock the current file."""
    opened = []

    def open_then_removed(path, *args):  # the holder's release lands between this open and its lock, the first time
        fd = os_open(path, *args)
        if not opened:
            os.unlink(path)
        opened.append(fd)
        return fd

    os_open = os.open
    monkeypatch.setattr(lock.os, "open", open_then_removed)
    with lock.workdir_lock(tmp_path):
        assert len(opened) == 2  # the orphan, then the current file
        monkeypatch.setattr(lock.os, "open", os_open)
        assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} on ")
        assert second_process(tmp_path).startswith(f"{tmp_path} is in use by pid {os.getpid()}")


def test_a_filesystem_without_locks_is_one_line(tmp_path, monkeypatch):
    def no_locks(fd, *args):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock.fcntl, "fcntl", no_locks)
    monkeypatch.setattr(lock.fcntl, "lockf", no_locks)
    with pytest.raises(lock.WorkdirUnlockable, match=r"cannot be locked on this filesystem \(No locks available\)"):
        with lock.workdir_lock(tmp_path):
            pass


HOLDER_THAT_FORKS = """
import multiprocessing, os, signal, sys, time
from rlvjax import lock
with lock.workdir_lock(sys.argv[1]):
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,), daemon=True)
    child.start()
    print(child.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # the run dies; its worker lives on
"""


def test_a_child_the_run_forked_does_not_keep_the_lock_after_the_run_dies(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    workdir, out = tmp_path / "run", tmp_path / "child_pid"
    workdir.mkdir()
    with open(out, "w") as stdout:  # a file, not a pipe: the child would hold the pipe open until it ends
        done = subprocess.run([sys.executable, "-c", HOLDER_THAT_FORKS, str(workdir)], stdout=stdout,
                              stderr=subprocess.DEVNULL, timeout=120, cwd=REPO, env=env)
    assert done.returncode == -9
    child = int(out.read_text().split()[0])
    try:
        os.kill(child, 0)  # alive, with a copy of the locking descriptor: it kept the lock before the fix
        with lock.workdir_lock(workdir):
            pass
        assert second_process(workdir) == "locked"
    finally:
        os.kill(child, 9)


def test_a_workdir_that_stopped_being_writable_keeps_the_error_the_run_stopped_on(tmp_path, monkeypatch):
    """The lock file's removal on the way out raised its own PermissionError, and a run whose workdir had been made
    read-only reported "Permission denied: .../.lock" instead of the write that failed."""
    def read_only(self, missing_ok=False):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    with pytest.raises(PermissionError) as stopped:
        with lock.workdir_lock(tmp_path):
            monkeypatch.setattr(Path, "unlink", read_only)
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "final"))
    assert stopped.value.filename == str(tmp_path / "final")
    monkeypatch.undo()
    assert second_process(tmp_path) == "locked"  # released all the same; the next holder rewrites the file
