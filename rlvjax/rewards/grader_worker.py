"""The grading worker: math-verify in a subprocess of its own, run as a script by ``rewards.math.Grader``.

It imports math-verify and nothing of rlvjax (no JAX), so a killed worker is replaced in about a second. It reads
JSON-line jobs on stdin and writes one JSON-line reply each; see ``rewards/math.py`` for why it is a subprocess.
"""

from __future__ import annotations

import json
import math
import os
import sys


def _worker_equivalent(pred: str, gold: str, symmetric: bool) -> tuple[bool, str | None]:
    """math-verify with its signal timeouts off (our parent enforces the wall clock). Returns (ok, note)."""
    from math_verify import parse, verify

    parsed = [[_value(x) for x in parse(f"\\boxed{{{s}}}", parsing_timeout=None)] for s in (gold, pred)]
    if not parsed[0] or not parsed[1]:
        return False, "unparsed"
    if symmetric and _list_against_sequence(parsed[::-1]):  # a vote's pair: the sequence as gold, as grading reads it
        parsed, gold, pred = parsed[::-1], pred, gold
    ok = verify(parsed[0], parsed[1], timeout_seconds=None)
    # verify is asymmetric (e.g. equation vs value): voting needs a symmetric relation, and it takes an interval for
    # a gold inequality but not an inequality ("x > 2") for a gold interval
    if not ok and (symmetric or _inequality(parsed[1][0])) and not _list_against_sequence(parsed):
        ok = verify(parsed[1], parsed[0], timeout_seconds=None)
    return (bool(ok) and _close(parsed[0][0], parsed[1][0]) and not _set_against_sequence(gold, pred, parsed)
            and not _points_against_interval(gold, pred, parsed)), None


def _list_against_sequence(parsed) -> bool:
    """A list, "6, -1", against a pair or an interval, "(-1, 6)": read in the list's order with the pair as gold,
    as grading reads it, never the other way round, where math-verify matched the list's elements in any order (so
    a vote put "6, -1", graded wrong against the gold (-1, 6), in its class)."""
    from sympy import Eq, FiniteSet, Interval, Tuple

    shapes = [x.rhs if isinstance(x, Eq) else x for x in (parsed[0][0], parsed[1][0])]
    return isinstance(shapes[0], (Tuple, Interval)) and isinstance(shapes[1], FiniteSet)


def _set_against_sequence(gold: str, pred: str, parsed) -> bool:
    """One answer written as a set, ``\\{15, -29\\}``, the other as a point or an interval, ``(15, -29)``: two
    answers (math-verify matched the set's elements to the pair's, so an unordered set passed for an ordered pair,
    and {2, 3} for the interval (2, 3)). A list without braces, "15, -29", stays either: MATH writes both."""
    from sympy import Eq, FiniteSet, Interval, Tuple

    shapes = [x.rhs if isinstance(x, Eq) else x for x in (parsed[0][0], parsed[1][0])]
    braced = [_braced(text) and isinstance(x, FiniteSet) for text, x in zip((gold, pred), shapes)]
    sequence = [isinstance(x, (Tuple, Interval)) for x in shapes]
    return braced[0] and sequence[1] or braced[1] and sequence[0]


def _points_against_interval(gold: str, pred: str, parsed) -> bool:
    """One answer a finite set of points, the other an interval: two answers where the points are alternatives
    ("\\pm\\sqrt{3}", "x = -1 or x = 1": never an ordered pair) or the interval cannot be a pair (an endpoint
    at infinity, a closed end, a union). math-verify matched the set's elements to the endpoints, so the roots of
    the equation passed for the solution of the inequality, "x = \\pm\\sqrt{3}" for (-\\sqrt{3}, \\sqrt{3})
    (MATH-500). A plain list against an open finite interval, "2, 4" for (2, 4), stays either: a pair is written
    both ways."""
    from sympy import Eq, FiniteSet, Interval, Tuple, Union

    shapes = [x.rhs if isinstance(x, Eq) else x for x in (parsed[0][0], parsed[1][0])]
    for (text, points), other in (((gold, shapes[0]), shapes[1]), ((pred, shapes[1]), shapes[0])):
        if not isinstance(points, FiniteSet) or not isinstance(other, (Tuple, Interval, Union)):
            continue
        sides = {e.lhs if isinstance(e, Eq) else None for e in points.args}  # "x = 1 or x = 2", not "x = 1, y = 2"
        alternatives = "\\pm" in text or "\\mp" in text or len(sides) == 1 and None not in sides
        interval = isinstance(other, Union) or isinstance(other, Interval) and not (
            other.left_open and other.right_open and other.left.is_finite and other.right.is_finite)
        if alternatives or interval:
            return True
    return False


def _braced(text: str) -> bool:
    """Written in set braces: ``\\{...\\}`` (``\\left\\{ ... \\right\\}`` too), possibly after ``x \\in``."""
    text = text.replace("\\left", "").replace("\\right", "").strip()
    return "\\{" in text and text.endswith("\\}")


def _value(x):
    """A worked equation, numbers on both sides, "6*7 = 42", stands for its right side (math-verify equates "x = 5"
    with 5, not "6*7 = 42" with 42; "5 = x" stays an equation)."""
    from sympy import Eq

    return x.rhs if isinstance(x, Eq) and not x.lhs.free_symbols and not x.rhs.free_symbols else x


def _inequality(x) -> bool:
    from sympy import And, Eq, Or
    from sympy.core.relational import Relational

    return isinstance(x, Relational) and not isinstance(x, Eq) or isinstance(x, (And, Or))


REL_TOL = 1e-4  # two numbers within it are one answer (as Qwen2.5-Math's evaluation compares numbers)
ABS_TOL = 1e-12  # and two within this of each other (a float's rounding of an expression worth 0)


def _close(gold, pred) -> bool:
    """False where math-verify equated two answers whose numbers differ by more than ``REL_TOL`` of the larger: it
    compares floats rounded to 6 decimals, so ".0000670" equalled ".0000672" (every small number within 5e-7 of a
    small gold did), also inside an equation, a percentage, a tuple, an interval, a set or a matrix, and in a set of
    those. Compared number by number where both answers have one shape (``_numbers``; a set's elements matched in
    any order); math-verify's verdict stands for anything else (an expression, a mix of shapes)."""
    return _same(_numbers(gold), _numbers(pred))


def _same(a, b) -> bool:
    """``_numbers`` trees ``a`` and ``b`` agree: a number within ``REL_TOL`` (any of its readings), sequences element
    by element, sets by a one-to-one matching of their elements. True where the shapes differ or are unknown."""
    if a is None or b is None or isinstance(a, tuple) != isinstance(b, tuple):
        return True
    if not isinstance(a, tuple):  # a number: the values it may stand for
        return any(math.isclose(x, y, rel_tol=REL_TOL, abs_tol=ABS_TOL) or not (math.isfinite(x) and math.isfinite(y))
                   for x in a for y in b)
    (ordered_a, items_a), (ordered_b, items_b) = a, b
    if len(items_a) != len(items_b):
        return True
    if ordered_a and ordered_b:
        return all(_same(x, y) for x, y in zip(items_a, items_b))
    matched = {}  # an element of b -> the element of a it stands for (Kuhn's augmenting paths)

    def place(i, seen):
        for j, y in enumerate(items_b):
            if j not in seen and _same(items_a[i], y):
                seen.add(j)
                if j not in matched or place(matched[j], seen):
                    matched[j] = i
                    return True
        return False

    return all(place(i, set()) for i in range(len(items_a)))


def _numbers(x):
    """An answer as a tree of numbers: ``(ordered, [subtrees])`` for a tuple, an interval or a matrix (ordered) or a
    set (not), each number a list of the values it may stand for (a percentage: math-verify takes "50\\%" as 50 and
    as 0.5; an equation: its value). None for anything else (an expression, a variable)."""
    from sympy import Basic, Eq, FiniteSet, Interval, Mul, Tuple, UnevaluatedExpr
    from sympy.matrices import MatrixBase

    if isinstance(x, Eq):
        x = x.rhs
    if isinstance(x, (Tuple, Interval, FiniteSet, MatrixBase)):
        parts = list(x) if isinstance(x, MatrixBase) else list(x.args[:2] if isinstance(x, Interval) else x.args)
        return not isinstance(x, FiniteSet), [_numbers(p) for p in parts]
    try:
        if isinstance(x, Mul) and any(isinstance(f, UnevaluatedExpr) for f in x.args):  # a percentage
            digits = Mul(*(f for f in x.args if not isinstance(f, UnevaluatedExpr)))
            return [float(x.doit()), float(digits)]
        # "9-9" exactly 0 (its float was 1.9e-124, not within REL_TOL of a gold 0); math-verify's text is a str
        return [float(x.doit() if isinstance(x, Basic) else x)]
    except (TypeError, ValueError, OverflowError):
        return None


def _worker_main(memory_mb: int) -> None:
    import resource
    import signal

    # Protocol lines get a private copy of stdout; fd 1 itself now goes to stderr, so a stray print inside sympy
    # can never corrupt a reply.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_mb * 2**20 if hard == resource.RLIM_INFINITY else min(memory_mb * 2**20, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    _worker_equivalent("1", "1", False)  # warm-up (grammar load) so the first real item is not charged for it
    print(json.dumps({"ready": True}), file=replies, flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        # Backstop: if the parent died, SIGALRM's default action ends us instead of spinning forever.
        signal.alarm(job["backstop_s"])
        try:
            ok, note = _worker_equivalent(job["pred"], job["gold"], job["symmetric"])
        except Exception as e:  # noqa: BLE001 -- any failure is a counted, incorrect grade (never str(e): can hang)
            ok, note = False, "error:" + type(e).__name__
        signal.alarm(0)
        print(json.dumps({"id": job["id"], "ok": ok, "note": note}), file=replies, flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--grader-worker"]:
    _worker_main(int(sys.argv[2]))
