"""Fuzzing the grader: 10,000 seeded LaTeX-ish strings through one worker pool under a 1 s wall-clock limit.

Reliability, not accuracy: every item gets a grade, no item outlives the limit by more than the pool's reaction
time, known-equivalent controls mixed into the stream still grade correct after the kills, and closing the pool
leaves no worker process behind.
"""

import functools
import os
import random
import time

import numpy as np
import psutil

from rlvjax.rewards import math as rm

SEED = 20240607
NUM_ITEMS = 10_000
NUM_WORKERS = 2
TIMEOUT_S = 1.0
KILL_MARGIN_S = 0.5  # deadline -> kill: one turn of the pool's select loop on a busy machine
# Parent-side extraction has no wall clock of its own, so it must stay linear: on the 100,000-character texts a
# quadratic pattern takes minutes; the slowest fuzz text took 0.38 s with both cores busy (0.25 s failed there).
EXTRACT_LIMIT_S = 2.0
CHUNK = 1000  # several grade calls on one pool: a batch after the kills must reuse it cleanly
# Whole-run bound beyond the timeouts themselves: 53-72 s measured on 2 cores shared with other jobs (load 3-5),
# and 91 s in a full suite run on a day the host ran ~25% slow (2026-12-02), so 150 s flags a stall (the quadratic
# parent-side hang this test found took minutes), not a busy or slow machine.
GRADING_BUDGET_S = 150.0
CONTROL_EVERY = 40
HAZARD_EVERY = 800  # each of the 12 HAZARDS once: ~1 s each (the limit) plus a worker restart

GOLDS = ["5", "\\frac{1}{2}", "0.5", "x^2+1", "(1,2)", "[0,\\infty)", "\\{1,2\\}", "\\sqrt{2}", "2\\pi", "-3",
         "\\text{Evelyn}", "10^{9}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "x=5", "30^\\circ"]
# Equivalent under math-verify but not under normalize_answer, so each one really goes through a worker.
CONTROLS_EQUIVALENT = [("0.5", "\\frac{1}{2}"), ("\\sqrt{12}", "2\\sqrt{3}"), ("2^{10}", "1024"), ("5", "x = 5"),
                       ("1+x^2", "x^2+1"), ("\\{2,1\\}", "\\{1,2\\}"), ("50\\%", "\\frac12"), ("(1, 2]", "(1,2]")]
CONTROLS_WRONG = [("3", "4"), ("\\frac{1}{3}", "\\frac{1}{2}"), ("(2,1)", "(1,2)"), ("x^2-1", "x^2+1")]
# Strings that can make sympy compute for minutes or exhaust memory: each may cost one timeout, nothing more.
HAZARDS = ["9^{9^{9^{9}}}", "9^9^9^9", "10^{10^{9}}", "10^(10^9)", "(10^{100})!", "2^{2^{2^{2^{2^{2}}}}}",
           "\\sum_{n=1}^{10^{10}} n^n", "1e999999999", "10^{10^{10}}-10^{10^{10}}", "(9^{9^{9}})!",
           "10^{123456789012}", "(123456789012345)!"]
UNICODE = "½√π∞−×÷≤≥≠∈∪∩αβγθλΣ∫∂∇°′″·…‰€£¥１２３ａｂｃ\u200b\u200e\u202e\u0301\u0000\t\r\n😀🧮ℵℝℤ𝔽𝑥"


# ------------------------------------------------------------------------------------------------ generator


def _number(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randint(-20, 20))
    if kind == 1:
        return str(rng.randint(0, 10**rng.randint(3, 40)))
    if kind == 2:
        return f"{rng.uniform(-100, 100):.{rng.randint(1, 6)}f}"
    if kind == 3:
        return "1" + "".join(rng.choices("0123456789", k=rng.randint(100, 900)))  # < MAX_ANSWER_CHARS
    if kind == 4:
        return rng.choice(["1,000", "3.14", ".5", "5.", "1e-3", "-0", "007", "1/2", "0.333..."])
    return rng.choice(["x", "y", "n", "\\pi", "e", "i", "\\infty", "\\theta", "a_1", "\\alpha"])


def _expr(rng, depth):
    """A well-formed expression; exponents and factorials get only small operands, so sympy stays fast (the
    slow cases are HAZARDS, injected at a known rate)."""
    if depth <= 0:
        return _number(rng)
    a, b = _expr(rng, depth - 1), _expr(rng, depth - 1)
    small = lambda: rng.choice(["2", "3", "n", "x", "\\frac{1}{2}", "-1"])  # noqa: E731
    return rng.choice([
        lambda: f"{a}+{b}", lambda: f"{a}-{b}", lambda: f"{a}\\cdot {b}", lambda: f"{a}\\times{b}",
        lambda: f"{a}/{b}", lambda: f"\\frac{{{a}}}{{{b}}}", lambda: f"\\dfrac{a[:1]}{b[:1]}", lambda: f"\\sqrt{{{a}}}",
        lambda: f"\\sqrt[{small()}]{{{a}}}", lambda: f"{{{a}}}^{{{small()}}}", lambda: f"{a}^{small()}",
        lambda: f"{a}_{{{b}}}", lambda: f"{{{a}}}", lambda: f"\\left({a}\\right)", lambda: f"({a})",
        lambda: f"({rng.randint(0, 12)})!", lambda: f"\\boxed{{{a}}}", lambda: f"\\text{{{a}}}",
        lambda: f"\\begin{{pmatrix}}{a}&{b}\\\\{b}&{a}\\end{{pmatrix}}",
        lambda: f"\\begin{{bmatrix}}{a}\\\\{b}\\end{{bmatrix}}",
        lambda: f"[{a},{b})", lambda: f"\\{{{a},{b}\\}}", lambda: f"({a}, {b}, {a})", lambda: f"x={a}",
        lambda: f"{a}\\%", lambda: f"{a}^\\circ", lambda: f"\\sin({a})", lambda: f"\\log_{{{small()}}}{a}",
        lambda: f"{a}\\le {b}", lambda: f"\\overline{{{a}}}", lambda: f"\\mathbf{{{a}}}",
    ])()


def _mutate(rng, s):
    """Malformed LaTeX: broken braces, unknown commands, truncation, stray alignment and math characters."""
    for _ in range(rng.randint(1, 4)):
        i = rng.randint(0, len(s))
        s = rng.choice([
            lambda: s[:i] + rng.choice("{}[]()^_&$\\%#~") + s[i:],
            lambda: s[:i] + s[i + 1:],
            lambda: s[:i],
            lambda: s[:i] + rng.choice(["\\notacommand", "\\frac", "\\sqrt", "\\left(", "\\right)", "\\begin{matrix}",
                                        "\\end{pmatrix}", "\\\\", "\\boxed{", "\\", "^^", "__", "\\text{"]) + s[i:],
            lambda: s[i:] + s[:i],
        ])()
    return s


def _unicode(rng):
    chars = [rng.choice(UNICODE) if rng.random() < 0.6 else chr(rng.randint(32, 0x2FFF))
             for _ in range(rng.randint(1, 40))]
    if rng.random() < 0.1:
        chars.append("\ud800")  # a lone surrogate: not encodable as UTF-8
    return "".join(chars)


def _huge_number(rng):
    """Long literals (50,000 digits end in the parent at MAX_ANSWER_CHARS); huge *computations* are HAZARDS."""
    digits = "".join(rng.choices("0123456789", k=rng.choice([50, 999, 50_000])))
    return rng.choice([
        lambda: "1" + digits, lambda: "-" + digits + "." + digits[:20], lambda: f"{digits[:2]}!",
        lambda: f"10^{{{digits[:2]}}}", lambda: f"1e{digits[:3]}", lambda: f"\\frac{{{digits[:900]}}}{{{digits[:50]}}}",
        lambda: f"{digits[:500]}\\times 10^{{-{digits[:3]}}}", lambda: f"{digits[:300]}^{{2}}",
    ])()


def _long(rng):
    n = rng.choice([2_000, 20_000, 100_000])
    return rng.choice([
        lambda: "{" * n, lambda: "}" * n + "{" * n, lambda: "\\boxed{" * (n // 7) + "1" + "}" * (n // 7),
        lambda: "\\sqrt{" * (n // 6) + "2" + "}" * (n // 6), lambda: "(" * n + "1", lambda: "\\boxed 1 " * (n // 9),
        lambda: "1" + "0" * 50_000, lambda: "9" * n, lambda: ("x+" * n) + "1", lambda: "The answer is " + "1." * n,
        lambda: "\\frac{" * (n // 6), lambda: "\\" * n, lambda: "\\boxed{" + "a" * n + "}", lambda: "$" * n,
        lambda: "final" + " " * n + "answer is 5", lambda: "\\left(" * (n // 6),
        # a policy repeating a token to the end: closers after a bare box, spacing between two boxes (both quadratic
        # in the parent until 2026-12-07: 2.9 s and 7.6 s at 40,000 and 16,000 characters)
        lambda: "\\boxed 5" + rng.choice(")]") * n, lambda: "\\boxed{1}," + " " * n + "!\\boxed{2}",
    ])()


# The answer as a model might emit it. `\\boxed X` without braces takes one token, so controls skip that form.
WRAPS = ["ANSWER", "\\boxed{ANSWER}", "so the answer is $\\boxed{ANSWER}$.", "The answer is ANSWER.", "$ANSWER$",
         "\\[ANSWER\\]", "Step 1: ANSWER\n\\boxed{ANSWER}", "\\fbox{ANSWER}",
         "Final Answer: The final answer is $ANSWER$. I hope it is correct.", "\\boxed ANSWER"]


def _wrap(rng, s, forms=WRAPS):
    return rng.choice(forms).replace("ANSWER", s)


def _prose(rng, s):
    """Completion-shaped text around the answer: several boxes, a truncated last box, lead-ins past
    MAX_ANSWER_CHARS, an answer phrase with nothing after it."""
    steps = " ".join(f"Step {k}: we get ${_expr(rng, 1)}$." for k in range(rng.randint(1, 60)))
    return rng.choice([
        lambda: f"{steps} So \\boxed{{{s}}}", lambda: f"{steps} first \\boxed{{1}}, finally \\boxed{{{s}",
        lambda: f"{steps} The answer is", lambda: f"{steps} The answer is ${s}$. I hope it is correct.",
        lambda: f"{steps}\n{s}", lambda: f"\\boxed{{{s}}} {steps} \\boxed{{}}",
    ])()


@functools.cache
def fuzz_items(seed=SEED, n=NUM_ITEMS):
    """[(text, gold, expected)]: expected is True/False for controls, None for fuzz (any grade is acceptable).
    On 2 workers a well-formed expression costs ~25 ms of wall time, a malformed one ~6 ms, unicode ~1 ms, and
    a third of the items end in the parent (no answer, unbalanced braces, too long): the weights below fit
    10,000 items into about a minute on 2 cores."""
    rng = random.Random(seed)
    items, next_hazard = [], 0

    def control():
        pred, gold = rng.choice(CONTROLS_EQUIVALENT)
        items.append((_wrap(rng, pred, WRAPS[:-1]), gold, True))
        if rng.random() < 0.3:
            pred, gold = rng.choice(CONTROLS_WRONG)
            items.append((_wrap(rng, pred, WRAPS[:-1]), gold, False))

    while len(items) < n:
        if len(items) % CONTROL_EVERY == 0:
            control()
            continue
        roll = rng.random()
        hazard = next_hazard < len(HAZARDS) and len(items) >= (next_hazard + 0.5) * HAZARD_EVERY
        if hazard:  # each one once, bare or inside an expression
            text = HAZARDS[next_hazard] + (_expr(rng, 1) if rng.random() < 0.5 else "")
            next_hazard += 1
        elif roll < 0.05:
            text = _expr(rng, rng.randint(0, 2))
        elif roll < 0.35:
            text = _mutate(rng, _expr(rng, rng.randint(1, 3)))
        elif roll < 0.52:
            text = _unicode(rng)
        elif roll < 0.65:
            text = _mutate(rng, _expr(rng, 1) + _unicode(rng) + _expr(rng, 1))
        elif roll < 0.69:
            text = _huge_number(rng)
        elif roll < 0.72:
            text = _long(rng)
        elif roll < 0.82:
            text = rng.choice(["", " ", "\n", "$", "$$", "\\(\\)", "\\boxed{}", "\\boxed{ }", "{}", "\\boxed",
                               "The answer is", "The answer is .", ".", "\\", "\\\\", "}", "{", "^", "_", "&", "%"])
        else:
            text = _prose(rng, _expr(rng, rng.randint(0, 2)))
        text = _wrap(rng, text) if rng.random() < 0.5 else text
        gold = rng.choice(GOLDS)
        if rng.random() < 0.05:  # gold answers come from datasets, but a dataset can hold garbage too
            text, gold = gold, text
        items.append((text, gold, None))
        if hazard:
            control()  # right behind a kill: the replacement worker must grade it
    return items[:n]


# ------------------------------------------------------------------------------------------------ instruments


def _worker_children() -> set[int]:
    """Live (or zombie) grading workers that are children of this process."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE or "--grader-worker" in child.cmdline():
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


class ItemClock:
    """Seconds each job spends in a worker, from its send to its reply or its worker's kill, and every worker
    PID that ever took a job. Wraps the pool's private send/receive/replace steps: the public API reports only
    counts, and the limit is a per-item promise."""

    def __init__(self, monkeypatch):
        self.durations, self.pids = [], set()
        self._started, self._done = {}, {}
        send, receive, replace = rm._Worker.send, rm.Grader._receive, rm.Grader._replace

        def timed_send(worker, job_id, *args):
            sent = send(worker, job_id, *args)
            if sent:
                self._started[job_id] = time.monotonic()
                self.pids.add(worker.proc.pid)
            return sent

        def timed_receive(grader, worker, *args):
            self._finish(worker)
            return receive(grader, worker, *args)

        def timed_replace(grader, worker):
            self._finish(worker)
            return replace(grader, worker)

        monkeypatch.setattr(rm._Worker, "send", timed_send)
        monkeypatch.setattr(rm.Grader, "_receive", timed_receive)
        monkeypatch.setattr(rm.Grader, "_replace", timed_replace)

    def _finish(self, worker):
        if worker.job_id is not None and worker.job_id in self._started:
            self._done.setdefault(worker.job_id, time.monotonic() - self._started[worker.job_id])

    def end_batch(self):
        assert set(self._done) == set(self._started), "a job was sent but never answered nor killed"
        self.durations += list(self._done.values())
        self._started, self._done = {}, {}


# ------------------------------------------------------------------------------------------------ the test


def test_generator_is_seeded_and_covers_the_hazards():
    items = fuzz_items()
    assert fuzz_items(n=500) == items[:500]  # generated afresh (the cache is per argument), identically
    assert len(items) == NUM_ITEMS
    texts = [t for t, _, _ in items] + [g for _, g, _ in items]
    assert any(t == "" for t in texts) and any(len(t) >= 100_000 for t in texts)
    assert {h for h in HAZARDS if any(h in t for t in texts)} == set(HAZARDS)
    assert any("\ud800" in t for t in texts) and any("pmatrix" in t for t in texts)


def _still_our_child(pid: int) -> bool:
    try:
        return psutil.Process(pid).ppid() == os.getpid()
    except psutil.NoSuchProcess:
        return False


def test_fuzzed_batches_all_graded_within_the_limit_and_no_worker_left(monkeypatch):
    items = fuzz_items()
    texts, golds = [t for t, _, _ in items], [g for _, g, _ in items]
    expected = np.array([bool(e) for _, _, e in items])
    is_control = np.array([e is not None for _, _, e in items])

    slowest_extract = 0.0
    for t in texts + golds:
        start = time.perf_counter()
        rm.extract_answer(t)
        slowest_extract = max(slowest_extract, time.perf_counter() - start)

    clock = ItemClock(monkeypatch)
    before = _worker_children()
    grades = np.zeros(NUM_ITEMS, dtype=bool)
    total = rm.GradeStats()
    start = time.monotonic()
    with rm.Grader(num_workers=NUM_WORKERS) as grader:
        for lo in range(0, NUM_ITEMS, CHUNK):
            # One chunk through the symmetric relation used for voting (two verify calls per wrong pair), which
            # compares answers as voting holds them: extracted from their completions, or the bare text.
            chunk = texts[lo:lo + CHUNK]
            if lo // CHUNK == 5:
                answers = [a if (a := rm.extract_answer(t)) is not None else t for t in chunk]
                ok, stats = grader.equivalent(answers, golds[lo:lo + CHUNK], timeout_s=TIMEOUT_S)
            else:
                ok, stats = grader.grade(chunk, golds[lo:lo + CHUNK], timeout_s=TIMEOUT_S)
            clock.end_batch()
            assert ok.shape == (CHUNK,) and ok.dtype == bool and stats.total == CHUNK
            grades[lo:lo + CHUNK] = ok
            total.add(stats)
            alive = _worker_children() - before
            assert alive <= set(grader.worker_pids()) and len(alive) <= NUM_WORKERS  # killed workers were reaped
        assert grader.stats == total
    elapsed = time.monotonic() - start

    worst = max(clock.durations)
    print(f"\nfuzz: {NUM_ITEMS} items in {elapsed:.1f} s; {total}; {grades.sum()} correct; "
          f"{len(clock.durations)} through workers, slowest {worst:.2f} s; {len(clock.pids)} workers took jobs; "
          f"slowest extraction {slowest_extract * 1e3:.1f} ms")
    assert _worker_children() - before == set(), "grading workers outlived Grader.close()"
    assert not any(_still_our_child(pid) for pid in clock.pids), "a killed or closed worker was not reaped"
    assert total.total == NUM_ITEMS
    assert total.fast_path + total.no_answer + total.unparsed + total.timeouts + total.errors <= NUM_ITEMS
    # Controls sit every CONTROL_EVERY items and right behind each hazard: the pool kept working after the kills.
    np.testing.assert_array_equal(grades[is_control], expected[is_control])
    assert total.timeouts >= 1 and len(clock.pids) > NUM_WORKERS  # there were kills, and replacements took jobs
    assert worst <= TIMEOUT_S + KILL_MARGIN_S
    assert sum(d >= TIMEOUT_S for d in clock.durations) >= total.timeouts
    assert slowest_extract < EXTRACT_LIMIT_S
    assert elapsed <= total.timeouts * TIMEOUT_S + GRADING_BUDGET_S
