"""``python -m rlvjax.X`` for the tests, without a fresh interpreter's imports each time.

A command spends ~3 s importing JAX, flax, grain, orbax and transformers before it reads its first flag (a refused
flag: 3.2 s fresh, 0.7 s forked), and the tests run hundreds of commands. A server per pytest worker imports those
libraries and rlvjax's own modules once; each command is a fork of it that runs its module (or ``-c`` code) as
``__main__``, as ``python`` does, with the command's arguments, working directory and environment. Its exit code,
stdout and stderr are the real ones: the command's own code runs in a process of its own that ends as any
interpreter does.

What a fork cannot take from a fresh interpreter is an environment variable that a library reads when it is
imported (``JAX_PLATFORMS``, ``HF_HUB_OFFLINE``...): one server runs per distinct environment, so each command's is
its own. Only ``XLA_FLAGS`` (read when JAX first makes its devices) and ``PYTHONPATH`` (put on ``sys.path`` by the
fork) may differ within one server. Tests about a fresh interpreter's start-up (its warnings: test_cli's --help,
test_evaluate's first evaluations), and those that signal or kill a process they started, run ``subprocess``.
"""

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PER_COMMAND = ("XLA_FLAGS", "PYTHONPATH", "PYTEST_CURRENT_TEST")  # read after the imports: a fork sets them
# Run as __main__ by the commands, so never preloaded (a module imported twice defines its absl flags twice).
COMMANDS = {"rlvjax.train", "rlvjax.evaluate", "rlvjax.export", "rlvjax.config_docs"}

MAX_SERVERS = 4  # per pytest worker, each ~0.5 GB: the oldest stops first

_servers: dict[tuple, subprocess.Popen] = {}


def run(argv: list, *, cwd=None, env=None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, capture_output=True, text=True, ...)`` for ``argv = [sys.executable, "-m", module,
    *args]`` or ``[sys.executable, "-c", code, *args]``, forked from the server for ``env``; stdin is empty."""
    assert argv[0] == sys.executable and argv[1] in ("-m", "-c"), argv
    env = dict(os.environ if env is None else env)
    server = _server({k: v for k, v in env.items() if k not in PER_COMMAND})
    with tempfile.TemporaryDirectory(prefix="forkserver") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        request = {argv[1]: argv[2], "args": [str(a) for a in argv[3:]], "cwd": str(cwd or os.getcwd()),
                   "env": env, "timeout": timeout, "stdout": str(out), "stderr": str(err)}
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        reply = server.stdout.readline()
        if not reply:
            raise RuntimeError(f"the fork server died (exit {server.wait()}); its error is in the test's stderr")
        code, out, err = json.loads(reply), out.read_text(), err.read_text()
    if code is None:
        raise subprocess.TimeoutExpired(argv, timeout, out, err)
    return subprocess.CompletedProcess(argv, code, out, err)


def _server(env: dict) -> subprocess.Popen:
    key = tuple(sorted(env.items()))
    if key not in _servers or _servers[key].poll() is not None:
        if len(_servers) >= MAX_SERVERS:
            _stop(_servers.pop(next(iter(_servers))))
        _servers[key] = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, cwd=REPO, env={**env, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")})
    return _servers[key]


def _stop(*servers):
    for server in servers:
        server.stdin.close()  # the server ends at the end of its input
        server.wait()


atexit.register(lambda: _stop(*_servers.values()))


def _serve():
    import importlib
    import pkgutil
    import runpy
    import types

    from absl import flags
    from transformers import PreTrainedTokenizerFast  # noqa: F401  (what rlvjax loads its tokenizers with)

    import rlvjax

    for info in pkgutil.walk_packages(rlvjax.__path__, "rlvjax."):
        if info.name not in COMMANDS and info.name != "rlvjax.eval_flags":
            importlib.import_module(info.name)
    defined = [m for m in flags.FLAGS.flags_by_module_dict() if m.startswith("rlvjax")]
    assert not defined, f"preloaded modules define flags: {defined}"
    replies = sys.stdout
    sys.stdout = sys.__stdout__ = os.fdopen(os.dup(2), "w")  # fd 1 is the replies' pipe; a fork rebinds 1 and 2
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                                   (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
                opened = os.open(path, mode)
                os.dup2(opened, fd)
                os.close(opened)
            sys.stdin, sys.stdout = open(0, closefd=False), open(1, "w", closefd=False)
            sys.__stdin__, sys.__stdout__ = sys.stdin, sys.stdout
            extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
            sys.path[:1] = [request["cwd"] if "-m" in request else "", *extra]  # as python does, then PYTHONPATH
            if "-m" in request:
                sys.argv = ["-m", *request["args"]]  # runpy puts the module's path first, as python -m
                runpy.run_module(request["-m"], run_name="__main__", alter_sys=True)
            else:
                sys.argv = ["-c", *request["args"]]
                sys.modules["__main__"] = main = types.ModuleType("__main__")
                exec(compile(request["-c"], "<string>", "exec"), main.__dict__)
            sys.exit(0)  # the interpreter's own exit: atexit handlers, threads joined, buffers flushed
        fd = os.pidfd_open(pid)
        done = select.select([fd], [], [], request["timeout"])[0]
        if not done:
            os.kill(pid, 9)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        os.close(fd)
        replies.write(json.dumps(code if done else None) + "\n")
        replies.flush()


if __name__ == "__main__":
    sys.path[0] = str(REPO)  # as python -m from the repository: its rlvjax
    _serve()
