"""Procedural multi-step arithmetic: the reasoning task of the embedded CPU default (issue 5).

A tiny transformer trained from scratch in minutes has to learn it, so the format is as short and regular as the
task allows, and every step is checkable in the text, so that a verifier can see a mistake where it happens.

Semantics: the operations are applied **left to right** (no precedence): "12+7-5*2" means ((12+7)-5)*2 = 28.
Precedence would make the model plan which operation comes first; left-to-right chaining makes each step a
function of the previous result and the next operand only. Level = number of operations (1..4). Operands and
every intermediate value stay in 0..max_value (MAX_VALUE = 99 by default: two digits): ``+`` and ``-`` take operands
1..max_value, ``*`` a multiplier 2..9, each drawn only where the result stays in range. A smaller ``max_value``
(``TaskSpec.max_value``) shrinks the arithmetic table a tiny model has to learn.

Format (no spaces, one token per character for the tokenizer in ``rlvjax.data.tokenizer``)::

    prompt    "12+7-5*2\\n"
    solution  "12+7=19\\n19-5=14\\n14*2=28\\n\\\\boxed{28}"

Each step line is ``<previous result><op><operand>=<result>``; the last line boxes the final result. The completion
ends there; the trainer appends the tokenizer's end-of-sequence token.

Train and eval are disjoint by construction: a problem's prompt hashes into the eval share (EVAL_FRACTION) or the
train share, ``train_stream`` / ``generate`` draw only train-side problems and ``eval_set`` only eval-side ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Iterator, Sequence

import numpy as np

MAX_VALUE = 99
LEVELS = (1, 2, 3, 4)
EVAL_SEED = 20250507
EVAL_FRACTION = 0.25
# Mistake kinds of a careless student; each is a function of the step, see `_mistake_candidates`.
MISTAKE_KINDS = ("off_by_one", "off_by_ten", "wrong_digit", "carry")

_EXPRESSION = re.compile(r"(\d+)([+\-*])")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem: the model's prompt text, its gold answer, its level (number of operations; 0 for the digit
    task), the clean step lines (without newlines) and the clean solution text (steps + boxed answer)."""

    prompt: str
    gold: str
    level: int
    steps: list[str]
    solution: str


def apply_op(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operation {op!r}; expected one of '+', '-', '*'")


def format_step(a: int, op: str, b: int, result: int) -> str:
    return f"{a}{op}{b}={result}"


def format_solution(steps: Sequence[str], answer: int | str) -> str:
    return "".join(f"{step}\n" for step in steps) + f"\\boxed{{{answer}}}"


def format_prompt(numbers: Sequence[int], ops: Sequence[str]) -> str:
    """The prompt is the bare expression and a newline: the newline is where the solution starts."""
    return str(numbers[0]) + "".join(f"{op}{b}" for op, b in zip(ops, numbers[1:])) + "\n"


def parse_prompt(prompt: str) -> tuple[list[int], list[str]]:
    """Inverse of `format_prompt`: (numbers, ops)."""
    text = prompt.strip()
    if not re.fullmatch(r"\d+([+\-*]\d+)*", text):
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    ops = [m.group(2) for m in _EXPRESSION.finditer(text)]
    numbers = [int(x) for x in re.split(r"[+\-*]", text)]
    return numbers, ops


def make_problem(numbers: Sequence[int], ops: Sequence[str]) -> Problem:
    """The problem for an explicit expression, its steps computed left to right."""
    if len(numbers) != len(ops) + 1 or not ops:
        raise ValueError(f"need one more number than operations and at least one operation, got {numbers}, {ops}")
    acc, steps = numbers[0], []
    for op, b in zip(ops, numbers[1:]):
        result = apply_op(acc, op, b)
        steps.append(format_step(acc, op, b, result))
        acc = result
    return Problem(prompt=format_prompt(numbers, ops), gold=str(acc), level=len(ops), steps=steps,
                   solution=format_solution(steps, acc))


def _operand_ranges(acc: int, max_value: int) -> dict[str, tuple[int, int]]:
    """Inclusive operand range per operation that keeps ``acc op b`` in 0..max_value and the step non-trivial
    (no +0, -0, *0, *1: they teach nothing and *0 would erase an earlier mistake)."""
    ranges = {"+": (1, max_value - acc), "-": (1, acc)}
    if acc > 0:
        ranges["*"] = (2, min(9, max_value // acc))
    return {op: (lo, hi) for op, (lo, hi) in ranges.items() if lo <= hi}


def sample_problem(rng: np.random.Generator, level: int, max_value: int = MAX_VALUE) -> Problem:
    """A random problem with `level` operations: start in 1..max_value, then per step an operation drawn
    uniformly among those that can stay in range, and an operand uniformly from its range."""
    if level < 1:
        raise ValueError(f"level={level} must be >= 1 (it is the number of operations)")
    if not 2 <= max_value <= MAX_VALUE:
        raise ValueError(f"max_value={max_value} must be in 2..{MAX_VALUE}")
    numbers, ops = [int(rng.integers(1, max_value + 1))], []
    acc = numbers[0]
    for _ in range(level):
        ranges = _operand_ranges(acc, max_value)
        op = sorted(ranges)[int(rng.integers(len(ranges)))]
        lo, hi = ranges[op]
        b = int(rng.integers(lo, hi + 1))
        numbers.append(b)
        ops.append(op)
        acc = apply_op(acc, op, b)
    return make_problem(numbers, ops)


def split_of(prompt: str) -> str:
    """"eval" or "train", a fixed function of the prompt text, so a problem lands in one split whatever the seed."""
    h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    return "eval" if h < EVAL_FRACTION * 2**64 else "train"


def _draw(rng: np.random.Generator, level: int, split: str | None, max_value: int) -> Problem:
    while True:
        problem = sample_problem(rng, level, max_value)
        if split is None or split_of(problem.prompt) == split:
            return problem


def generate(seed: int, n: int, levels: Sequence[int] = LEVELS, *, split: str | None = "train",
             max_value: int = MAX_VALUE) -> list[Problem]:
    """`n` problems, deterministic in `seed`; problem i has level ``levels[i % len(levels)]`` so levels are
    balanced. By default only train-side problems (see `split_of`); split=None takes any."""
    if split not in ("train", "eval", None):
        raise ValueError(f"split={split!r} must be 'train', 'eval' or None")
    rng = np.random.default_rng(seed)
    return [_draw(rng, levels[i % len(levels)], split, max_value) for i in range(n)]


def train_stream(seed: int, levels: Sequence[int] = LEVELS, max_value: int = MAX_VALUE) -> Iterator[Problem]:
    """Unlimited train-side problems, levels round-robin; the first n equal ``generate(seed, n, levels)``."""
    rng = np.random.default_rng(seed)
    i = 0
    while True:
        yield _draw(rng, levels[i % len(levels)], "train", max_value)
        i += 1


def eval_set(n: int = 400, seed: int = EVAL_SEED, levels: Sequence[int] = LEVELS,
             max_value: int = MAX_VALUE) -> list[Problem]:
    """The fixed held-out set: `n` distinct eval-side problems, levels round-robin (n / len(levels) each)."""
    rng = np.random.default_rng(seed)
    seen, problems = set(), []
    for i in range(n):
        for _ in range(100_000):
            problem = _draw(rng, levels[i % len(levels)], "eval", max_value)
            if problem.prompt not in seen:
                break
        else:
            raise ValueError(f"could not find {n} distinct eval problems at levels {levels} with values up to "
                             f"{max_value}; lower TaskSpec.num_eval, or raise TaskSpec.max_value or add levels "
                             "(TaskSpec.levels)")
        seen.add(problem.prompt)
        problems.append(problem)
    return problems


def problem_id(problem: Problem, index: int) -> str:
    """Unique within a list (the index) and naming the problem (a prompt digest), so the same problem is
    recognisable across lists."""
    return f"arith-{index}-{hashlib.sha256(problem.prompt.encode()).hexdigest()[:8]}"


def records(problems: Sequence[Problem]) -> list[dict]:
    """The rlvjax record format: {"prompt", "gold", "level", "id"}."""
    return [{"prompt": p.prompt, "gold": p.gold, "level": p.level, "id": problem_id(p, i)}
            for i, p in enumerate(problems)]


# --- warm-start data with controlled mistakes (issue 5, item 2) ---------------------------------------------------

def _wrong_digit(value: int) -> list[int]:
    digits = str(value)
    out = []
    for pos, d in enumerate(digits):
        first = pos == 0 and len(digits) > 1  # no leading zero
        out += [int(digits[:pos] + r + digits[pos + 1:]) for r in "0123456789" if r != d and not (first and r == "0")]
    return out


def _carry_errors(a: int, op: str, b: int, result: int) -> list[int]:
    """The result with the carry (or borrow) of the units column forgotten; empty when there was none."""
    if op == "+" and a % 10 + b % 10 >= 10:
        return [result - 10]
    if op == "-" and a % 10 < b % 10:
        return [result + 10]
    if op == "*" and (a % 10) * b >= 10:
        return [result - ((a % 10) * b // 10) * 10]
    return []


def _mistake_candidates(a: int, op: str, b: int) -> dict[str, list[int]]:
    """Per mistake kind, the non-negative wrong results a careless student could write for ``a op b``."""
    result = apply_op(a, op, b)
    kinds = {
        "off_by_one": [result - 1, result + 1],
        "off_by_ten": [result - 10, result + 10],
        "wrong_digit": _wrong_digit(result),
        "carry": _carry_errors(a, op, b, result),
    }
    return {k: sorted({v for v in vs if v >= 0 and v != result}) for k, vs in kinds.items()}


def _stays_in_range(value: int, ops: Sequence[str], operands: Sequence[int], max_value: int) -> bool:
    for op, b in zip(ops, operands):
        if not 0 <= value <= max_value:
            return False
        value = apply_op(value, op, b)
    return 0 <= value <= max_value


def _pick_mistake(rng: np.random.Generator, a: int, op: str, b: int, later_ops, later_operands,
                  max_value: int) -> int:
    """A wrong result for ``a op b``: a kind uniformly among those with a candidate, then a candidate uniformly.
    Candidates whose propagation keeps every later value in 0..max_value are preferred, so that a wrong solution
    looks like a right one (no negative or out-of-range numbers) except for the arithmetic of the wrong step. Not
    always: where no candidate stays in range, one that leaves it is taken, and a step ``0*b`` (a right solution
    never multiplies 0: problems draw ``*`` only on a positive value) is not avoided. At the default (levels 2-4,
    max_value 9, mistake_rate 0.3) 11% of the wrong solutions show one of these without any arithmetic (a review's
    count over 20,000 examples, 2026-12-07), shortcuts a "graded" verification prior can learn; kept as they are,
    so that the default's data and figures stay comparable."""
    candidates = _mistake_candidates(a, op, b)
    in_range = {k: [v for v in vs if _stays_in_range(v, later_ops, later_operands, max_value)]
                for k, vs in candidates.items()}
    pool = {k: vs for k, vs in in_range.items() if vs} or {k: vs for k, vs in candidates.items() if vs}
    kind = sorted(pool)[int(rng.integers(len(pool)))]
    return pool[kind][int(rng.integers(len(pool[kind])))]


def noisy_solution(problem: Problem, rng: np.random.Generator, mistake_rate: float,
                   max_value: int = MAX_VALUE) -> tuple[str, bool]:
    """(solution text, final answer correct) with controlled mistakes, for the warm start's non-sharp policy.

    Each step, until the first mistake, is wrong with probability `mistake_rate`; later steps compute exactly
    from the wrong value (the error propagates, as in a student's work) and the boxed answer is the last value.
    At most one mistake per solution, and every operation is injective (no *0), so the answer is wrong exactly
    when a step is: P(correct) = (1 - mistake_rate) ** level, and the wrong step is visible in the text.
    """
    if not 0.0 <= mistake_rate <= 1.0:
        raise ValueError(f"mistake_rate={mistake_rate} must be in [0, 1]")
    numbers, ops = parse_prompt(problem.prompt)
    acc, steps, mistaken = numbers[0], [], False
    for k, (op, b) in enumerate(zip(ops, numbers[1:])):
        result = apply_op(acc, op, b)
        if not mistaken and rng.random() < mistake_rate:
            result = _pick_mistake(rng, acc, op, b, ops[k + 1:], numbers[k + 2:], max_value)
            mistaken = True
        steps.append(format_step(acc, op, b, result))
        acc = result
    return format_solution(steps, acc), str(acc) == problem.gold


def sft_examples(seed: int, n: int, mistake_rate: float, levels: Sequence[int] = LEVELS,
                 max_value: int = MAX_VALUE) -> list[tuple[str, str, bool]]:
    """`n` (prompt, completion, answer correct) triples of train-side problems with noisy solutions,
    deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return [(p.prompt, *noisy_solution(p, rng, mistake_rate, max_value))
            for p in generate(seed, n, levels, max_value=max_value)]


# --- the trivial task of the training-loop tests (issue 4) --------------------------------------------------------

def digit_problem(digit: int) -> Problem:
    """Prompt "7\\n", answer "\\\\boxed{7}": reward is learnable in a few dozen steps from a random model."""
    if not 0 <= digit <= 9:
        raise ValueError(f"digit={digit} must be in 0..9")
    return Problem(prompt=f"{digit}\n", gold=str(digit), level=0, steps=[], solution=format_solution([], digit))


def digit_records(seed: int, n: int) -> list[dict]:
    """`n` digit-task records, digits uniform in 0..9, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return [{"prompt": p.prompt, "gold": p.gold, "level": 0, "id": f"digit-{i}"}
            for i, p in enumerate(digit_problem(int(d)) for d in rng.integers(0, 10, size=n))]
