"""Equivalence grading of final answers (``rewards.answers`` extracts them): the reward `r_i` of RL^V.

Equivalence is decided by math-verify (sympy), which can hang or blow up memory on adversarial model output
(`9^9^9^9`, `{{{{...`) and whose own SIGALRM timeouts fail off the main thread. So every comparison runs in a
worker *subprocess* under our own wall-clock limit: a worker past its deadline is killed and replaced, and the
item counts as incorrect (and as a timeout in `GradeStats`). Nothing here raises on bad input or hangs.

Where math-verify's defaults grade a wrong answer right, rlvjax decides: two numbers must also agree within a relative
1e-4, alone or inside an equation, a percentage, a tuple, an interval, a set or a matrix (`grader_worker._close`:
math-verify rounds floats to 6 decimals, so ".0000670" was ".0000672"), and a numeral
in a base is compared by its sign, digits and base (`answers.same_by_key`: "52_9", "52_{(9)}" and "-52_8" are not
"52_8"; "52" is, as math-verify has it). Where it grades a right answer wrong: "1e-05" is 0.00001 (not 1 * e - 5),
a word is one in any case ("East" is "\\text{east}"), a worked "6*7 = 42" is 42, an inequality is its interval
("x > 2" for a gold (2, \\infty), which math-verify took only the other way round; `answers._plain_forms`,
`grader_worker._value`). Plain numbers (decimals, ratios, surds) are decided in the parent where math-verify's
verdict is certain: equal rationals, or values further apart than the 1e-4 above (`answers.same_by_key`).

Workers are plain subprocesses running ``grader_worker.py`` as a script, talking JSON lines over stdin/stdout, rather
than multiprocessing children: a spawned multiprocessing child re-imports the `rlvjax` package (hence JAX) and the
parent's `__main__`, which would make replacing a killed worker cost seconds instead of ~1 s.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import wait as wait_readable

import numpy as np

from rlvjax.rewards.answers import (  # noqa: F401  (extract_answer, normalize_answer, MAX_ANSWER_CHARS: re-exported)
    MAX_ANSWER_CHARS,
    as_answer,
    braces_balanced,
    extract_answer,
    normalize_answer,
    same_by_key,
)

DEFAULT_TIMEOUT_S = 5.0
WORKER_MEMORY_MB = 4096  # address-space cap per worker: 10^{10^{10}} raises MemoryError instead of eating the host
WORKER_START_TIMEOUT_S = 120.0
WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grader_worker.py")

# ---------------------------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class GradeStats:
    """Counts for one grading call (or, in `Grader.stats`, all calls so far). Items counted in `no_answer`,
    `unparsed`, `timeouts` or `errors` are graded incorrect; log these next to the rewards."""

    total: int = 0
    fast_path: int = 0  # normalised strings equal, or both whole numbers: decided without sympy
    no_answer: int = 0  # no final answer extractable (or longer than MAX_ANSWER_CHARS)
    unparsed: int = 0  # unbalanced braces, or math-verify found no expression in the prediction or the gold
    timeouts: int = 0  # worker exceeded the wall-clock limit and was killed
    errors: int = 0  # exception inside math-verify/sympy, or the worker died

    def add(self, other: GradeStats) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class _Worker:
    def __init__(self, memory_mb: int):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        # -P: do not put rlvjax/rewards/ on sys.path, or math.py there would shadow the stdlib `math` module.
        self.proc = subprocess.Popen(
            [sys.executable, "-P", WORKER_SCRIPT, "--grader-worker", str(memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True,  # a terminal Ctrl-C interrupts the parent, not half-finished grades
        )
        self.ready = False
        self.deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        self.job_id: int | None = None

    def send(self, job_id: int, pred: str, gold: str, symmetric: bool, timeout_s: float) -> bool:
        job = {"id": job_id, "pred": pred, "gold": gold, "symmetric": symmetric, "backstop_s": int(timeout_s) + 10}
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            return False
        self.job_id, self.deadline = job_id, time.monotonic() + timeout_s
        return True

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:  # a dead worker's pipe: what was left in its buffer goes nowhere
                pass


class Grader:
    """A persistent pool of grading workers. Thread-safe: concurrent calls are served one batch at a time.

    Use as a context manager or call close(); the module-level functions share one lazily created Grader
    that is closed at interpreter exit.
    """

    def __init__(self, num_workers: int | None = None, memory_mb: int = WORKER_MEMORY_MB, fast_path: bool = True):
        self.fast_path = fast_path  # False sends every pair to math-verify (for testing the slow path)
        self.num_workers = max(1, num_workers or min(8, os.cpu_count() or 1))
        self.memory_mb = memory_mb
        self.stats = GradeStats()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def grade(self, texts, golds, *, timeout_s: float = DEFAULT_TIMEOUT_S,
              answers: bool = False) -> tuple[np.ndarray, GradeStats]:
        """r_i for each (completion or bare answer, gold answer) pair, and this call's GradeStats. ``answers``:
        ``texts`` are final answers already extracted (``extract_answer``), graded as they are."""
        return self._run(texts, golds, symmetric=False, timeout_s=timeout_s, completions=not answers,
                         stated=answers)[:2]

    def equivalent(self, lefts, rights, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[np.ndarray, GradeStats]:
        """Symmetric equivalence of answer pairs (for grouping votes): either direction of verify suffices. Both
        sides are final answers already extracted, compared as they are, as ``grade(answers=True)`` grades them."""
        return self._run(lefts, rights, symmetric=True, timeout_s=timeout_s, stated=True)[:2]

    def equivalent_or_failed(self, lefts, rights, *,
                             timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[np.ndarray, np.ndarray]:
        """``equivalent``'s verdicts, and which of the checks failed (timed out, or killed their worker): a caller
        comparing one answer with many can stop comparing one that hangs math-verify."""
        same, _, failed = self._run(lefts, rights, symmetric=True, timeout_s=timeout_s, stated=True)
        return same, failed

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        with self._lock:
            self._kill_all()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, preds, golds, *, symmetric: bool, timeout_s: float, completions: bool = False,
             stated: bool = False) -> tuple[np.ndarray, GradeStats, np.ndarray]:
        preds, golds = list(preds), list(golds)
        if len(preds) != len(golds):
            raise ValueError(f"{len(preds)} predictions but {len(golds)} golds")
        out, failed = np.zeros(len(preds), dtype=bool), np.zeros(len(preds), dtype=bool)
        stats = GradeStats(total=len(preds))
        jobs = []
        for i, (p, g) in enumerate(zip(preds, golds)):
            p, g = as_answer(p, completion=completions, stated=stated), as_answer(g, stated=stated and symmetric)
            if p is None or g is None:
                stats.no_answer += 1
            elif self.fast_path and (same := same_by_key(p, g)) is not None:
                out[i] = same
                stats.fast_path += 1
            elif not (braces_balanced(p) and braces_balanced(g)):
                stats.unparsed += 1
            else:
                jobs.append((i, p, g))
        with self._lock:
            try:
                if jobs:
                    self._dispatch(jobs, symmetric, timeout_s, out, stats, failed)
            except BaseException:  # e.g. KeyboardInterrupt: workers may hold stale jobs, never reuse them
                self._kill_all()
                raise
            self.stats.add(stats)
        return out, stats, failed

    def _dispatch(self, jobs, symmetric, timeout_s, out, stats, failed) -> None:
        queue, resent = collections.deque(jobs), set()
        while True:
            busy = [w for w in self._workers if w.job_id is not None]
            if not queue and not busy:
                return
            while len(self._workers) < min(self.num_workers, len(queue) + len(busy)):
                self._workers.append(_Worker(self.memory_mb))
            for w in [w for w in self._workers if w.ready and w.job_id is None]:
                if not queue:
                    break
                job = queue.popleft()
                if not w.send(*job, symmetric, timeout_s):  # the worker died while idle: not the item's doing
                    self._replace(w)
                    if job[0] in resent:
                        stats.errors += 1
                        failed[job[0]] = True
                    else:  # once more, on a fresh worker
                        resent.add(job[0])
                        queue.appendleft(job)
            waiting = [w for w in self._workers if not w.ready or w.job_id is not None]
            if not waiting:
                continue
            wait_s = max(0.0, min(w.deadline for w in waiting) - time.monotonic())
            readable = wait_readable([w.proc.stdout for w in waiting], timeout=wait_s)
            for w in [w for w in waiting if w.proc.stdout in readable]:
                self._receive(w, out, stats, failed)
            now = time.monotonic()
            for w in [w for w in waiting if w in self._workers and w.deadline <= now and w.job_id is not None]:
                stats.timeouts += 1
                failed[w.job_id] = True
                self._replace(w)
            if any(not w.ready and w.deadline <= now for w in self._workers):
                raise RuntimeError(f"grading worker did not start within {WORKER_START_TIMEOUT_S} s")

    def _receive(self, w: _Worker, out: np.ndarray, stats: GradeStats, failed: np.ndarray) -> None:
        line = w.proc.stdout.readline()
        try:
            msg = json.loads(line) if line else None
        except ValueError:  # a garbled reply: treat the worker as broken (counted below)
            msg = None
        if msg is None:
            if not w.ready:
                raise RuntimeError("grading worker exited during start-up (is math-verify installed?)")
            stats.errors += 1  # died mid-item: segfault, OOM kill, ...
            failed[w.job_id] = True
            self._replace(w)
            return
        if not w.ready:
            w.ready = True
            return
        out[msg["id"]] = msg["ok"]
        if msg["note"] == "unparsed":
            stats.unparsed += 1
        elif msg["note"] is not None:
            stats.errors += 1
        w.job_id = None

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._workers.remove(w)

    def _kill_all(self) -> None:
        for w in self._workers:
            w.kill()
        self._workers.clear()


_default: Grader | None = None
_default_lock = threading.Lock()


def default_grader(num_workers: int | None = None) -> Grader:
    """The shared Grader; recreated if a different num_workers is asked for."""
    global _default
    with _default_lock:
        if _default is None or (num_workers is not None and num_workers != _default.num_workers):
            if _default is not None:
                _default.close()
            _default = Grader(num_workers)
        return _default


@atexit.register
def _close_default() -> None:
    if _default is not None:
        _default.close()


def grading_counts() -> dict[str, int]:
    """What the shared grader has counted so far (``GradeStats``' fields): a run logs each step's difference."""
    return dataclasses.asdict(default_grader().stats)


def grade_batch_with_stats(texts, golds, *, timeout_s=DEFAULT_TIMEOUT_S, num_workers=None):
    """(bool[len(texts)], GradeStats): is each completion's final answer equivalent to its gold answer."""
    return default_grader(num_workers).grade(texts, golds, timeout_s=timeout_s)


def grade_batch(texts, golds, *, timeout_s: float = DEFAULT_TIMEOUT_S, num_workers: int | None = None) -> np.ndarray:
    """bool[len(texts)]; per-call counts of timeouts/errors via grade_batch_with_stats or default_grader().stats."""
    return grade_batch_with_stats(texts, golds, timeout_s=timeout_s, num_workers=num_workers)[0]


def grade_completions(texts, golds, *, timeout_s: float = DEFAULT_TIMEOUT_S, num_workers: int | None = None):
    """RL rewards: r_i = 1 only when completion i states a final answer (its last box and the boxes listed with it,
    or "The answer is" when it has none) equivalent to the gold; a completion stating none scores 0 even if its
    text contains the value.
    Returns ``(bool[len(texts)], answers)``."""
    answers = [extract_answer(t) for t in texts]
    stated = np.asarray([a is not None for a in answers])
    graded = default_grader(num_workers).grade([a if a is not None else "" for a in answers], golds,
                                               timeout_s=timeout_s, answers=True)[0]
    return graded & stated, answers


def is_correct(text_or_answer: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """One reward: a completion (its final answer: ``extract_answer``) or a bare answer, against the gold answer."""
    return bool(grade_batch([text_or_answer], [gold], timeout_s=timeout_s)[0])


def equivalent_batch(lefts, rights, *, timeout_s=DEFAULT_TIMEOUT_S, num_workers=None) -> np.ndarray:
    return default_grader(num_workers).equivalent(lefts, rights, timeout_s=timeout_s)[0]


def answers_equivalent(a: str, b: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two answers are the same mathematical object (symmetric); used to group votes."""
    return bool(equivalent_batch([a], [b], timeout_s=timeout_s)[0])
