"""The procedural arithmetic task and its tokenizer: hand-checked steps, determinism, splits, the mistake model,
token lengths, and the verifier's tokens."""

import json
import re

import numpy as np
import pytest

from rlvjax.data import arithmetic
from rlvjax.data.arithmetic import (Problem, digit_records, eval_set, generate, make_problem, noisy_solution,
                                    records, sft_examples, split_of, train_stream)

# "a op b=c" with the values of a wrong solution allowed to leave 0..99 (and go negative).
STEP = re.compile(r"(-?\d+)([+\-*])(\d+)=(-?\d+)")
BOXED = re.compile(r"\\boxed\{(-?\d+)\}$")


def left_to_right(prompt: str) -> int:
    """Independent evaluation of a prompt: fold the tokens left to right."""
    tokens = re.findall(r"\d+|[+\-*]", prompt)
    value = int(tokens[0])
    for op, b in zip(tokens[1::2], tokens[2::2]):
        value = {"+": value + int(b), "-": value - int(b), "*": value * int(b)}[op]
    return value


def parse_solution(text: str) -> tuple[list[tuple[int, str, int, int]], str]:
    """(steps as (a, op, b, c), boxed answer); fails the test on any line that is neither."""
    *lines, last = text.split("\n")
    steps = []
    for line in lines:
        m = STEP.fullmatch(line)
        assert m, f"not a step line: {line!r} in {text!r}"
        steps.append((int(m[1]), m[2], int(m[3]), int(m[4])))
    m = BOXED.fullmatch(last)
    assert m, f"last line is not a boxed answer: {last!r}"
    return steps, m[1]


def is_right(a: int, op: str, b: int, c: int) -> bool:
    return c == {"+": a + b, "-": a - b, "*": a * b}[op]


@pytest.fixture(scope="module")
def tok():
    from rlvjax.data.tokenizer import build_tokenizer

    return build_tokenizer()


# --- problems -------------------------------------------------------------------------------------------------------

def test_level3_problem_by_hand():
    p = make_problem([12, 7, 5, 2], ["+", "-", "*"])
    # ((12 + 7) - 5) * 2: 19, 14, 28 (left to right, not 12 + 7 - 10 = 9).
    assert p.prompt == "12+7-5*2\n"
    assert p.steps == ["12+7=19", "19-5=14", "14*2=28"]
    assert p.solution == "12+7=19\n19-5=14\n14*2=28\n\\boxed{28}"
    assert (p.gold, p.level) == ("28", 3)
    assert arithmetic.parse_prompt(p.prompt) == ([12, 7, 5, 2], ["+", "-", "*"])


def test_generated_problems_are_consistent_and_in_range():
    for p in generate(0, 400):
        steps, boxed = parse_solution(p.solution)
        numbers, ops = arithmetic.parse_prompt(p.prompt)
        assert p.gold == boxed == str(left_to_right(p.prompt))
        assert p.level == len(ops) == len(steps) == len(p.steps)
        assert [f"{a}{op}{b}={c}" for a, op, b, c in steps] == p.steps
        assert all(is_right(*s) for s in steps)
        assert [s[1] for s in steps] == ops and [s[2] for s in steps] == numbers[1:] and steps[0][0] == numbers[0]
        assert all(s[0] == prev[3] for prev, s in zip(steps, steps[1:])), "each step starts from the last result"
        assert all(0 <= v <= 99 for s in steps for v in (s[0], s[2], s[3]))
        assert all(b >= 1 for _, op, b, _ in steps) and all(2 <= b <= 9 for _, op, b, _ in steps if op == "*")


def test_max_value_bounds_every_number_and_mistake():
    problems = generate(0, 400, levels=(1, 2, 3), max_value=20)
    values = [v for p in problems for a, _, b, c in parse_solution(p.solution)[0] for v in (a, b, c)]
    assert max(values) == 20 and min(values) >= 0  # the bound is reached, never passed
    assert all(split_of(p.prompt) == "eval" for p in eval_set(40, levels=(1,), max_value=20))
    examples = sft_examples(1, 2000, 0.5, levels=(2,), max_value=20)
    out_of_range = 0
    for prompt, completion, ok in examples:
        steps, boxed = parse_solution(completion)
        out_of_range += any(c > 20 for *_, c in steps)
        assert ok == (boxed == str(left_to_right(prompt)))
    # Mistakes are drawn in range where any candidate keeps the later steps in range: 6 of 2000 have none.
    assert 0 < out_of_range <= 10
    with pytest.raises(ValueError, match="max_value=1 must be in 2..99"):
        generate(0, 1, max_value=1)


def test_determinism():
    assert generate(3, 60) == generate(3, 60)
    assert generate(3, 60) != generate(4, 60)
    stream = train_stream(3)
    assert [next(stream) for _ in range(60)] == generate(3, 60)
    assert eval_set(40) == eval_set(40)
    assert sft_examples(5, 30, 0.3) == sft_examples(5, 30, 0.3)
    assert digit_records(1, 20) == digit_records(1, 20)


def test_levels_respected_and_balanced():
    problems = generate(1, 200, levels=(2, 4))
    assert [p.level for p in problems] == [2, 4] * 100
    for level in (1, 2, 3, 4):
        assert {p.level for p in generate(2, 20, levels=(level,))} == {level}
    assert [sum(p.level == k for p in eval_set(400)) for k in (1, 2, 3, 4)] == [100] * 4
    with pytest.raises(ValueError):
        generate(0, 1, levels=(0,))


def test_train_and_eval_are_disjoint():
    evaluation = eval_set()
    eval_prompts = {p.prompt for p in evaluation}
    assert len(eval_prompts) == len(evaluation) == 400, "eval problems are distinct"
    assert all(split_of(p) == "eval" for p in eval_prompts)
    train_prompts = {p.prompt for p in generate(0, 20_000)}
    assert not train_prompts & eval_prompts
    assert all(split_of(p) == "train" for p in train_prompts)
    # The split is a property of the problem, not of the seed: any seed's eval-side problems are eval problems.
    anywhere = generate(7, 4000, split=None)
    share = np.mean([split_of(p.prompt) == "eval" for p in anywhere])
    assert 0.2 < share < 0.3  # EVAL_FRACTION = 0.25


def test_validation_split_is_disjoint_from_test_and_train(tok):
    from rlvjax import experiment

    task = dict(levels=(2, 3, 4), max_value=9, num_train=2000, num_eval=96)
    train, test = experiment.build_records(experiment.TaskSpec(**task), tok)
    _, validation = experiment.build_records(experiment.TaskSpec(**task, eval_split="validation"), tok)
    prompts = lambda records: {r["prompt"] for r in records}  # noqa: E731
    assert len(validation) == len(test) == 96 and len(prompts(validation)) == 96
    assert not prompts(validation) & prompts(test) and not prompts(validation) & prompts(train)
    assert test == arithmetic.records(eval_set(96, levels=(2, 3, 4), max_value=9))  # the test set did not move
    with pytest.raises(ValueError, match="eval_split='validation' is built for the arithmetic and file tasks"):
        experiment.TaskSpec(name="digit", eval_split="validation")
    with pytest.raises(ValueError, match="TaskSpec.eval_split='dev': use 'test' or 'validation'"):
        experiment.TaskSpec(eval_split="dev")


def test_records_format():
    recs = records(eval_set(8))
    assert all(set(r) == {"prompt", "gold", "level", "id"} for r in recs)
    assert all(isinstance(r["prompt"], str) and isinstance(r["gold"], str) and isinstance(r["level"], int)
               and isinstance(r["id"], str) for r in recs)
    assert len({r["id"] for r in recs}) == len(recs)
    assert json.loads(json.dumps(recs)) == recs


def test_digit_task():
    recs = digit_records(0, 50)
    assert len({r["id"] for r in recs}) == 50 and len({r["gold"] for r in recs}) > 5
    for r in recs:
        assert r["prompt"] == f"{r['gold']}\n" and r["level"] == 0
    p = arithmetic.digit_problem(7)
    assert (p.prompt, p.gold, p.solution) == ("7\n", "7", "\\boxed{7}")


# --- answers as the reward sees them --------------------------------------------------------------------------------

def test_boxed_answer_regex_recovers_gold():
    for p in generate(11, 200):
        assert re.findall(r"\\boxed\{([^{}]*)\}", p.solution)[-1] == p.gold


def test_extract_answer_recovers_gold():
    math = pytest.importorskip("rlvjax.rewards.math")
    for p in generate(12, 100) + [arithmetic.digit_problem(3)]:
        assert math.extract_answer(p.solution) == p.gold
        assert math.is_correct(p.solution, p.gold)
    wrong = make_problem([12, 7], ["+"]).solution.replace("{19}", "{18}")
    assert not math.is_correct(wrong, "19")


# --- warm-start mistakes --------------------------------------------------------------------------------------------

def test_noisy_solution_mistake_rate_per_level():
    rng = np.random.default_rng(0)
    for level in (1, 2, 3, 4):
        problems = generate(level, 2000, levels=(level,))
        wrong = np.mean([not noisy_solution(p, rng, 0.3)[1] for p in problems])
        expected = 1 - 0.7 ** level
        assert abs(wrong - expected) < 0.04, (level, wrong, expected)  # 0.04 ~ 3.5 standard errors


def test_noisy_steps_are_wrong_exactly_where_marked():
    rng = np.random.default_rng(1)
    kinds_seen = set()
    for p in generate(9, 3000):
        text, correct = noisy_solution(p, rng, 0.4)
        steps, boxed = parse_solution(text)
        numbers, ops = arithmetic.parse_prompt(p.prompt)
        right = [is_right(*s) for s in steps]
        # Same problem: operands and operations from the prompt, each step starting from the previous result.
        assert [s[1] for s in steps] == ops and [s[2] for s in steps] == numbers[1:] and steps[0][0] == numbers[0]
        assert all(s[0] == prev[3] for prev, s in zip(steps, steps[1:]))
        assert boxed == str(steps[-1][3])
        assert right.count(False) <= 1, "at most one mistake, later steps propagate exactly"
        assert correct == all(right) == (boxed == p.gold), "a wrong step is visible and makes the answer wrong"
        if not correct:
            a, op, b, c = steps[right.index(False)]
            true = a + b if op == "+" else a - b if op == "-" else a * b
            assert c >= 0 and c != true
            kinds_seen.add("off_by_one" if abs(c - true) == 1 else "ten" if abs(c - true) == 10 else "other")
    assert kinds_seen == {"off_by_one", "ten", "other"}


def test_noisy_solution_extremes():
    rng = np.random.default_rng(2)
    problems = generate(4, 50)
    assert all(noisy_solution(p, rng, 0.0) == (p.solution, True) for p in problems)
    assert not any(noisy_solution(p, rng, 1.0)[1] for p in problems)
    with pytest.raises(ValueError):
        noisy_solution(problems[0], rng, 1.5)


def test_carry_mistakes():
    # 17+25: units 7+5 carry 1, forgotten -> 32; 43-17: borrow forgotten -> 36; 17*3: units carry 2 forgotten -> 31.
    assert arithmetic._mistake_candidates(17, "+", 25)["carry"] == [32]
    assert arithmetic._mistake_candidates(43, "-", 17)["carry"] == [36]
    assert arithmetic._mistake_candidates(17, "*", 3)["carry"] == [31]
    assert arithmetic._mistake_candidates(12, "+", 3)["carry"] == []


def test_sft_examples():
    examples = sft_examples(0, 400, 0.3, levels=(2, 3))
    problems = generate(0, 400, levels=(2, 3))
    assert [prompt for prompt, _, _ in examples] == [p.prompt for p in problems]
    correct = [completion == p.solution for (_, completion, _), p in zip(examples, problems)]
    assert 0.25 < np.mean(correct) < 0.55  # (0.7**2 + 0.7**3) / 2 = 0.42
    assert correct == [ok for _, _, ok in examples]  # the flag is the answer's correctness


# --- tokenizer ------------------------------------------------------------------------------------------------------

def test_tokenizer_vocabulary(tok):
    assert len(tok) == 25
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    for text in ("\\boxed{", " Yes", " No", "\n\nIs this solution correct (Yes/No)? Answer:", "7", "\n"):
        assert len(tok.encode(text, add_special_tokens=False)) == 1, text
    assert tok.encode("12", add_special_tokens=True) == tok.encode("12", add_special_tokens=False), "no <bos> added"


def _task_texts():
    from rlvjax.rl.verifier import BASE_VERIFY_PROMPT

    rng = np.random.default_rng(3)
    for p in generate(5, 300) + eval_set(100):
        text, correct = noisy_solution(p, rng, 0.5)
        yield p.prompt
        yield p.solution
        yield p.prompt + text + BASE_VERIFY_PROMPT + (" Yes" if correct else " No")


def test_tokenizer_round_trip(tok):
    from rlvjax.data.tokenizer import CHARACTERS, WORD_TOKENS

    rng = np.random.default_rng(4)
    pieces = list(CHARACTERS) + list(WORD_TOKENS)
    random_texts = ["".join(rng.choice(pieces, size=rng.integers(1, 60))) for _ in range(1000)]
    for text in random_texts + list(_task_texts()):
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text, repr(text)


def test_prompt_and_completion_tokenize_separately(tok):
    """The trainer concatenates prompt ids, completion ids and verify ids: that must equal the joint encoding."""
    from rlvjax.rl.verifier import BASE_VERIFY_PROMPT

    def enc(text):
        return tok.encode(text, add_special_tokens=False)

    for p in generate(6, 200):
        joint = enc(p.prompt + p.solution + BASE_VERIFY_PROMPT + " Yes")
        assert joint == enc(p.prompt) + enc(p.solution) + enc(BASE_VERIFY_PROMPT) + enc(" Yes")


def test_token_lengths_per_level(tok):
    rng = np.random.default_rng(5)
    for level in (1, 2, 3, 4):
        problems = generate(level, 1000, levels=(level,))
        prompt = max(len(tok.encode(p.prompt, add_special_tokens=False)) for p in problems)
        clean = max(len(tok.encode(p.solution, add_special_tokens=False)) for p in problems)
        noisy = max(len(tok.encode(noisy_solution(p, rng, 0.5)[0], add_special_tokens=False)) for p in problems)
        # Two-digit numbers: prompt (level + 1) * 2 + level + "\n"; a step "aa+bb=cc\n" is 9, "\boxed{cc}" 4.
        assert prompt <= 3 * level + 3 <= 24
        assert clean <= 9 * level + 4 <= 48
        assert noisy <= 48


def test_verifier_tokens(tok):
    from rlvjax.rl.verifier import BASE_VERIFY_PROMPT, verify_prompt_ids, yes_no_token_ids

    yes_id, no_id = yes_no_token_ids(tok)
    assert yes_id != no_id
    assert (tok.decode([yes_id]), tok.decode([no_id])) == (" Yes", " No")
    ids = verify_prompt_ids(tok)
    assert len(ids) == 1 and tok.decode(ids) == BASE_VERIFY_PROMPT


def test_save_and_reload(tmp_path, tok):
    from transformers import AutoTokenizer

    from rlvjax.data.tokenizer import save_tokenizer
    from rlvjax.rl.verifier import verify_prompt_ids, yes_no_token_ids

    bare, with_model = tmp_path / "bare", tmp_path / "with_model"
    save_tokenizer(bare)
    save_tokenizer(with_model)
    # rlvjax.save_hf puts a qwen2 config.json beside it, which makes AutoTokenizer pick Qwen2Tokenizer.
    (with_model / "config.json").write_text(json.dumps({"model_type": "qwen2", "vocab_size": len(tok)}))
    texts = list(_task_texts())[:300]
    for path in (bare, with_model):
        loaded = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        assert loaded.get_vocab() == tok.get_vocab()
        assert (loaded.pad_token_id, loaded.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
        assert yes_no_token_ids(loaded) == yes_no_token_ids(tok)
        assert verify_prompt_ids(loaded) == verify_prompt_ids(tok)
        for text in texts:
            ids = tok.encode(text, add_special_tokens=False)
            assert loaded.encode(text, add_special_tokens=False) == ids
            assert loaded.decode(ids) == text


def test_problem_is_plain_data():
    p = make_problem([3, 4], ["*"])
    assert p == Problem(prompt="3*4\n", gold="12", level=1, steps=["3*4=12"], solution="3*4=12\n\\boxed{12}")
