"""Final-answer extraction and equivalence grading: the reward `r_i` of RL^V.

Equivalence is decided by math-verify (sympy), which can hang or blow up memory on adversarial model output
(`9^9^9^9`, `{{{{...`) and whose own SIGALRM timeouts fail off the main thread. So every comparison runs in a
worker *subprocess* under our own wall-clock limit: a worker past its deadline is killed and replaced, and the
item counts as incorrect (and as a timeout in `GradeStats`). Nothing here raises on bad input or hangs.

Workers are plain subprocesses running ``grader_worker.py`` as a script, talking JSON lines over stdin/stdout, rather
than multiprocessing children: a spawned multiprocessing child re-imports the `rlvjax` package (hence JAX) and the
parent's `__main__`, which would make replacing a killed worker cost seconds instead of ~1 s.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import json
import numbers
import os
import re
import subprocess
import sys
import threading
import time
from multiprocessing.connection import wait as wait_readable

import numpy as np

DEFAULT_TIMEOUT_S = 5.0
MAX_ANSWER_CHARS = 1000  # longer "answers" are not answers; grading them only invites pathological parses
WORKER_MEMORY_MB = 4096  # address-space cap per worker: 10^{10^{10}} raises MemoryError instead of eating the host
WORKER_START_TIMEOUT_S = 120.0
WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grader_worker.py")

# ---------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_PHRASE = re.compile(r"(?:final\s+)?answer\s+is\s*:?\s*", re.IGNORECASE)


def _balanced_end(text: str, open_pos: int) -> int | None:
    """Index of the `}` closing the `{` at open_pos (escaped `\\{` `\\}` do not count), or None if unbalanced."""
    depth = 0
    i = open_pos
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _braces_balanced(text: str) -> bool:
    """Unbalanced braces are never valid LaTeX, and `{{{{...` sends the parser into seconds of backtracking."""
    depth = 0
    for m in re.finditer(r"\\.|[{}]", text):
        depth += {"{": 1, "}": -1}.get(m.group(), 0)
        if depth < 0:
            return False
    return depth == 0


def _unwrap_box(content: str) -> str:
    """`\\boxed{\\boxed{4}}` -> `4`. Brace pairs are matched in one pass and the layers peeled by index: rescanning
    and slicing per layer was quadratic, and nested boxes held the parent 3 s at 20 kB of model output, over a
    minute at 100 kB."""
    closing, opened = {}, []
    for m in re.finditer(r"\\.|[{}]", content):
        if m.group() == "{":
            opened.append(m.start())
        elif m.group() == "}" and opened:
            closing[opened.pop()] = m.start()
    start, end = 0, len(content)
    while (m := _BOX_START.match(content, start, end)) and content.startswith("{", m.end(), end):
        if closing.get(m.end()) != end - 1:
            break
        start, end = m.end() + 1, end - 1
        while start < end and content[start].isspace():
            start += 1
        while end > start and content[end - 1].isspace():
            end -= 1
    return content[start:end]


_BARE_TOKEN = re.compile(r"\s*([^\s${}]+)")
_SPACES = re.compile(r"\s*")


def _boxed_contents(text: str) -> list[str | None]:
    """Contents of every top-level `\\boxed{..}` / `\\fbox{..}` / `\\boxed 5`, in order; None for a box that is
    empty or never closed (a truncated completion), so that it still counts as the last box."""
    found, pos = [], 0
    while (m := _BOX_START.search(text, pos)) is not None:
        i = m.end()
        brace = _SPACES.match(text, i).end()  # TeX reads "\boxed {5}" as "\boxed{5}"
        if text.startswith("{", brace):
            i = brace
            end = _balanced_end(text, i)
            found.append(None if end is None else _unwrap_box(text[i + 1 : end].strip()) or None)
            pos = len(text) if end is None else end + 1
        else:
            token = _BARE_TOKEN.match(text, i)  # in place: slicing text[i:] per box was quadratic
            found.append(token.group(1).rstrip(".") or None if token else None)
            pos = i
    return found


def _strip_math_delimiters(s: str) -> str:
    s = s.strip().rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            return s[len(left) : len(s) - len(right)].strip()
    return s


def _answer_phrase(text: str) -> str | None:
    """X from the last "The (final) answer is X" (Minerva style: "... is $X$. I hope it is correct.")."""
    matches = list(_ANSWER_PHRASE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].split("\n", 1)[0].strip()
    if rest.startswith("$"):
        inline = re.match(r"\$\$(.+?)\$\$|\$((?:\\\$|[^$])+)\$", rest)  # "\$" inside: a dollar sign
        rest = next(g for g in inline.groups() if g is not None) if inline else rest
    else:
        rest = re.split(r"\.\s", rest, maxsplit=1)[0]
    rest = _strip_math_delimiters(rest)
    return rest or None


def extract_answer(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox`, `\\boxed 5`); only when there is no box at all, the
    trailing "The answer is X" fallback. None when the completion states no final answer."""
    if not isinstance(text, str):
        return None
    boxes = _boxed_contents(text)
    if boxes:
        return boxes[-1]
    return _answer_phrase(text)


def _as_answer(text_or_answer, *, completion: bool = False) -> str | None:
    """A completion is reduced to its final answer; a bare answer ("1/2", or a number) is used as it is. Given
    ``completion``, text that states no final answer and reads as prose ("Let $a = 3$.") is no answer, not an
    expression to fish one from (a gold, or an answer already extracted, is never prose)."""
    if isinstance(text_or_answer, numbers.Real) and not isinstance(text_or_answer, bool):
        text_or_answer = str(text_or_answer)  # an int or float gold column
    if not isinstance(text_or_answer, str):
        return None
    extracted = extract_answer(text_or_answer)
    if extracted is None and not _BOX_START.search(text_or_answer):
        bare = _strip_math_delimiters(text_or_answer)
        extracted = bare if bare and not (completion and _is_prose(bare)) else None
    if extracted is None or len(extracted) > MAX_ANSWER_CHARS:
        return None
    return unicode_to_latex(_TRAILING_PERIOD.sub("", extracted.strip()))


_TRAILING_PERIOD = re.compile(r"(?<!\.)\.$")  # "\boxed{\sqrt{2}.}": the sentence's period, not an ellipsis
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")  # a word, not a \command's name
_TEXT_ARGUMENT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{[^{}]*\}")
_SENTENCE_BREAK = re.compile(r"[.?!]\s+\S")


def _is_prose(text: str) -> bool:
    """Inline math inside text, a sentence break, or five or more plain words outside ``\text{..}``: a sentence,
    not an answer ("all real numbers" is an answer)."""
    return ("$" in text.replace("\\$", "") or _SENTENCE_BREAK.search(text) is not None
            or len(_WORD.findall(_TEXT_ARGUMENT.sub("", text))) >= 5)


# Unicode math as LaTeX, so that a gold "½" or "2√3" grades like "\frac{1}{2}" or "2\sqrt{3}" (math-verify parses
# LaTeX, not these code points).
_UNICODE_LATEX = {"½": r"\frac{1}{2}", "⅓": r"\frac{1}{3}", "⅔": r"\frac{2}{3}", "¼": r"\frac{1}{4}",
                  "¾": r"\frac{3}{4}", "⅕": r"\frac{1}{5}", "⅛": r"\frac{1}{8}", "∞": r"\infty", "π": r"\pi",
                  "−": "-", "×": r"\times", "÷": r"\div", "·": r"\cdot", "≤": r"\le", "≥": r"\ge", "≠": r"\ne",
                  "°": r"^\circ"}
_SQRT = re.compile(r"√\s*(\d+(?:\.\d+)?|[A-Za-z]|\{[^{}]*\}|\([^()]*\))")


def unicode_to_latex(answer: str) -> str:
    """``answer`` with Unicode fractions, roots, infinity, pi, minus and relation signs written as LaTeX."""
    if answer.isascii():
        return answer
    answer = _SQRT.sub(lambda m: r"\sqrt{" + m.group(1).strip("{}()") + "}", answer)
    return "".join(_UNICODE_LATEX.get(c, c) for c in answer)


_WHOLE_NUMBER = re.compile(r"[+-]?\d+")


def _same_by_key(a: str, b: str) -> bool | None:
    """Decided without math-verify: True for equal normalised keys, the numeric comparison when both keys are
    whole numbers ("7" vs "07" vs "5"); None when math-verify must decide."""
    ka, kb = normalize_answer(a), normalize_answer(b)
    if ka == kb:
        return True
    if _WHOLE_NUMBER.fullmatch(ka) and _WHOLE_NUMBER.fullmatch(kb):
        return int(ka) == int(kb)
    return None


def normalize_answer(answer: str) -> str:
    """Cheap canonical key: spacing, `\\left`/`\\right`, `\\dfrac`, `$` removed. Equal keys are equivalent answers
    (no sympy needed); unequal keys may still be equivalent. Also the first grouping key for voting."""
    s = _strip_math_delimiters(answer)
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\[,;:! ]", "", s)
    s = re.sub(r"(?<=\d)\s+(?=\d)", "\u2423", s)  # "2 3" is two numbers, not 23: math-verify decides
    return re.sub(r"\s+", "", s)


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
        return self._run(texts, golds, symmetric=False, timeout_s=timeout_s, completions=not answers)

    def equivalent(self, lefts, rights, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[np.ndarray, GradeStats]:
        """Symmetric equivalence of answer pairs (for grouping votes): either direction of verify suffices."""
        return self._run(lefts, rights, symmetric=True, timeout_s=timeout_s)

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        with self._lock:
            self._kill_all()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, preds, golds, *, symmetric: bool, timeout_s: float,
             completions: bool = False) -> tuple[np.ndarray, GradeStats]:
        preds, golds = list(preds), list(golds)
        if len(preds) != len(golds):
            raise ValueError(f"{len(preds)} predictions but {len(golds)} golds")
        out = np.zeros(len(preds), dtype=bool)
        stats = GradeStats(total=len(preds))
        jobs = []
        for i, (p, g) in enumerate(zip(preds, golds)):
            p, g = _as_answer(p, completion=completions), _as_answer(g)
            if p is None or g is None:
                stats.no_answer += 1
            elif self.fast_path and (same := _same_by_key(p, g)) is not None:
                out[i] = same
                stats.fast_path += 1
            elif not (_braces_balanced(p) and _braces_balanced(g)):
                stats.unparsed += 1
            else:
                jobs.append((i, p, g))
        with self._lock:
            try:
                if jobs:
                    self._dispatch(jobs, symmetric, timeout_s, out, stats)
            except BaseException:  # e.g. KeyboardInterrupt: workers may hold stale jobs, never reuse them
                self._kill_all()
                raise
            self.stats.add(stats)
        return out, stats

    def _dispatch(self, jobs, symmetric, timeout_s, out, stats) -> None:
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
                    else:  # once more, on a fresh worker
                        resent.add(job[0])
                        queue.appendleft(job)
            waiting = [w for w in self._workers if not w.ready or w.job_id is not None]
            if not waiting:
                continue
            wait_s = max(0.0, min(w.deadline for w in waiting) - time.monotonic())
            readable = wait_readable([w.proc.stdout for w in waiting], timeout=wait_s)
            for w in [w for w in waiting if w.proc.stdout in readable]:
                self._receive(w, out, stats)
            now = time.monotonic()
            for w in [w for w in waiting if w in self._workers and w.deadline <= now and w.job_id is not None]:
                stats.timeouts += 1
                self._replace(w)
            if any(not w.ready and w.deadline <= now for w in self._workers):
                raise RuntimeError(f"grading worker did not start within {WORKER_START_TIMEOUT_S} s")

    def _receive(self, w: _Worker, out: np.ndarray, stats: GradeStats) -> None:
        line = w.proc.stdout.readline()
        try:
            msg = json.loads(line) if line else None
        except ValueError:  # a garbled reply: treat the worker as broken (counted below)
            msg = None
        if msg is None:
            if not w.ready:
                raise RuntimeError("grading worker exited during start-up (is math-verify installed?)")
            stats.errors += 1  # died mid-item: segfault, OOM kill, ...
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


def grade_batch_with_stats(texts, golds, *, timeout_s=DEFAULT_TIMEOUT_S, num_workers=None):
    """(bool[len(texts)], GradeStats): is each completion's final answer equivalent to its gold answer."""
    return default_grader(num_workers).grade(texts, golds, timeout_s=timeout_s)


def grade_batch(texts, golds, *, timeout_s: float = DEFAULT_TIMEOUT_S, num_workers: int | None = None) -> np.ndarray:
    """bool[len(texts)]; per-call counts of timeouts/errors via grade_batch_with_stats or default_grader().stats."""
    return grade_batch_with_stats(texts, golds, timeout_s=timeout_s, num_workers=num_workers)[0]


def grade_completions(texts, golds, *, timeout_s: float = DEFAULT_TIMEOUT_S, num_workers: int | None = None):
    """RL rewards: r_i = 1 only when completion i states a final answer (its last box, or "The answer is" when
    it has none) equivalent to the gold; a completion stating none scores 0 even if its text contains the value.
    Returns ``(bool[len(texts)], answers)``."""
    answers = [extract_answer(t) for t in texts]
    stated = np.asarray([a is not None for a in answers])
    graded = default_grader(num_workers).grade([a if a is not None else "" for a in answers], golds,
                                               timeout_s=timeout_s, answers=True)[0]
    return graded & stated, answers


def is_correct(text_or_answer: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """One reward: a completion (its last box is graded) or a bare answer, against the gold answer."""
    return bool(grade_batch([text_or_answer], [gold], timeout_s=timeout_s)[0])


def equivalent_batch(lefts, rights, *, timeout_s=DEFAULT_TIMEOUT_S, num_workers=None) -> np.ndarray:
    return default_grader(num_workers).equivalent(lefts, rights, timeout_s=timeout_s)[0]


def answers_equivalent(a: str, b: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two answers are the same mathematical object (symmetric); used to group votes."""
    return bool(equivalent_batch([a], [b], timeout_s=timeout_s)[0])
