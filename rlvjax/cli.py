"""What the command-line entry points share: how a run ends.

- bad input (a config, a path, a value): one line ``name: error: ...`` on stderr naming the problem and the fix,
  exit 2, and nothing written (the entry points validate before they create anything);
- a run that stops itself (:class:`RunFailed`, e.g. non-finite updates): one line, exit 1;
- a preemption notice or Ctrl-C that was honoured (:class:`Preempted`): one line, exit 0, since the state is saved
  and the scheduler's restart with ``--resume`` continues exactly;
- Ctrl-C anywhere else (``KeyboardInterrupt``): one line, exit 130;
- a disk (or quota) that fills up anywhere: one line, exit 2 (checkpoint saves and exports say more);
- in a multi-host job, any of these on a process other than 0 (or a traceback): process 0 prints that line too
  (``process N stopped: ...``) and every process exits with its code at once.

docs/errors.md lists every bad input with its message and where it is checked.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import os
import re
import signal
import sys
import threading
import tokenize
import traceback
from typing import Callable, Mapping, Sequence


class UserError(Exception):
    """Bad input that no builtin exception type names (e.g. a disk too small for one checkpoint)."""


class UserCodeFailed(UserError):
    """A user's function (a reward, an advantage estimator) failed or returned what cannot be used, during a step:
    the training state before it is intact, and the run keeps the steps done (``train.keep_steps_done``)."""


class RunFailed(RuntimeError):
    """The run stopped itself for a reason it states in one line; its last good checkpoint is intact."""


class Preempted(BaseException):
    """SIGTERM or Ctrl-C was honoured: the state is saved (or nothing was lost yet); rerun with --resume. Raised from
    the signal handler, so it derives from BaseException, like KeyboardInterrupt: an ``except Exception`` that it
    lands in (reading a checkpoint, a user's reward function) must not take it for that code's own failure."""


OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def raised_from(e: BaseException | None, says) -> bool:
    """Whether ``says(x)`` holds for ``e`` or an exception it was raised from (its causes and contexts)."""
    while e is not None:
        if says(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def out_of_space(e: BaseException | None) -> bool:
    """Whether ``e`` or an exception it was raised from says the disk (or a quota) is full; tensorstore reports it
    only in its message."""
    return raised_from(e, lambda x: isinstance(x, OSError) and x.errno in OUT_OF_SPACE
                       or any(os.strerror(code) in str(x) for code in OUT_OF_SPACE))


UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.EIO)


_OS_ERROR_CODE = re.compile(r"\[os_error_code='(\d+)'\]")  # how tensorstore's errors carry the errno


def unwritable(e: BaseException | None) -> bool:
    """Whether ``e``, or an exception it was raised from, says a write failed for its folder: no permission, a
    read-only filesystem (one the kernel remounted so after I/O errors too), a folder removed under it, an I/O
    error (a memory or timeout failure is not: it is raised as it is). Tensorstore's writes (a multi-host save's
    other hosts) say it in the message only."""
    return raised_from(e, lambda x: isinstance(x, OSError) and x.errno in UNWRITABLE
                       or any(int(code) in UNWRITABLE for code in _OS_ERROR_CODE.findall(str(x))))


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
               NotADirectoryError, UnicodeDecodeError, UserError)


# After the operating system's own "Permission denied: 'path'" (a workdir or file made read-only under a run).
RERUN = "; fix its permissions, then run the command again (a training run that had started: with --resume)"


def one_line(error: BaseException) -> str:
    """The message on one line; gin's "In call to configurable ..." trailer is dropped (our messages name the
    configurable already)."""
    lines = [line.strip() for line in str(error).splitlines()]
    return " ".join(line for line in lines if line and not line.startswith("In call to configurable"))


def run_main(name: str, main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """Wrap an absl ``main`` with the endings in the module docstring."""

    def wrapped(argv):
        try:
            main(argv)
        except Preempted as e:
            print(f"{name}: {one_line(e)}", file=sys.stderr)
            sys.exit(0)
        except RunFailed as e:
            _stop(name, 1, one_line(e))
        except USER_ERRORS as e:
            _stop(name, 2, one_line(e) + (RERUN if isinstance(e, PermissionError) and e.filename else ""))
        except KeyboardInterrupt:
            _stop(name, 130, "interrupted", printed=f"{name}: interrupted")
        except Exception as e:
            if out_of_space(e):  # a disk that fills up outside a checkpoint save (logs, the report, an export)
                _stop(name, 2, f"the disk filled up ({one_line(e)}); free some space, then run the command again (a "
                               "training run: with --resume; its latest checkpoint is intact)")
            elif _multi_process() and not _job_stop().peer_lost(e):  # the traceback, and process 0 told
                _stop(name, 1, f"{type(e).__name__}: {one_line(e)} (its traceback is in that process's output)",
                      printed=traceback.format_exc().rstrip())
            else:
                raise

    return wrapped


def _multi_process() -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def _job_stop():
    from rlvjax import job_stop  # only in a multi-process job: it imports jax

    return job_stop


def _stop(name: str, code: int, message: str, *, printed: str | None = None) -> None:
    """Print ``printed`` (by default ``name: error: message``) and exit with ``code``. In a multi-process JAX job,
    at once (``job_stop.stop``: process 0 is told, and stops the job). An error raised on one process alone (a busy
    workdir's lock, which process 0 takes) otherwise waited at JAX's shutdown barrier for the other processes,
    blocked in their next collective, until its timeout (300 s), and every process aborted (exit 134)."""
    job_stop = _job_stop() if _multi_process() else None
    if job_stop is not None:
        job_stop.stopping()
    print(f"{name}: error: {message}" if printed is None else printed, file=sys.stderr)
    if job_stop is None and _joined_to_stop():
        job_stop = _job_stop()
        job_stop.stopping()
    if job_stop is not None:
        job_stop.stop(name, code, message)
    sys.exit(code)


def _joined_to_stop() -> bool:
    """A process of a multi-host job its environment names (``parallel.ENV``'s coordinator variables), stopping
    before it joined the job: joined now (``parallel.join_to_stop``), so the others stop with its line."""
    if not (os.environ.get("RLVJAX_COORDINATOR") or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        return False  # (no JAX import on a single host's error)
    from rlvjax import parallel

    return parallel.join_to_stop()


class ArgumentParser(argparse.ArgumentParser):
    """The launchers' parser: a flag that does not parse is one line and exit 2, as in every entry point
    (argparse prints its whole usage first)."""

    def __init__(self, name: str, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)  # a flag is spelt out: the check below and argparse agree
        self.name = name

    def error(self, message: str):
        print(f"{self.name}: error: {message}; --help lists the flags", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        known = {option for action in self._actions for option in action.option_strings}
        unknown = [a.split("=")[0] for a in args if (a.startswith("--") or a[:1] == "-" and a[1:2].isalpha())
                   and a.split("=")[0] not in known]
        if unknown:  # argparse names the missing required flags first, and a misspelt one not at all
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return super().parse_args(args, namespace)


def run(name: str, main: Callable[[list[str]], None]) -> None:
    """``absl.app.run`` of :func:`run_main`, where a flag that does not parse (unknown, mistyped, required and
    missing) is bad input too: one line and exit 2, not absl's two lines and exit 1 (a run that stopped itself);
    so is a stray positional argument, which no entry point takes."""
    from absl import app, flags

    def parse(argv):
        argv = [a if a != "-h" else "--help" for a in argv]  # absl knows --help alone: -h was an unknown flag
        try:
            argv = flags.FLAGS(argv)
        except SystemExit as e:  # absl's --help prints the usage and exits 1; asking for help is no failure
            asked = any(a.split("=")[0].lstrip("-") in ("help", "helpshort", "helpfull", "helpxml", "h", "?")
                        for a in argv[1:])
            sys.exit(0 if asked and e.code == 1 else e.code)
        except flags.Error as e:
            _stop(name, 2, f"{one_line(e).rstrip('.')}; see python -m {name} --help")
        if len(argv) > 1:  # a word without its flag (`--gin_file`, `--policy` forgotten): it would be ignored
            hint = ("gin files go after --gin_file" if argv[1].endswith(".gin") else
                    f"every input is a --flag (see python -m {name} --help)")
            _stop(name, 2, f"unexpected argument {argv[1]!r}; {hint}")
        return argv

    def then_done(argv):
        run_main(name, main)(argv)
        _finished(name)

    app.run(then_done, flags_parser=parse)


def _finished(name: str) -> None:
    """Once the command's work is done and its outputs are whole: a SIGTERM while the interpreter and JAX shut down
    (a second or more) ended the process 143 without a word, and a scheduler retried an export that was there, into
    "exists and is not empty" (review). It now exits 0, saying so."""

    def done(signum, frame):
        del signum, frame
        sys.stdout.flush()
        print(f"{name}: SIGTERM after the command had finished; its output is complete", file=sys.stderr, flush=True)
        os._exit(0)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, done)


_GIN_SEARCH_PATHS: set[str] = set()


def add_gin_search_path(path: str) -> None:
    """Where gin's ``include`` looks for relative files, once each (gin keeps a list)."""
    import gin

    if path not in _GIN_SEARCH_PATHS:
        gin.add_config_file_search_path(path)
        _GIN_SEARCH_PATHS.add(path)


def _binding_hint(message: str, fields: Mapping[str, Sequence[str]]) -> str:
    """What to write for a binding gin rejected: the configurable that has the field (``RLConfig.num_steps``:
    RunConfig's), the closest field or configurable name, else where every name is listed."""
    if m := re.search(r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'", message):
        configurable, name = m.groups()
        if name in fields:
            owners = fields[name]
            return (f"{owners[0]} has it" if len(owners) == 1 else f"{', '.join(owners[:-1])} and {owners[-1]} have "
                    "it") + f": write {' or '.join(f'{o}.{name}' for o in owners)}"
        close = [f for f in difflib.get_close_matches(name, list(fields), n=5, cutoff=0.7)
                 if configurable in fields[f]]
        if close:
            return f"did you mean {configurable}.{close[0]}?"
    elif m := re.search(r"No configurable matching '([\w.]+)'", message):
        names = sorted({c for owners in fields.values() for c in owners})
        if close := difflib.get_close_matches(m.group(1), names, n=1, cutoff=0.6):
            return f"did you mean {close[0]}?"
    return "docs/config.md lists every Section.field"


def parse_gin(files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = (),
              base: str = "", fields: Mapping[str, Sequence[str]] | None = None) -> None:
    """``gin.parse_config_files_and_bindings`` with one-line errors: a missing file, a syntax error (with file and
    line), an unknown configurable or parameter (with the binding, and with ``fields``, each field's name -> the
    configurables that have it, what was meant). A relative file is looked up in the working directory, then under
    each of ``search_paths``, which gin's ``include`` then also searches. ``base``: gin text (a run's own
    ``Config.to_gin()``) parsed first, under the files and bindings."""
    import gin

    for path in search_paths:
        add_gin_search_path(path)

    if base:
        gin.parse_config(base)
    resolved = []
    for file in files:  # found here so gin need not log each miss
        found = [p for p in (os.path.join(root, file) for root in ("", *search_paths)) if os.path.isfile(p)]
        if not found:
            raise FileNotFoundError(f"no such gin file: {file}; check the --gin_file path")
        resolved.append(os.path.abspath(found[0]))
    for source in [*resolved, None]:  # one at a time, so that a syntax error can name its file
        try:
            with _quiet_absl():  # gin logs an error for every search path an `include` is not found under
                gin.parse_config_file(source) if source is not None else gin.parse_config(list(bindings))
        except (SyntaxError, tokenize.TokenError) as e:
            where = _where(e, source)
            text = getattr(e, "text", None) or ""
            if isinstance(e, SyntaxError) and "malformed node or string" in str(e.msg) and "=" in text:
                name, value = (part.strip() for part in text.split("=", 1))
                raise ValueError(f"malformed gin config{where}: {value} is not a Python literal; text needs quotes, "
                                 f"e.g. {name} = {value!r}") from None
            included = re.search(r"^\('([^']*)', \((\d+), \d+\)\)\s+In file \"(.*)\", line (\d+)\s+(include .*)",
                                 str(e), re.S)
            if included:  # a tokenizer error inside an included file: gin names only the include statement
                msg, line, file, include_line, include = included.groups()
                raise ValueError(f"malformed gin config in the file `{include.strip()}` ({file} line {include_line}) "
                                 f"includes, at its line {line}: {msg}; close every bracket and quote") from None
            raise ValueError(f"malformed gin config{where}: {_first_line(e)}; each binding is "
                             "'Configurable.parameter = python_literal'") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{source or 'the --gin_param bindings'} (or a file it includes) is not UTF-8 text "
                             f"({e.reason} at byte {e.start}); save it as UTF-8") from None
        except ImportError as e:
            module = e.name or next(iter(re.findall(r"No module named '([^']+)'", str(e))), "?")
            raise ValueError(f"gin `import {module}`{_gin_location(e, source)}: no such module; install it or drop "
                             "the import") from None
        except OSError as e:  # an `include` that no search path holds
            first = str(e).splitlines()[0].rstrip(".")
            raise FileNotFoundError(f"gin include{_gin_location(e, source)}: {first}; fix the include path (relative "
                                    "to the working directory, or rlvjax's own, e.g. 'rlvjax/configs/base.gin')") \
                from None
        except TypeError as e:  # gin looked the include up as a package and found a folder that is none
            if "include" not in str(e):
                raise
            raise FileNotFoundError(f"gin include{_gin_location(e, source)}: a folder of that name in the working "
                                    "directory shadows it; include rlvjax's configs as 'rlvjax/configs/...', or run "
                                    "from another directory") from None
        except ValueError as e:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            lines[0], where = lines[0].rstrip("."), " ".join(lines[1:3])
            hint = (_binding_hint(lines[0], fields or {})
                    if "No configurable matching" in lines[0] or "doesn't have a parameter" in lines[0] else
                    "fix the binding")
            raise ValueError(f"{lines[0]} ({where}); {hint}" if where else f"{lines[0]}; {hint}") from None
    # gin's listing of every binding writes a scoped one as `scope/Configurable.parameter = ...`.
    scoped = re.search(r"^([\w.]+)/([\w.]+) =", gin.config_str(), re.M)
    if scoped:  # rlvjax builds each configurable once, unscoped: the binding would be ignored
        raise ValueError(f"gin binding {scoped.group(1)}/{scoped.group(2)} has a scope, which rlvjax does not use (it "
                         f"would be ignored); drop the '{scoped.group(1)}/'")
    try:
        gin.finalize()
    except ValueError as e:  # gin's message for an unbound %macro holds the whole config text
        unbound = re.match(r"No bindings specified for '([^']+)/gin.macro'", str(e))
        if not unbound:
            raise
        raise ValueError(f"gin macro %{unbound.group(1)} is used but never bound; bind it (e.g. "
                         f"{unbound.group(1)} = 8) or write the value in its place") from None
    if fields:  # a field misspelt without its section (`lamda_verify = 0.5`) is a macro nothing uses, binding nothing
        # (used as written counts too: a file's macro whose one use a --gin_param overrides is legitimate)
        parsed = gin.config_str()
        texts = [base, *bindings, parsed]
        for path in resolved:
            with open(path, encoding="utf-8") as file:
                texts.append(file.read())
        used = {name for text in texts for name in re.findall(r"%(\w+)", text)}
        for name in re.findall(r"^(\w+) = ", parsed, re.M):
            if name not in used and name not in fields and (
                    close := difflib.get_close_matches(name, list(fields), n=1, cutoff=0.85)):
                raise ValueError(f"gin binding `{name} = ...` binds no config field (gin reads it as a macro that "
                                 f"nothing uses); did you mean {close[0]}, written as {fields[close[0]][0]}."
                                 f"{close[0]}?")


def _gin_location(error: BaseException, source: str | None) -> str:
    """" in FILE line N" from the "In file ..., line N" gin appends to an error raised while parsing a file."""
    found = re.search(r'In file "(.*)", line (\d+)', str(error))
    if found:
        return f" in {found.group(1)} line {found.group(2)}"
    return f" in {source}" if source else " in the --gin_param bindings"


@contextlib.contextmanager
def _quiet_absl():
    from absl import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.FATAL)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def _where(error: BaseException, source: str | None) -> str:
    filename, lineno = getattr(error, "filename", None) or source, getattr(error, "lineno", None)
    if isinstance(error, tokenize.TokenError) and len(error.args) > 1:
        lineno = error.args[1][0]
    place = f" in {filename}" if filename else " in the --gin_param bindings"
    return f"{place} line {lineno}" if lineno else place


def _first_line(error: BaseException) -> str:
    message = error.msg if isinstance(error, SyntaxError) and error.msg else str(error.args[0] if error.args else error)
    return message.strip().splitlines()[0].rstrip(".") if message.strip() else type(error).__name__
