"""Grading: extraction, equivalence via math-verify, and the wall-clock-limited worker pool."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import re
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from rlvjax import testtime
from rlvjax.rewards import math as rm

REPO = Path(__file__).resolve().parents[1]
MATH500_CANDIDATES = [REPO.parent / "shared" / "data" / "math500.jsonl", REPO / "shared" / "data" / "math500.jsonl"]

# (gold, prediction) pairs that must grade as equivalent / not equivalent.
EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"), ("1/2", "0.5"), ("\\dfrac{3}{4}", "\\frac{3}{4}"), ("\\tfrac34", "0.75"),
    ("50\\%", "50"), ("50\\%", "0.5"), ("25", "25\\%"), ("30^\\circ", "30"), ("90", "90^{\\circ}"),
    ("10\\text{ cm}", "10"), ("5", "5\\text{ inches}"), ("\\$32", "32"), ("x=5", "5"), ("5", "x = 5"),
    ("(1,2]", "(1, 2]"), ("[-3, \\infty)", "[-3,\\infty)"), ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("(1,2,3)", "(1, 2, 3)"), ("\\{1,2\\}", "\\{2,1\\}"), ("2\\sqrt{3}", "\\sqrt{12}"), ("x^2+1", "1+x^2"),
    ("\\text{Evelyn}", "Evelyn"), ("\\text{(C)}", "C"), ("1,000", "1000"), ("-\\frac{1}{2}", "-0.5"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"), ("3\\pi", "\\pi \\cdot 3"), ("2^{10}", "1024"), ("6.0", "6"),
    ("y = 2x + 3", "2x+3"), ("\\frac13", "0.333333"), ("\\frac{1}{300}", "0.00333333"), ("\\frac{3}{56}", "0.053571"),
    ("\\frac{100}{3}\\%", "33.3333\\%"), ("\\frac17", "14.2857\\%"), ("(\\frac1{20}, \\frac13)", "(0.05, 0.333333)"),
    # an expression worth 0 (its float was 1.9e-124: the 1e-4 check of 2026-12-06 graded it wrong; the default run's
    # RL^V training met "\\boxed{9-9}" for a gold 0 at step 33)
    ("0", "9-9"), ("(0, 1)", "(2-2, 1)"), ("5", "2+3"),
]
NOT_EQUIVALENT = [
    ("3", "4"), ("\\frac{1}{2}", "\\frac{1}{3}"), ("[1,2)", "(1,2)"), ("(1,2)", "(2,1)"), ("50\\%", "5"),
    ("30^\\circ", "60"), ("\\text{east}", "\\text{west}"), ("\\pi", "3.14"), ("x=5", "6"), ("(1,2,3)", "(1,2)"),
    ("\\{1,2\\}", "\\{1,3\\}"), ("\\sqrt{2}", "2"), ("x^2+1", "x^2-1"), ("-1", "1"), ("10\\text{ cm}", "11"),
    ("0.5", "0.55"), ("1000", "100"), ("\\frac13", "0.3333"), (".0000672", ".0000670"), ("0", "0.0000001"),
]
# Strings that make sympy hang (each needs a timeout) and strings that merely fail to parse.
HANGING = ["(10^{100})!", "9^{9^{9^{9}}}", "2^{2^{2^{2^{2^{2}}}}}", "\\sum_{n=1}^{10^{10}} n^n"]
MALFORMED = ["{" * 500, "}" * 500 + "{" * 500, "9^9^9^9", "\\frac{1}{0}", "\\begin{matrix}", "\\left(",
             "\\notacommand{x}", "(" * 60 + "1", "\\sqrt{" * 200 + "2" + "}" * 200, "1e999999999", "$$$", "\\\\\\"]


def _grader_children() -> set[int]:
    """PIDs of live grading workers that are children of this process (Linux /proc)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if ppid == os.getpid() and b"--grader-worker" in cmdline:
            pids.add(int(entry.name))
    return pids


# ------------------------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize("text, expected", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("\\boxed{\\frac{a}{\\sqrt{b^{2}}}}", "\\frac{a}{\\sqrt{b^{2}}}"),  # nested braces
    ("first \\boxed{1}, finally \\boxed{2}", "2"),  # last box wins
    ("\\fbox{7}", "7"),
    ("hence \\boxed 5.", "5"),
    ("so x = \\boxed 5, as required", "5"),  # a bare box's token ends before what closes the sentence or the math
    ("\\(\\boxed 5\\)", "5"), ("\\[\\boxed 5\\]", "5"), ("(\\boxed 5)", "5"), ("\\boxed (1,2)", "(1,2)"),
    ("(\\boxed 5).", "5"), ("\\boxed 5\\).", "5"), ("\\boxed [0,1)", "[0,1)"), ("\\boxed (0,1]", "(0,1]"),
    ("\\boxed (1,2)]).", "(1,2)"),
    # "Answer: X" as "The answer is X" (a 2026-12-07 review: None), where it ends the completion
    ("So 6 * 7 = 42.\n\nAnswer: 42", "42"), ("**Answer:** 7", "7"), ("Final Answer: $\\frac12$", "\\frac12"),
    ("Answer: 42\nLet me check: 6 * 7 = 43", None),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are content
    ("\\boxed{\\boxed{4}}", "4"),
    ("The answer is 42.", "42"),
    ("the final answer is $3.5$.", "3.5"),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
    ("The answer is \\boxed{8}. The answer is 9.", "8"),  # fallback only when there is no box
    ("The answer is 1, 2, 3, ...", "1, 2, 3, ..."),  # a list's ellipsis is part of the answer, a period is not
    ("The answer is 5...", "5"),  # nor trailing dots
    ("The answer is $1, 2, \\ldots$.", "1, 2, \\ldots"),
    ("Suppose the answer is 10. Then we get a contradiction, so x = 3.", None),  # the phrase must end the text
    ("The answer is 42.\n\nLet me check that again.", None),
    ("The answer is 3.5. I hope it is correct.\n", "3.5"),
    ("The answer is $18$ dollars.", "18"), ("The final answer is $5$. I hope it is correct!", "5"),  # its sentence
    ("Suppose the answer is $10$. Then x = 3.", None),
    ("no final answer here", None),
    ("\\boxed{}", None),
    # an echoed empty box after the answer states no other answer; markdown bold around a stated one (review)
    ("so $\\boxed{5}$. Please put your final answer within \\boxed{}.", "5"), ("\\boxed{ }", None),
    ("The final answer is **5**.", "5"), ("**The final answer is 5**", "5"), ("The answer is ***5***.", "5"),
    ("The answer is \\boxed{}.", None),  # empty boxes alone state no answer (not the phrase's "\\boxed{}")
    ("The answer is **$\\frac{1}{2}$**.", "\\frac{1}{2}"), ("The answer is 2**3", "2**3"),
    ("\\boxed{1} then the last box is cut \\boxed{12", None),  # truncated last box: no final answer
    ("\\boxedx{3}", None),
    # boxes listed together are one answer, the set of them (as math-verify reads them); others are not listed
    ("$\\boxed{-2}$ and $\\boxed{1}$", "\\{-2, 1\\}"), ("\\boxed{3}, \\boxed{5}, and \\boxed{7}.", "\\{3, 5, 7\\}"),
    ("$x = \\boxed{-2}$ or $x=\\boxed{1}$", "\\{-2, 1\\}"), ("\\(\\boxed{1}\\), \\(\\boxed 2\\)", "\\{1, 2\\}"),
    ("\\boxed 1, \\boxed 2.", "\\{1, 2\\}"), ("\\boxed{1}\\boxed{2}", "2"), ("\\boxed{1}\n\n\\boxed{2}", "2"),
    ("a = \\boxed{3} and b = \\boxed{4}, so a + b = \\boxed{7}.", "7"), ("\\boxed{1} so \\boxed{2}", "2"),
    ("\\boxed{1} or \\boxed{2", None), ("\\boxed{1} and \\boxed{}", "1"),
    # separators inside the math, any number of boxes; each box another variable's: a point's coordinates (review)
    ("$x = \\boxed{3} \\text{ or } x = \\boxed{5}$", "\\{3, 5\\}"),
    ("\\[\\boxed{3} \\quad \\text{or} \\quad \\boxed{5}\\]", "\\{3, 5\\}"),
    ("$\\boxed{3}, \\quad \\boxed{5}$", "\\{3, 5\\}"),
    (", ".join(f"\\boxed{{{i}}}" for i in range(7)), "\\{0, 1, 2, 3, 4, 5, 6\\}"),
    ("$x = \\boxed{3}$ and $y = \\boxed{4}$", "3, 4"), ("$x_1 = \\boxed{2}$, $x_2 = \\boxed{3}$", "2, 3"),
    (None, None),
])
def test_extract_answer(text, expected):
    assert rm.extract_answer(text) == expected


@pytest.mark.parametrize("completion", ["\\boxed{1, 2, 3, ...}", "\\boxed{$7$.}", "\\boxed{\\sqrt{2}.}",
                                        "The answer is $1, 2, ...$", "\\boxed{\\(1\\), \\(2\\)}", "\\boxed{$-2$, $3$}",
                                        "\\boxed 1,2,..."])
def test_an_answer_reads_the_same_from_its_completion_and_as_stated(completion):
    """Grading reduces a completion to its answer; grouping compares answers already extracted (stated): both must
    read one answer alike, or the vote groups what the grader told apart (an ellipsis dropped, a period kept)."""
    assert rm.as_answer(rm.extract_answer(completion), stated=True) == rm.as_answer(completion, completion=True)


def test_math_delimiters_are_stripped_only_where_they_enclose_the_whole_answer():
    """"\\(1\\), \\(2\\)" is two pieces of inline math, not one: stripping its ends left "1\\), \\(2", which does
    not parse and graded a right answer wrong."""
    assert rm.as_answer("\\boxed{\\(1\\), \\(2\\)}") == "\\(1\\), \\(2\\)"
    assert rm.as_answer("\\boxed{$-2$, $3$}") == "$-2$, $3$"
    assert [rm.as_answer(f"\\boxed{{{a}}}") for a in ("$$x$$", "\\[x\\]", "$\\$5$")] == ["x", "x", "\\$5"]
    assert rm.grade_completions(["\\boxed{\\(1\\), \\(2\\)}"], ["1, 2"])[0].tolist() == [True]


def test_normalize_answer_ignores_layout_only():
    assert rm.normalize_answer("$\\left( 3, \\dfrac{\\pi}{2} \\right)$") == "(3,\\frac{\\pi}{2})"
    assert rm.normalize_answer("1\\,000.") == "1000"
    assert rm.normalize_answer("12") != rm.normalize_answer("1 3")
    # An explicit LaTeX space between digits is a space too (it merged "2\\ 3" into 23, which math-verify denies)
    for spaced, merged in (("2\\ 3", "23"), ("3\\,5", "35"), ("2\\;4", "24")):
        assert rm.normalize_answer(spaced) != rm.normalize_answer(merged)
    assert rm.normalize_answer("x\\,=\\,2") == "x=2" and rm.normalize_answer("10\\,080") == "10080"
    for grouped, plain in (("1\\,000.5", "1000.5"), ("12\\,345.5", "12345.5"), ("1\\,000\\%", "1000\\%")):
        assert rm.normalize_answer(grouped) == rm.normalize_answer(plain)  # math-verify alone misreads them


# ------------------------------------------------------------------------------------------------ equivalence


@pytest.fixture(scope="module")
def slow_grader():
    """Sends every pair through math-verify (no string fast path)."""
    with rm.Grader(num_workers=2, fast_path=False) as g:
        yield g


def test_equivalent_pairs(slow_grader):
    ok, stats = slow_grader.grade([p for _, p in EQUIVALENT], [g for g, _ in EQUIVALENT])
    assert [pair for pair, o in zip(EQUIVALENT, ok) if not o] == []
    assert stats.fast_path == 0 and stats.timeouts == 0 and stats.errors == 0


def test_not_equivalent_pairs(slow_grader):
    ok, _ = slow_grader.grade([p for _, p in NOT_EQUIVALENT], [g for g, _ in NOT_EQUIVALENT])
    assert [pair for pair, o in zip(NOT_EQUIVALENT, ok) if o] == []


def test_equivalence_is_symmetric():
    forward = rm.equivalent_batch([g for g, _ in EQUIVALENT], [p for _, p in EQUIVALENT])
    backward = rm.equivalent_batch([p for _, p in EQUIVALENT], [g for g, _ in EQUIVALENT])
    assert forward.all() and backward.all()
    assert rm.answers_equivalent("1/2", "0.5") and not rm.answers_equivalent("1/2", "0.4")
    # pairs math-verify equates one way only (an inequality and its interval): votes need the relation both ways
    one_way = [("x>1", "(1,\\infty)"), ("x \\ge 1", "[1,\\infty)"), ("(1,2)", "1<x<2")]
    assert all(rm.answers_equivalent(a, b) and rm.answers_equivalent(b, a) for a, b in one_way)
    np.testing.assert_array_equal(testtime.answer_classes(["x>1", "(1,\\infty)", "x>1", "x>2"]), [0, 0, 0, 1])


def test_is_correct_on_completions_and_bare_answers():
    assert rm.is_correct("Thus the area is $\\boxed{\\dfrac{1}{2}}$.", "0.5")
    assert rm.is_correct("The answer is 50\\%.", "\\frac{1}{2}")
    assert rm.is_correct("0.5", "\\frac12")
    assert not rm.is_correct("I first got \\boxed{0.5} but it is \\boxed{0.25}", "\\frac12")
    assert not rm.is_correct("\\boxed{0.5", "0.5")  # truncated box
    assert not rm.is_correct("", "0.5") and not rm.is_correct(None, "0.5")



def test_box_spacing_escaped_dollars_trailing_periods_prose_and_numeric_golds():
    # TeX reads "\boxed {5}" (also across a line break) as "\boxed{5}".
    assert [rm.extract_answer(t) for t in ("so $\\boxed {5}$.", "\\fbox {7}", "\\boxed\n{5}")] == ["5", "7", "5"]
    # An escaped dollar inside the answer's $...$ is a dollar sign, not the closing delimiter.
    assert rm.extract_answer("The final answer is $\\$18.90$. I hope it is correct.") == "\\$18.90"
    # The sentence's period inside the box is not part of the answer.
    assert rm.is_correct("\\boxed{\\sqrt{2}.}", "\\sqrt2") and rm.is_correct("\\boxed{0.5.}", "\\frac12")
    # A completion that states no final answer scores 0, as in grade_completions: its text is not fished for one.
    for prose, gold in [("If we assume $x = 5$, we get a contradiction", "5"), ("Let $a = 3$.", "3"),
                        ("I am not sure. Maybe 7?", "7"),
                        ("Step 1: 2+2=4\nStep 2: 4+1=5", "5")]:  # a derivation's last value was graded
        assert not rm.is_correct(prose, gold), prose
    # ... but a bare answer in words, or one extracted from a box, is an answer (and a gold is never prose).
    assert rm.is_correct("all real numbers", "all real numbers") and rm.is_correct("5\n", "5")
    matrix = "\\begin{pmatrix} 1 \\\\\n 5 \\end{pmatrix}"  # an answer over two lines
    assert rm.is_correct(matrix, "\\begin{pmatrix} 1 \\\\ 5 \\end{pmatrix}")
    assert rm.grade_completions(["So \\boxed{odd and even numbers only}"], ["odd and even numbers only"])[0][0]
    # Two numbers are not their digits run together (the string shortcut agreed; math-verify did not).
    np.testing.assert_array_equal(rm.grade_batch(["2 3", "1 1/2"], ["23", "11/2"]), [False, False])
    # An int or float gold column grades as its number.
    assert rm.is_correct("\\boxed{204}", 204) and rm.is_correct("\\boxed{\\frac12}", 0.5)


def test_grade_batch_stats_account_for_every_item():
    texts = ["\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{}", "\\boxed{3}", "x" * (rm.MAX_ANSWER_CHARS + 1), "{{x}"]
    golds = ["1/2", "\\frac{1}{2}", "1", "4", "x", "x"]
    ok, stats = rm.grade_batch_with_stats(texts, golds)
    np.testing.assert_array_equal(ok, [True, True, False, False, False, False])
    assert ok.dtype == bool
    # fast path: "1/2" = "1/2" by key, 3 vs 4 as whole numbers, "0.5" vs "\frac{1}{2}" as equal rationals
    assert (stats.total, stats.fast_path, stats.no_answer, stats.unparsed) == (6, 3, 2, 1)
    with pytest.raises(ValueError):
        rm.grade_batch(["1"], [])


@pytest.mark.parametrize("completion,gold", [("\\boxed{\\frac{1}{2}}", "½"), ("\\boxed{0.75}", "¾"),
                                             ("\\boxed{2\\sqrt{3}}", "2√3"), ("\\boxed{\\infty}", "∞"),
                                             ("\\boxed{-5}", "−5"), ("\\boxed{2\\pi}", "2π")])
def test_unicode_golds_grade_like_their_latex(completion, gold):
    assert rm.is_correct(completion, gold) and rm.is_correct(gold, completion)
    assert not rm.is_correct("\\boxed{3}", gold)


def test_whole_numbers_are_compared_without_math_verify():
    with rm.Grader(num_workers=1) as g:
        same, stats = g.equivalent(["07", "-3", "+5", "12", "1,000", "2", "x+1"], ["7", "3", "5", "$12$", "1000",
                                                                                   "2.0", "1+x"])
    np.testing.assert_array_equal(same, [True, False, True, True, True, True, True])
    # 07/7, -3/3, +5/5, 12/$12$ and 1,000/1000 as whole numbers, 2/2.0 as plain numbers; x+1/1+x is math-verify's
    assert stats.fast_path == 6


def test_plain_numbers_decided_without_math_verify_agree_with_it(slow_grader):
    """Decimals, ratios and surds (MATH-500's own among them) are decided in the parent where math-verify's verdict
    is certain: equal rationals, or values further apart than the worker's REL_TOL. Every such verdict, either way
    round, must be the slow grader's."""
    plain = {r["answer"] for r in _math500_rows()
             if rm.same_by_key(r["answer"], "0.123456789") is not None}  # ~130 of them, the parent's to decide
    assert len(plain) > 50
    forms = ["0.5", ".5", "\\frac12", "\\dfrac{1}{2}", "1/2", "-0.5", "\\frac{-1}{2}", "-\\frac{-1}{2}", "0.50001",
             "0.5001", "\\frac{2}{3}", "0.6667", "0.667", "2\\sqrt{3}", "\\sqrt{12}", "3.4641", "3\\sqrt2",
             "\\sqrt{18}", "\\frac{\\sqrt3}{2}", "-\\frac{\\sqrt{3}}{2}", "0.8660", "1.", "1", "1.0", "\\frac{7}{7}",
             "0", "-0.0"]
    pool = sorted(plain)[::3][:40] + forms
    pairs = [(a, b) for i, a in enumerate(pool) for b in pool[i + 1:] if rm.same_by_key(a, b) is not None]
    assert len(pairs) > 1500
    fast = [rm.same_by_key(a, b) for a, b in pairs]
    slow, stats = slow_grader.grade([b for _, b in pairs] + [a for a, _ in pairs],
                                    [a for a, _ in pairs] + [b for _, b in pairs])
    assert stats.timeouts == 0 and stats.errors == 0
    disagree = [(pair, f) for pair, f, s1, s2 in zip(pairs, fast, slow[:len(pairs)], slow[len(pairs):])
                if f != s1 or f != s2]
    assert disagree == []
    assert sum(fast) >= 20 and fast.count(False) > 1500  # both verdicts exercised
    for a, b in [("0.5", "0.50001"), ("\\frac{2}{3}", "0.6667"), ("2\\sqrt{3}", "\\sqrt{12}")]:  # math-verify's
        assert rm.same_by_key(a, b) is None


def test_the_reward_grades_the_answer_it_extracted_as_is_correct_does():
    completions = ["So $\\boxed{\\boxed{1}, \\boxed{2}}$.", "$\\boxed{\\frac{1}{2}}$", "no answer stated: 5"]
    golds = ["1,2", "0.5", "5"]
    rewards, answers = rm.grade_completions(completions, golds)
    assert answers[0] == "\\boxed{1}, \\boxed{2}"  # both boxes: extracted once, not again down to the last box
    assert rewards.tolist() == [True, True, False]
    assert rm.grade_batch(completions[:2], golds[:2]).tolist() == [True, True]


def test_digit_groups_written_any_way_grade_like_the_number():
    # MATH-500's golds write thousands as "10,\!080"; a model may write "10\,080" (thin spaces), which math-verify
    # alone parses as 90, or "10{,}080". "12, 345" (a space after the comma) is a list, as math-verify reads it.
    golds = {r["answer"] for r in _math500_rows()}
    cases = [("10,\\!080", "10\\,080"), ("11,\\! 111,\\! 111,\\! 100", "11\\,111\\,111\\,100"),
             ("\\$32,\\!348", "\\$32\\,348"), ("10,\\!080", "10{,}080"), ("10,\\!080", "10080")]
    assert {gold for gold, _ in cases} <= golds
    with rm.Grader(num_workers=1) as g:
        same, _ = g.equivalent([p for _, p in cases] + ["12, 345", "1,2"],
                               [gold for gold, _ in cases] + ["12345", "12"])
    np.testing.assert_array_equal(same, [True] * len(cases) + [False, False])
    # A bare answer holding LaTeX's thin space "\\! " is an answer, not a sentence ending in "!".
    assert rm.is_correct("11,\\! 111,\\! 111,\\! 100", "11111111100") and rm.is_correct("1,\\! 000", "1000")
    gold = "11,\\! 111,\\! 111,\\! 100"  # a MATH-500 gold, graded against itself
    np.testing.assert_array_equal(rm.grade_batch([gold], [gold]), [True])
    # A first group of 0 is no thousands group: "0,100" (an extra root listed) is not 100, "0,033" not AIME's 033.
    wrong = [("0,100", "100"), ("0{,}100", "100"), ("0,\\!100", "100"), ("00,100", "100"), ("0,001", "1"),
             ("0,033", "033")]
    assert not any(rm.is_correct(f"so \\boxed{{{p}}}", g) for p, g in wrong)
    assert rm.is_correct("\\boxed{1\\,000.5}", "1000.5") and rm.is_correct("\\boxed{12\\,345\\,678}", "12345678")
    # ... while groups after a decimal point are groups whatever leads the number
    assert rm.is_correct("\\boxed{3.141\\,592}", "3.141592") and rm.is_correct("\\boxed{0.000\\,001}", "0.000001")


def test_a_stated_answer_is_the_whole_statement_not_its_first_piece():
    """"The answer is $5$ or $6$." kept the first inline math alone and was graded 5: hedged answers were rewarded
    (math-verify gives 0, as rlvjax does for "5 or 6" without dollars). What follows the math in its sentence is
    dropped only when it holds no more math ("$18$ dollars."); a reason after a comma is never the answer."""
    hedged = ["So the answer is $5$ or $6$.", "The answer is $5$ (or possibly $6$).", "The answer is $5$, $6$, or $7$.",
              "The answer is $$5$$ or $$6$$.", "The answer is $x=5$ or $x=-5$."]
    graded, answers = rm.grade_completions(hedged, ["5"] * len(hedged))
    assert not graded.any(), answers
    plain = ["The answer is $18$ dollars.", "The answer is 5, because 2+3=5.", "The answer is $5$, since $2+3=5$.",
             "The final answer is $5$. I hope it is correct."]
    graded, answers = rm.grade_completions(plain, ["18", "5", "5", "5"])
    assert graded.all() and answers == ["18", "5", "5", "5"], answers
    # Units, conditions and references after the math are no second answer (a first fix read any digit or $ there
    # as one, and these graded wrong)
    qualified = {"The answer is $25$ cm$^2$.": "25", "The answer is $4$ when $y = 2$.": "4",
                 "The answer is $7$ (from step 3).": "7", "The answer is $12\\%$ of the 50 students.": "12\\%",
                 "The answer is $3$ in 2019.": "3"}
    graded, answers = rm.grade_completions(list(qualified), list(qualified.values()))
    assert graded.all(), answers
    # a list is not cut where "as well as" adds to it: "1, 3, as well as 5" is not the gold "1, 3"
    assert not rm.grade_completions(["The answer is 1, 3, as well as 5."], ["1, 3"])[0][0]


def test_reading_the_answer_is_linear_in_what_follows_it():
    """A run of spaces after the answer, then more text, backtracked: 16,000 spaces took 3 s in the trainer's own
    process (no grading worker, no timeout); 32,000 newlines 10 s."""
    start = time.perf_counter()
    assert rm.extract_answer("The answer is 5.\n" + " " * 200_000 + "x") is None
    assert rm.extract_answer("The answer is 5." + "\n" * 200_000 + "Hmm") is None
    assert rm.extract_answer("The answer is 5." + " " * 200_000) == "5"
    assert time.perf_counter() - start < 1.0


def test_a_derivation_without_a_stated_answer_is_not_a_bare_answer():
    """``is_correct`` reads text with no box and no "The answer is" as a bare answer unless it is prose; "Let x = 5"
    was graded as its value, where ``grade_completions`` gives 0. A bare answer may open with a word ("First
    quadrant") or span lines (a matrix)."""
    for text, gold in [("Let x = 5", "5"), ("Then 5", "5"), ("Suppose x = 5", "5")]:
        assert not rm.is_correct(text, gold) and not rm.grade_completions([text], [gold])[0][0], text
    bare = [("x = 5", "5"), ("first", "first"), ("First quadrant", "\\text{First quadrant}"), ("Sofia", "Sofia"),
            ("all real numbers", "all real numbers"),
            ("\\begin{pmatrix}\n1 \\\\\n2\n\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}")]
    assert all(rm.is_correct(text, gold) for text, gold in bare)


# ------------------------------------------------------------------------------------------------ MATH-500


def _math500_rows():
    path = next((p for p in MATH500_CANDIDATES if p.exists()), None)
    if path is None:
        pytest.skip("math500.jsonl not found")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast_path", "math_verify_only"])
def test_math500_reference_solutions_grade_correct(fast_path, capsys):
    rows = _math500_rows()
    with rm.Grader(num_workers=2, fast_path=fast_path) as g:
        ok, stats = g.grade([r["solution"] for r in rows], [r["answer"] for r in rows])
    misses = [(rm.extract_answer(r["solution"]), r["answer"]) for r, o in zip(rows, ok) if not o]
    with capsys.disabled():
        print(f"\nMATH-500 agreement ({'fast path' if fast_path else 'math-verify only'}): "
              f"{ok.mean():.3f} of {len(rows)}; {stats}; misses: {misses}")
    # every reference solution grades right (500 of 500 on both paths); only a grading cut short by the machine's
    # load (a wall-clock timeout, counted) may miss
    assert len(misses) <= stats.timeouts and not (stats.no_answer or stats.unparsed or stats.errors), misses


def test_boxes_listed_together_grade_as_math_verify_reads_them():
    """Real MATH-500 list answers: "$\\boxed{-2}$ and $\\boxed{1}$" is the set {-2, 1} to math-verify (so to TRL's
    accuracy reward) and was graded wrong here (its last box alone), and a hedge "\\boxed{3} or \\boxed{5}" right.
    Alternatives are never an interval's ends: math-verify passes the roots for the inequality's solution."""
    from math_verify import parse, verify

    golds = {row["answer"]: row for row in _math500_rows()}
    cases = [("1,-2", "So $f(x) = \\boxed{1}$ or $\\boxed{-2}$... the integers are $\\boxed{1}$, $\\boxed{-2}$.", True),
             ("-2,1", "The integer roots are $\\boxed{-2}$ and $\\boxed{1}$.", True),
             ("3, 5, 7", "The roots are $x = \\boxed{3}$, $x = \\boxed{5}$ and $x = \\boxed{7}$.", True),
             ("3, 5, 7", "The roots are \\boxed{3} and \\boxed{7}.", False),
             ("-2,1", "\\boxed{-2} or \\boxed{1} or \\boxed{2}", False)]
    for gold, text, right in cases:
        assert gold in golds
        assert rm.is_correct(text, gold) is right and verify(parse(f"${gold}$"), parse(text)) is right, text
    # a list's last comma before "and": math-verify reads the last box alone there
    assert rm.is_correct("The integer roots are $\\boxed{1}$, and $\\boxed{-2}$.", "-2,1")
    hedges = ["It is $\\boxed{350}$ or $\\boxed{200}$.", "\\boxed{350}, \\boxed{351}",
              "$x = \\boxed{200} \\text{ or } x = \\boxed{350}$", "$\\boxed{200} \\text{ and } \\boxed{350}$"]
    assert not any(rm.is_correct(text, "350") or verify(parse("$350$"), parse(text)) for text in hedges)
    interval = "(-\\sqrt{3}, \\sqrt{3})"
    assert interval in golds and rm.is_correct("\\boxed{(-\\sqrt{3}, \\sqrt{3})}", interval)
    assert not rm.is_correct("$x = \\boxed{-\\sqrt{3}}$ or $x = \\boxed{\\sqrt{3}}$", interval)
    assert not rm.is_correct("$\\boxed{-\\sqrt{3}}$, $\\boxed{\\sqrt{3}}$", interval)


def test_math500_answers_wrong_in_a_small_decimal_or_a_base_grade_wrong():
    """Real MATH-500 golds that graded wrong answers right: math-verify rounds floats to 6 decimals (".0000670" was
    ".0000672", also inside a tuple, set, matrix, equation or percentage) and reads "52_9" as 52 (it was "52_8"). Vote
    grouping joined such answers into one class too. (Right answers to 6 significant digits stay right: EQUIVALENT's
    percentages, tuples and 0.053571 for 3/56.)"""
    golds = {r["answer"] for r in _math500_rows()}
    small = ".0000672"  # 21 / (2^2 * 5^7) as a terminating decimal
    assert small in golds and Fraction(21, 2**2 * 5**7) == Fraction(small)
    based = sorted(g for g in golds if "_" in g)
    assert based == ["204_5", "2516_8", "40_9", "4210_{5}", "4343_6", "52_8"]
    other_base = [re.sub(r"_\{?(\d+)\}?$", lambda m: f"_{{{int(m.group(1)) + 1}}}", g) for g in based]  # "52_{9}"
    other_base += [re.sub(r"_\{?(\d+)\}?$", lambda m: f"_{{({int(m.group(1)) + 1})}}", g) for g in based[:2]]
    other_base += ["-" + g for g in based[:2]]  # "-204_5"
    digits = [g.split("_")[0] for g in based]  # "52": the base left out, as math-verify also reads it
    floats = [(".0000670", False), ("0.000067", False), ("0.0000674", False), ("6.7\\times10^{-5}", False),
              ("x = 0.0000670", False), ("x = 0.0000672", True), ("0.00672202\\%", False), ("0.00672\\%", True),
              ("0.0000672", True), ("6.72\\times10^{-5}", True), ("\\frac{21}{312500}", True)]
    # the same numbers in a tuple, an interval, a set, a matrix, an equation set, a percentage (numbers compared one by
    # one; a set's in any order), and right answers of those shapes that must stay right
    column = "\\begin{{pmatrix}}{}\\\\1\\end{{pmatrix}}".format
    shaped = [(f"({small}, 1)", "(0.0000670, 1)", False), (f"({small}, 1)", "(0.0000672, 1)", True),
              (f"[{small}, 1)", "[0.0000670, 1)", False), (f"\\{{{small}, 1\\}}", "\\{1, 0.0000670\\}", False),
              (f"\\{{{small}, 1\\}}", "\\{1, 0.0000672\\}", True), (column(small), column("0.0000670"), False),
              (f"x={small}, y=2", "x=0.0000670, y=2", False), (f"x={small}, y=2", f"y=2, x={small}", True),
              ("0.0000672\\%", "0.0000670\\%", False), ("50\\%", "\\frac12", True),
              ("\\frac{100}{3}\\%", "33.3333\\%", True),
              ("(\\frac1{20}, \\frac13)", "(0.05, 0.333333)", True), ("[0, \\infty)", "[0,\\infty)", True),
              # a set's elements matched one to one, whichever reading of a percentage fits (a sort paired 50% with 2)
              ("\\{50\\%, 2\\}", "\\{2, 50\\}", True), ("2, 50\\%", "2, 50", True),
              # several solutions, as MATH writes them: a set of pairs
              (f"({small}, 1), (2, 3)", "(0.0000670, 1), (2, 3)", False),
              (f"({small}, 1), (2, 3)", f"(2, 3), ({small}, 1)", True)]
    cases = [(small, answer, right) for answer, right in floats] + shaped \
        + [(g, a, False) for g, a in zip(based + based[:2] * 2, other_base)] \
        + [(g, a, True) for g, a in zip(based * 2, based + digits)] + [("52_8", "52_{(8}", False)]  # unbalanced
    for fast_path in (True, False):  # math-verify alone decides the floats; the fast path, the bases
        with rm.Grader(num_workers=1, fast_path=fast_path) as g:
            verdicts = g.equivalent([a for _, a, _ in cases], [gold for gold, _, _ in cases])[0]
        checked = cases if fast_path else cases[:len(floats) + len(shaped)]
        assert [(gold, a) for (gold, a, right), v in zip(checked, verdicts) if v != right] == []
    assert rm.answers_equivalent("-0_2", "0_2") and rm.answers_equivalent("0_2", "-0")  # -0 is 0 in any base
    np.testing.assert_array_equal(testtime.answer_classes(
        [small, ".0000670", "0.0000669", "0.000067", "6.72\\times10^{-5}"]), [0, 1, 2, 1, 0])
    sets = ["\\{50\\%, 2\\}", "\\{2, 50\\}", "\\{2, 50\\%\\}"]
    np.testing.assert_array_equal(testtime.answer_classes(sets), [0, 0, 0])


def test_forms_math_verify_misreads_grade_as_a_person_reads_them():
    """(gold, answer) pairs a careful person grades one way and math-verify graded the other (review, 2026-12-06):
    a gold "1e-05" (Python's str of 0.00001) read as 1 * e - 5, so "e-5" was right and 0.00001 wrong; words differing
    in case ("East" for MATH-500's \\text{east}: E * a * s * t with Euler's E) split a vote's class, so the majority
    elected a wrong answer; a worked gold "6*7 = 42" matched nothing; an inequality was wrong for its gold interval
    (math-verify takes them the other way only); \\varnothing, a trailing comma; a set for a point or an interval;
    a repeating decimal."""
    words = [("\\text{east}", "East"), ("east", "East"), ("Evelyn", "evelyn")]  # decided by their keys
    right = [("1e-05", "0.00001"), ("1e-05", "10^{-5}"), ("2.5e-07", "0.00000025"), ("1e+16", "10000000000000000"),
             ("2500", "2.5e+03"), ("0.00001", "1e-05"), ("6*7 = 42", "42"), ("3+2=5", "5"), ("2 \\times 3 = 6", "6"),
             ("\\frac{6}{2} = 3", "3"), ("(2,\\infty)", "x>2"), ("(3,4]", "3<x\\le 4"),
             ("x \\in [-2,7]", "-2\\le x\\le 7"), ("\\emptyset", "\\varnothing"), ("-2", "-2,"),
             # what the fixes must leave alone (review diff17): "2e-1" may be 2e - 1 (only a signed two- or three-digit
             # exponent is Python's), "5 = x" is an equation (not the symbol x)
             ("2e - 1", "2e-1"), ("x=5", "5 = x"),
             # a list without braces is either a set or a point (MATH writes both)
             ("(15,-29)", "15,-29"), ("\\{2,3\\}", "x \\in \\left\\{3, 2\\right\\}"), ("\\{2,3\\}", "3, 2"),
             ("\\{1\\pm\\sqrt{5},-2\\}", "-2, 1+\\sqrt5, 1-\\sqrt5"),
             ("(-\\sqrt{3}, \\sqrt{3})", "-\\sqrt{3}, \\sqrt{3}"), ("(2,4)", "x = 2, y = 4"), ("\\pm 2", "-2, 2"),
             ("-2, 2", "x = 2 \\text{ or } x = -2"),
             # repeating decimals (math-verify read the bar as a symbol)
             ("\\frac13", "0.\\overline{3}"), ("\\frac{5}{6}", "0.8\\overline{3}"), ("0.\\overline{3}", "\\frac{1}{3}"),
             ("\\frac{137}{110}", "1.2\\overline{45}"), ("-\\frac17", "-0.\\overline{142857}"), ("2", "1.\\bar9")]
    wrong = [("1e-05", "e-5"), ("1e-05", "0.0001"), ("east", "West"), ("6*7 = 42", "43"), ("(2,\\infty)", "x \\ge 2"),
             ("(2,\\infty)", "x>3"), ("(3,4]", "3\\le x\\le 4"), ("-2", "-2,3"),
             # a set is not a point or an interval (math-verify matched the elements: review 2026-12-06)
             ("(15,-29)", "\\{15,-29\\}"), ("(2,3)", "\\{2,3\\}"), ("\\{2,3\\}", "(2,3)"),
             ("(2,3)", "x \\in \\{2,3\\}"), ("\\frac13", "0.\\overline{6}"), ("\\frac13", "0.333"),
             # points are not an interval: the roots of MATH-500's "-4 < x^4 + 4x^2 < 21" passed for its solution,
             # and the ends of one that cannot be a pair (infinite, closed or half-open ends, a union; review)
             ("(-\\sqrt{3}, \\sqrt{3})", "x = \\pm \\sqrt{3}"), ("(-\\sqrt{3}, \\sqrt{3})", "\\pm\\sqrt{3}"),
             ("(-\\sqrt{3}, \\sqrt{3})", "x = -\\sqrt{3} \\text{ or } x = \\sqrt{3}"), ("(2,\\infty)", "2, \\infty"),
             ("[1,2)", "1, 2"), ("[1,2]", "1, 2"), ("(-\\infty, 2) \\cup (3, \\infty)", "-\\infty, 2"),
             ("\\pm\\sqrt{3}", "(-\\sqrt{3}, \\sqrt{3})")]
    cases = [(g, a, True) for g, a in right] + [(g, a, False) for g, a in wrong]
    for fast_path in (True, False):
        checked = cases + [(g, a, True) for g, a in words] if fast_path else cases
        with rm.Grader(num_workers=1, fast_path=fast_path) as grader:
            verdicts = grader.grade([f"So $\\boxed{{{a}}}$." for _, a, _ in checked], [g for g, _, _ in checked])[0]
        assert [(g, a) for (g, a, r), v in zip(checked, verdicts) if v != r] == [], fast_path
    # MATH-500's row 97 (gold \\text{east}): four right answers of seven out-voted by three wrong ones
    pool = ["East", "East", "east", "east", "\\text{west}", "\\text{west}", "\\text{west}", "\\text{east}"]
    np.testing.assert_array_equal(testtime.answer_classes(pool), [0, 0, 0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(testtime.answer_classes(["1e-05", "0.00001", "e-5", "10^{-5}"]), [0, 0, 1, 0])
    np.testing.assert_array_equal(testtime.answer_classes(["(-\\sqrt{3}, \\sqrt{3})", "\\pm\\sqrt{3}",
                                                           "x = \\pm \\sqrt{3}"]), [0, 1, 1])
    # a list joins the pair written in its order, as grading reads it ("6, -1" is wrong for the gold (-1, 6)): it
    # joined whichever pair sorted first, lifting majority@5 to 0.67 where it is 0 (review 2026-12-07)
    for pool, classes in ((["(-1,6)", "(-1,6)", "6, -1", "(6,-1)", "(6,-1)"], [0, 0, 1, 1, 1]),
                          (["6, -1", "(-1,6)", "(6,-1)"], [0, 1, 0]), (["(15,-29)", "-29, 15", "(-29,15)"], [0, 1, 1])):
        np.testing.assert_array_equal(testtime.answer_classes(pool), classes)
    # the same word in another case, not any two words: "abc" and "acb" are one product (a class of three, not two)
    np.testing.assert_array_equal(testtime.answer_classes(["a*b*c", "abc", "acb"]), [0, 0, 0])


# ------------------------------------------------------------------------------------------------ robustness


def test_hanging_item_times_out_and_worker_is_replaced():
    with rm.Grader(num_workers=1) as g:
        start = time.monotonic()
        ok, stats = g.grade(["\\boxed{(10^{100})!}", "\\boxed{x/2}"], ["5", "\\frac{x}{2}"], timeout_s=1.0)
        elapsed = time.monotonic() - start
        np.testing.assert_array_equal(ok, [False, True])  # the replacement worker grades the next item
        assert stats.timeouts == 1
        assert elapsed < 1.0 + 20.0  # the limit, plus start-up of two workers on a slow machine
        assert len(_grader_children() & set(g.worker_pids())) == 1


def test_a_worker_that_died_while_idle_does_not_cost_the_next_item():
    import signal

    with rm.Grader(num_workers=1) as g:
        assert g.grade(["\\boxed{x/2}"], ["\\frac{x}{2}"])[0].all()  # math-verify decides: a worker starts
        (pid,) = g.worker_pids()
        os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer, between two calls
        os.waitpid(pid, 0)
        ok, stats = g.grade(["\\boxed{1+x^2}"], ["x^2+1"])
        assert ok.all() and stats.errors == 0, stats
        assert g.worker_pids() != [pid]


@pytest.mark.slow
def test_adversarial_batch_finishes_within_limits():
    num_items, num_workers, timeout_s = 2000, 2, 1.0
    normal = [(f"so \\boxed{{{p}}}", gold) for gold, p in EQUIVALENT]
    adversarial = [(f"\\boxed{{{s}}}", "5") for s in MALFORMED] + [(f"The answer is {s}", "5") for s in MALFORMED]
    items = []
    for i in range(num_items):
        if i % 200 == 100:  # 10 hanging items, spread over the batch
            items.append((f"\\boxed{{{HANGING[(i // 200) % len(HANGING)]}}}", "5"))
        elif i % 7 == 0:
            items.append(adversarial[(i // 7) % len(adversarial)])
        else:
            items.append(normal[i % len(normal)])
    is_normal = np.array([it in normal for it in items])
    before = _grader_children()
    start = time.monotonic()
    with rm.Grader(num_workers=num_workers) as g:
        ok, stats = g.grade([t for t, _ in items], [gold for _, gold in items], timeout_s=timeout_s)
        elapsed = time.monotonic() - start
        alive = _grader_children() - before
        assert alive <= set(g.worker_pids()) and len(alive) <= num_workers  # killed workers were reaped
    assert _grader_children() - before == set()
    print(f"\nadversarial batch: {elapsed:.1f} s, {stats}")
    assert ok[is_normal].all() and not ok[~is_normal].any()
    assert stats.total == num_items and stats.timeouts <= (~is_normal).sum()
    assert elapsed < num_items * timeout_s / num_workers + 30  # the worst case allowed by the limits
    assert elapsed < 10 * (timeout_s + 3.0) / num_workers + 45  # what 10 hanging items should really cost


def test_grading_from_non_main_threads():
    results, errors = {}, []

    def work(name, text, gold):
        try:
            results[name] = rm.is_correct(text, gold)
        except Exception as e:  # noqa: BLE001 -- surfaced through the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(f"t{i}", f"\\boxed{{{p}}}", gold))
               for i, (gold, p) in enumerate(EQUIVALENT[:6])]
    threads.append(threading.Thread(target=work, args=("wrong", "\\boxed{3}", "4")))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert all(results[f"t{i}"] for i in range(6)) and results["wrong"] is False


def test_a_box_the_grader_reads_as_no_answer_votes_for_nothing():
    from rlvjax import testtime
    from rlvjax.rewards.registry import Rewards

    completions = ["\\boxed{$$}", "so \\boxed{$ $}", "\\boxed{5}"]
    rewards, _ = rm.grade_completions(completions, ["5"] * 3)
    assert rewards.tolist() == [False, False, True]  # graded as no answer
    votes = [Rewards(("math",)).answer(c) for c in completions]
    assert votes == [None, None, "5"]  # '$$' and '$ $' were answers, and two of them out-voted the right one
    assert testtime.majority_vote(votes) == "5"
