"""Record loaders (MATH / MATH-500 / AIME / generic; every bad-input message) and the resumable grain pipeline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import dataclasses
import hashlib
import json
from pathlib import Path

import grain
import pytest

from rlvjax.data import QWEN_MATH_INSTRUCTION, format_prompt, load_records, make_iterator
from rlvjax.data import pipeline, sources
from rlvjax.experiment import TaskSpec
from rlvjax.rewards.registry import MESSAGES

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MATH500 = SHARED_DATA / "math500.jsonl"
AIME = SHARED_DATA / "aime2024.jsonl"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- loaders on the shared reference files -------------------------------------------------------------------------


@pytest.mark.skipif(not MATH500.exists(), reason="../shared/data/math500.jsonl absent")
def test_math500_records_take_answer_and_level():
    records, stats = load_records(MATH500)
    raw = [json.loads(line) for line in MATH500.read_text(encoding="utf-8").splitlines()]
    assert (stats.schema, stats.rows, stats.kept, stats.skipped_bad_gold) == ("math500", 500, 500, 0)
    assert [r["prompt"] for r in records] == [r["problem"] for r in raw]
    assert [r["gold"] for r in records] == [r["answer"].strip() for r in raw]
    assert {r["level"] for r in records} == {1, 2, 3, 4, 5}
    assert len({r["id"] for r in records}) == 500 and records[0]["id"] == "math500-0"
    # The row's other columns stay, for reward functions that read them; the problem is the prompt.
    assert set(records[0]) == {"prompt", "gold", "level", "id", "answer", "solution", "subject"}
    assert records[0]["answer"] == raw[0]["answer"] and "problem" not in records[0]


@pytest.mark.skipif(not AIME.exists(), reason="../shared/data/aime2024.jsonl absent")
def test_aime_records_keep_integer_answers_and_ids():
    records, stats = load_records(AIME)
    raw = [json.loads(line) for line in AIME.read_text(encoding="utf-8").splitlines()]
    assert (stats.schema, stats.kept) == ("aime", 30)
    assert [r["id"] for r in records] == [str(r["id"]) for r in raw]
    assert all(r["level"] is None and r["gold"].isdigit() for r in records)
    assert [int(r["gold"]) for r in records] == [int(r["answer"]) for r in raw]


@pytest.mark.skipif(not MATH500.exists(), reason="../shared/data/math500.jsonl absent")
def test_math_schema_takes_gold_from_last_box_of_solution():
    pytest.importorskip("rlvjax.rewards.math")
    records, stats = load_records(MATH500, fmt="math")
    by_id = {r["id"]: r["gold"] for r in records}
    answers = {f"math500-{i}": json.loads(line)["answer"]
               for i, line in enumerate(MATH500.read_text(encoding="utf-8").splitlines())}
    agree = sum(by_id[i] == answers[i] for i in by_id)
    assert stats.schema == "math" and stats.kept == 500 and stats.skipped_bad_gold == 0
    assert agree == 500, agree  # MATH-500's answer field is that box's content


# --- schemas and formats on small files ----------------------------------------------------------------------------


def test_math_rows_without_a_box_are_skipped_or_refused(tmp_path):
    pytest.importorskip("rlvjax.rewards.math")
    path = write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "1+1?", "solution": "So it is $\\boxed{1}$, no: $\\boxed{2}$.", "level": "Level 3"},
        {"problem": "2+2?", "solution": "Surely four.", "level": "Level ?"},
        {"problem": "3+3?", "solution": "$\\boxed{\\frac{12}{2}}$", "level": "Level 1", "unique_id": "x/3.json"},
        # a phrase is no box: its gold was '3 since it works', which no right answer equals
        {"problem": "Find x.", "solution": "We find x=3. Thus the answer is 3 since it works.", "level": "Level 2"},
    ])
    records, stats = load_records(path)
    assert stats.schema == "math" and stats.skipped_bad_gold == 2 and stats.bad_gold_rows == ("line 2", "line 4")
    assert [(r["gold"], r["level"], r["id"]) for r in records] == [("2", 3, "math-0"), ("\\frac{12}{2}", 1, "x/3.json")]
    with pytest.raises(ValueError, match=r"math.jsonl: line 2 has no usable gold answer for schema 'math'; fix the row "
                                         r"or pass on_bad_gold='skip'"):
        load_records(path, on_bad_gold="error")


def test_generic_rows_json_and_parquet(tmp_path):
    rows = [{"question": "What is 6*7?", "answer": 42}, {"question": "Half of 1?", "answer": "1/2 "},
            {"question": "Nothing?", "answer": ""}]
    (tmp_path / "g.json").write_text(json.dumps(rows), encoding="utf-8")
    records, stats = load_records(tmp_path / "g.json")
    assert stats.schema == "generic" and stats.skipped_bad_gold == 1 and stats.bad_gold_rows == ("row 3",)
    assert [(r["prompt"], r["gold"], r["level"], r["id"]) for r in records] == [
        ("What is 6*7?", "42", None, "g-0"), ("Half of 1?", "1/2", None, "g-1")]
    # JSON Lines named .json, as many hub datasets ship them: "line 2 is not valid JSON (Extra data …)" before
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    lines, stats = load_records(tmp_path / "lines.json")
    assert [r["gold"] for r in lines] == ["42", "1/2"] and stats.bad_gold_rows == ("line 3",)
    (tmp_path / "broken.json").write_text('[{"question": "a", "answer": 1}] x', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.json: line 1 is not valid JSON \(Extra data at column 34\)"):
        load_records(tmp_path / "broken.json")

    import pyarrow
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(
        [{"prompt": "p", "gold": "7", "level": 2}, {"prompt": "q", "gold": "8", "level": 5}]), tmp_path / "g.parquet")
    records, stats = load_records(str(tmp_path / "g.parquet"))
    assert stats.schema == "generic" and [(r["gold"], r["level"]) for r in records] == [("7", 2), ("8", 5)]


def test_datasets_directory_and_split(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # keep ~/.cache clean
    source = tmp_path / "dataset"
    source.mkdir()
    write_jsonl(source / "train.jsonl", [{"problem": "p", "answer": "3"}, {"problem": "q", "answer": 4}])
    records, stats = load_records(source)
    assert stats.schema == "aime" and [r["gold"] for r in records] == ["3", "4"]
    assert [r["id"] for r in records] == ["dataset-0", "dataset-1"]
    with pytest.raises(ValueError, match=r"has no split 'test' \(Unknown split .*\); set split= to one of them"):
        load_records(source, split="test")
    datasets.Dataset.from_list([{"prompt": "x", "gold": "1"}]).save_to_disk(tmp_path / "saved")
    records, stats = load_records(tmp_path / "saved")
    assert stats.schema == "generic" and records == [{"prompt": "x", "gold": "1", "level": None, "id": "saved-0"}]
    assert load_records(tmp_path / "saved", split="test")[0] == records  # one dataset: read whole as either
    # it evaluated the same rows for any other split, silently (a file is refused so: TaskSpec)
    with pytest.raises(ValueError, match=r"saved is one dataset, without splits, and TaskSpec.eval_split='validation' "
                                         r"picks a split: point at the validation data's own directory or file"):
        load_records(tmp_path / "saved", split="validation", split_knob="TaskSpec.eval_split")
    # training data without a train split: its splits listed, no knob that does not exist ("set split=")
    datasets.DatasetDict({"test": datasets.Dataset.from_list([{"prompt": "x", "gold": "1"}])}).save_to_disk(
        tmp_path / "test_only")
    with pytest.raises(ValueError, match=r"test_only has no split 'train' \(its splits: test\); the training data is "
                                         r"read from its 'train' split: save the data with one, or point at"):
        from rlvjax.data import tasks

        tasks.get("file").records(TaskSpec(name="file", train_file=str(tmp_path / "test_only"), prompt_format="as_is"),
                                  None)


def test_unreadable_rows_in_a_data_directory_or_prompt_text_are_one_line(tmp_path, monkeypatch):
    """A bad file in a data directory was datasets' DatasetGenerationError with a traceback; a prompt with a lone
    surrogate (JSON's "\\ud800" escape) was the tokenizer's TypeError."""
    import datasets

    from rlvjax.data.prompts import format_records

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    source = tmp_path / "dataset"
    source.mkdir()
    (source / "train.jsonl").write_text('{"prompt": "p", "gold": "1"}\n{"prompt": oops}\n')
    with pytest.raises(ValueError, match=rf"^{source}: datasets could not read it \(\w+: .+\); give each of its "
                                         "files on its own to find the row at fault$"):
        load_records(source)
    (tmp_path / "other").mkdir()  # no data files at all: still "not a loadable dataset", not "fix the file"
    (tmp_path / "other" / "a.xyz").write_text("x")
    with pytest.raises(FileNotFoundError, match="is neither a local file nor a loadable dataset"):
        load_records(tmp_path / "other")
    (tmp_path / "s.jsonl").write_text('{"prompt": "1+1\\ud800", "gold": "2"}\n')
    records, _ = load_records(tmp_path / "s.jsonl")
    with pytest.raises(ValueError, match=r"^the prompt of record 's-0' is not valid Unicode \('\\ud800' at character "
                                         r"3, a lone surrogate\); fix the row's text$"):
        format_records(records, None, "as_is")


def test_a_dataset_with_several_configs_is_read_by_its_subset(tmp_path, monkeypatch):
    """openai/gsm8k's 'main' and 'socratic', MATH's subjects: no caller could name one (TaskSpec.train_subset /
    eval_subset, evaluate --data_subset), and datasets' list of them was cut from the error."""
    import datasets

    from rlvjax import experiment
    from rlvjax.data import tasks

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    source = tmp_path / "gsm"
    for config, tag in (("main", "m"), ("socratic", "s")):
        (source / config).mkdir(parents=True)
        write_jsonl(source / config / "train.jsonl", [{"question": f"{tag}{i}", "answer": f"So.\n#### {i}"}
                                                      for i in range(3)])
        write_jsonl(source / config / "test.jsonl", [{"question": f"{tag}t", "answer": "So.\n#### 9"}])
    (source / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train.jsonl\n"
        f"  - split: test\n    path: {c}/test.jsonl\n" for c in ("main", "socratic")) + "---\n")
    with pytest.raises(ValueError, match=r"gsm needs a config name; its configs: \['main', 'socratic'\]; set "
                                         r"TaskSpec.train_subset to one$"):
        load_records(source, name_knob="TaskSpec.train_subset")
    with pytest.raises(ValueError, match=r"gsm has no config 'nope'; its configs: \['main', 'socratic'\]; set "
                                         r"--data_subset to one$"):
        load_records(source, name="nope", name_knob="--data_subset")
    spec = experiment.TaskSpec(name="file", train_file=str(source), eval_file=str(source), train_subset="socratic",
                               eval_subset="main", prompt_format="as_is")
    train, evals = tasks.get("file").records(spec, None)
    assert [(r["prompt"], r["gold"]) for r in train] == [("s0", "0"), ("s1", "1"), ("s2", "2")]
    assert [(r["prompt"], r["gold"]) for r in evals] == [("mt", "9")]


def test_a_datasets_eval_file_reads_its_eval_split_not_the_training_one(tmp_path, monkeypatch, caplog):
    import datasets

    from rlvjax import experiment
    from rlvjax.data import tasks

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    rows = lambda tag, n: [{"problem": f"{tag}{i}", "answer": str(i)} for i in range(n)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows("tr", 6)),
                          "test": datasets.Dataset.from_list(rows("te", 3)),
                          "dev": datasets.Dataset.from_list(rows("dv", 2))}).save_to_disk(tmp_path / "math")
    spec = dict(name="file", train_file=str(tmp_path / "math"), eval_file=str(tmp_path / "math"), prompt_format="as_is")
    train, evals = tasks.get("file").records(experiment.TaskSpec(**spec), None)
    assert [r["prompt"] for r in train] == [f"tr{i}" for i in range(6)]
    assert [r["prompt"] for r in evals] == ["te0", "te1", "te2"]  # it used to be tr0, tr1, tr2: training problems
    evals = tasks.get("file").records(experiment.TaskSpec(**spec, eval_split="dev"), None)[1]
    assert [r["prompt"] for r in evals] == ["dv0", "dv1"]
    # Train and eval data that share problems are named (before, nothing told that the evals were training data).
    import logging

    with caplog.at_level(logging.WARNING):
        experiment.build_records(experiment.TaskSpec(**{**spec, "eval_file": spec["train_file"]}, eval_split="train"),
                                 None)
    assert "6 of 6 eval prompts are train prompts too" in caplog.text
    with pytest.raises(ValueError, match=r"has no split 'validation' \(its splits: train, test, dev\); set "
                                         r"TaskSpec.eval_split to one of them"):
        tasks.get("file").records(experiment.TaskSpec(**spec, eval_split="validation"), None)
    # Evaluating a trained run reads its eval problems alone: its training file may have moved since (it failed with
    # "no such data file"), and a datasets id may be out of reach offline.
    moved = experiment.TaskSpec(**{**spec, "train_file": str(tmp_path / "moved.jsonl")})
    assert [r["prompt"] for r in experiment.build_eval_records(moved, None)] == ["te0", "te1", "te2"]
    with pytest.raises(FileNotFoundError, match="no such data file"):
        experiment.build_records(moved, None)
    arithmetic = experiment.TaskSpec(num_train=8, num_eval=5)  # a task without its own eval reader: its records'
    assert experiment.build_eval_records(arithmetic, None) == experiment.build_records(arithmetic, None)[1]


def test_a_rows_own_prompt_is_its_prompt_beside_problem_and_answer():
    """TRL's layout: chat-message prompts added beside the dataset's problem, answer and solution columns. The
    prompt was replaced by the bare problem text (no system turn, no template) and silently dropped."""
    messages = [{"role": "system", "content": "Think."}, {"role": "user", "content": "What is 1+1?"}]
    rows = [{"problem": "What is 1+1?", "answer": "2", "level": "Level 1", "prompt": messages},
            {"problem": "What is 2+2?", "solution": "So \\boxed{4}.", "prompt": "2+2="}]
    first = sources.from_rows(rows[:1])[0][0]
    assert first["prompt"] == messages and first["problem"] == "What is 1+1?" and first["gold"] == "2"
    second = sources.from_rows(rows[1:])[0][0]
    assert second["prompt"] == "2+2=" and second["problem"] == "What is 2+2?" and second["gold"] == "4"
    bare = sources.from_rows([{"problem": "What is 3+3?", "answer": "6"}])[0][0]  # no prompt column: the problem
    assert bare["prompt"] == "What is 3+3?" and "problem" not in bare
    # TRL's prompt + solution rows (they were refused): the gold is the solution's last \boxed{}, as MATH's
    trl = sources.from_rows([{"prompt": messages, "solution": "Add: \\boxed{2}."}])
    assert trl[1].schema == "math" and trl[0][0]["gold"] == "2" and trl[0][0]["prompt"] == messages
    # ... or the solution itself, when it is a bare answer (what TRL's accuracy_reward reads; every row was refused);
    # words without a box are still no answer
    bare = sources.from_rows([{"prompt": "p", "solution": s} for s in ("2", "$\\frac{1}{2}$", "x = 5", "Add them.")])
    assert [r["gold"] for r in bare[0]] == ["2", "\\frac{1}{2}", "x = 5"] and bare[1].skipped_bad_gold == 1
    # a gold column left empty (null) in a row reads the next one that holds its answer (the row was skipped)
    assert sources.from_rows([{"prompt": "1+1?", "gold": None, "answer": "2"}])[0][0]["gold"] == "2"


def test_unknown_dataset_id_offline_names_the_fix():
    with pytest.raises(FileNotFoundError, match=r"nobody/no-such-dataset is neither a local file nor a loadable "
                                                r"dataset \(.*\); give a .jsonl/.json/.parquet path"):
        load_records("nobody/no-such-dataset")


def test_format_prompt_plain_and_qwen_math_chat():
    assert QWEN_MATH_INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."
    assert format_prompt("What is 2+3?") == "What is 2+3?\n" + QWEN_MATH_INSTRUCTION + "\n"

    from conftest import word_tokenizer

    tokenizer = word_tokenizer(16)
    assert format_prompt("x", tokenizer, instruction="Box it.") == "x\nBox it.\n"  # no chat template: plain text
    tokenizer.chat_template = (  # Qwen2's ChatML template, stripped of its tool-use branches
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    assert format_prompt("What is 2+3?", tokenizer) == (  # Qwen2.5-Math's own CoT evaluation prompt, exactly
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    tokenizer.chat_template = (  # Gemma-style template that refuses a system turn
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}")
    assert format_prompt("What is 2+3?", tokenizer) == f"[user]What is 2+3?\n{QWEN_MATH_INSTRUCTION}[assistant]"


def test_format_records_renders_chat_messages_under_either_format():
    from conftest import word_tokenizer

    from rlvjax.data.prompts import format_records

    tokenizer = word_tokenizer(16)
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}")
    records = [{"prompt": [{"role": "user", "content": "1+2="}], "gold": "3"}, {"prompt": "2+2=", "gold": "4"}]
    math = format_records(records, tokenizer, "math")
    assert [r["prompt"] for r in math] == ["[user]1+2=[assistant]",
                                           f"[system]{QWEN_MATH_INSTRUCTION}[user]2+2=[assistant]"]
    assert [r["prompt"] for r in format_records(records, tokenizer, "as_is")] == ["[user]1+2=[assistant]", "2+2="]
    chat = format_records(records, tokenizer, "chat")  # a text is the user's turn, no instruction added
    assert [r["prompt"] for r in chat] == ["[user]1+2=[assistant]", "[user]2+2=[assistant]"]
    assert MESSAGES in chat[0] and MESSAGES not in chat[1]  # reward functions get the rows' own prompts
    assert math[0]["gold"] == "3"
    # A template that prints today's date (Llama 3.x's) renders the same every day: a run stopped before midnight
    # was refused the next day, its data fingerprint changed (review 2026-12-07)
    tokenizer.chat_template = (
        "{% if not date_string is defined %}{% set date_string = strftime_now('%d %b %Y') %}{% endif %}"
        "[system]Today Date: {{ date_string }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}")
    for prompt_format in ("math", "chat"):
        rendered = format_records(records[1:], tokenizer, prompt_format)[0]["prompt"]
        assert rendered.startswith("[system]Today Date: 26 Jul 2024["), rendered
    # one that calls strftime_now whatever it is given (Mistral-Small-3's default system message): the same date
    tokenizer.chat_template = (
        "{%- set today = strftime_now('%Y-%m-%d') %}[system]The current date is {{ today }}."
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}")
    rendered = format_records(records[1:], tokenizer, "chat")[0]["prompt"]
    assert rendered == "[system]The current date is 2024-07-26.[user]2+2=[assistant]", rendered
    # A prefilled assistant turn is continued, not closed and followed by a second assistant header.
    from rlvjax.data.prompts import render_messages

    tokenizer.chat_template = (  # ChatML
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    prefilled = render_messages([{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "Let"}],
                                tokenizer)
    assert prefilled.endswith("<|im_start|>user\n1+1<|im_end|>\n<|im_start|>assistant\nLet"), prefilled
    # A template that refuses the messages, or does not parse: one line naming the row (a jinja2 traceback)
    tokenizer.chat_template = (  # Llama-2 / Mistral style
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
    two_users = [{"prompt": "1+1=", "gold": "2", "id": "rows-0"},
                 {"prompt": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "gold": "2",
                  "id": "rows-1"}]
    with pytest.raises(ValueError, match=r"^the prompt of record 'rows-1' cannot be rendered with the tokenizer's "
                                         r"chat template \(Conversation roles must alternate"):
        format_records(two_users, tokenizer, "as_is")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }"
    with pytest.raises(ValueError, match=r"^the prompt of record 'rows-0' cannot be rendered with the tokenizer's"):
        format_records(two_users, tokenizer, "math")
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match=r"^prompt_format 'chat' renders each prompt with the tokenizer's chat "
                                         r"template and this tokenizer has none; use prompt_format 'as_is'"):
        format_records([two_users[0]], tokenizer, "chat")


def test_a_run_records_the_format_its_exports_are_evaluated_in():
    """A run whose prompts were all chat messages is recorded "chat": evaluating its policy on text problems read
    them verbatim ("as_is") or with the Qwen2.5-Math instruction ("math"), never in the chat template alone that it
    always saw. A run that rendered some text prompt keeps its format (its own evals read them so)."""
    from rlvjax.run_sampling import rendered_as

    messages = {"prompt": "[user]1+2=[assistant]", MESSAGES: [{"role": "user", "content": "1+2="}]}
    text = {"prompt": "2+2="}
    file = TaskSpec(name="file", train_file="t.jsonl", prompt_format="as_is")
    assert rendered_as(file, [messages, messages]) == "chat"
    assert rendered_as(dataclasses.replace(file, prompt_format="math"), [messages]) == "chat"
    assert rendered_as(file, [messages, text]) == "as_is"  # a text (an eval row's, say) was read verbatim
    assert rendered_as(dataclasses.replace(file, prompt_format="math"), [messages, text]) == "math"
    assert rendered_as(file) == "as_is"  # a checkpoint from before the format was stored: its task's
    assert rendered_as(TaskSpec(name="arithmetic"), [messages]) == "as_is"  # generated in the policy's format


# --- every bad input names the problem and the fix -----------------------------------------------------------------


def test_missing_and_empty_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such data file: .*nope.jsonl; check the path"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(ValueError, match=r"empty.jsonl is empty; expected one JSON object per line"):
        load_records(tmp_path / "empty.jsonl")
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ValueError, match=r"empty.json is empty; expected a JSON list of objects"):
        load_records(tmp_path / "empty.json")
    (tmp_path / "data.csv").write_text("problem,answer\n1+1,2\n")
    with pytest.raises(ValueError, match=r"data.csv: unsupported file type '.csv'; use .jsonl, .json or .parquet"):
        load_records(tmp_path / "data.csv")
    (tmp_path / "none.json").write_text("[]")
    with pytest.raises(ValueError, match=r"none.json has no rows; point at a file or split with at least one"):
        load_records(tmp_path / "none.json")


def test_bad_bytes_and_bad_json_name_the_line(tmp_path):
    good = json.dumps({"problem": "p", "answer": "1"}).encode()
    (tmp_path / "latin1.jsonl").write_bytes(good + b"\n" + b'{"problem": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"latin1.jsonl: line 2 is not UTF-8 \(byte 0xe9 at column 17\); re-encode"):
        load_records(tmp_path / "latin1.jsonl")
    (tmp_path / "latin1.json").write_bytes(b'[\n{"problem": "p", "answer": "1"},\n{"problem": "caf\xe9"}]')
    with pytest.raises(ValueError, match=r"latin1.json: line 3 is not UTF-8 \(byte 0xe9\); re-encode the file"):
        load_records(tmp_path / "latin1.json")
    (tmp_path / "broken.jsonl").write_bytes(good + b"\n\n" + b'{"problem": "p", "answer": }\n')
    with pytest.raises(ValueError, match=r"broken.jsonl: line 3 is not valid JSON \(Expecting value at column 28\); "
                                         r"each line must be one object"):
        load_records(tmp_path / "broken.jsonl")
    (tmp_path / "list.jsonl").write_bytes(good + b"\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"list.jsonl: line 2 is a JSON list, expected an object"):
        load_records(tmp_path / "list.jsonl")
    (tmp_path / "broken.json").write_text('[\n{"problem": "p",\n "answer" "1"}]')
    with pytest.raises(ValueError, match=r"broken.json: line 3 is not valid JSON \(Expecting ':' delimiter"):
        load_records(tmp_path / "broken.json")
    (tmp_path / "object.json").write_text('{"problem": "p", "answer": "1"}')
    with pytest.raises(ValueError, match=r"object.json: expected a JSON list of objects at the top level"):
        load_records(tmp_path / "object.json")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"bad.parquet is not a readable parquet file \("):
        load_records(tmp_path / "bad.parquet")


def test_rows_missing_fields_name_row_and_field(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"problem": "p", "answer": "1"}, {"problem": "q"}])
    with pytest.raises(ValueError, match=r"rows.jsonl: line 2 lacks field 'answer'; add it \(the rows are read as "
                                         r"the 'aime' schema, whose fields every row needs\)"):
        load_records(path)
    path = write_jsonl(tmp_path / "generic.jsonl", [{"prompt": "p", "gold": "1"}, {"gold": "2"}])
    with pytest.raises(ValueError, match=r"generic.jsonl: line 2 lacks field 'prompt' or 'question'"):
        load_records(path)
    path = write_jsonl(tmp_path / "blank.jsonl", [{"problem": "  ", "answer": "1"}])
    with pytest.raises(ValueError, match=r"blank.jsonl: line 1 has an empty problem or one that is neither text nor "
                                         r"chat messages .*: '  '; fix or drop the row"):
        load_records(path)
    path = write_jsonl(tmp_path / "odd.jsonl", [{"text": "p", "label": "1"}])
    # no prompt field: a reward of one's own would not help (it was suggested)
    with pytest.raises(ValueError, match=r"odd.jsonl: cannot tell the schema from the fields of line 1 "
                                         r"\['label', 'text'\]; expected problem\|prompt\|question \+ solution.*"
                                         r"rename the fields \(the problem must be in a prompt, question or problem "
                                         r"field\)$"):
        load_records(path)
    labelled = write_jsonl(tmp_path / "labelled.jsonl", [{"question": "p", "label": "1"}])
    with pytest.raises(ValueError, match=r"rename the fields, or grade with a reward of your own that reads them "
                                         r"\(reward_funcs= / TaskSpec.rewards; evaluate: --reward\)$"):
        load_records(labelled)
    with pytest.raises(ValueError, match=r"odd.jsonl: line 1 lacks field 'prompt' or 'question'"):
        load_records(path, fmt="generic")
    path = write_jsonl(tmp_path / "nogold.jsonl", [{"problem": "p", "answer": " "}, {"problem": "q", "answer": None}])
    with pytest.raises(ValueError, match=r"nogold.jsonl: none of its 2 rows has a usable gold answer"):
        load_records(path)
    with pytest.raises(ValueError, match=r"fmt='gsm8k' is not a known schema"):
        load_records(path, fmt="gsm8k")
    with pytest.raises(ValueError, match=r"on_bad_gold='drop'; use 'skip' or 'error'"):
        load_records(path, on_bad_gold="drop")


# --- pipeline ------------------------------------------------------------------------------------------------------


def toy_records(n):
    return [{"prompt": f"p{i}", "gold": str(i), "level": None, "id": f"r{i}"} for i in range(n)]


def ids(batches):
    return [[r["id"] for r in batch] for batch in batches]


def take(iterator, n):
    return ids(next(iterator) for _ in range(n))


def test_same_seed_same_order_other_seed_other_order():
    records = toy_records(40)
    first = take(make_iterator(records, batch_size=4, seed=7), 10)
    assert first == take(make_iterator(records, batch_size=4, seed=7), 10)
    assert first != take(make_iterator(records, batch_size=4, seed=8), 10)
    batch = next(make_iterator(records, batch_size=4, seed=7))
    assert isinstance(batch, list) and len(batch) == 4 and batch[0] in records
    batch[0]["tokens"] = [1, 2]  # callers may annotate a batch without touching the source records
    assert all("tokens" not in r for r in records)


def test_adjacent_seeds_do_not_share_epochs_and_older_states_keep_their_order():
    records = toy_records(12)
    epochs = {seed: [tuple(sum(take(it, 4), [])) for _ in range(3)]
              for seed in (0, 1) for it in [make_iterator(records, batch_size=3, seed=seed)]}
    # grain shuffles epoch e with shuffle_seed + e: with the run seed as is, seed 1's first epoch was seed 0's second.
    assert not set(epochs[0]) & set(epochs[1])
    # A state saved before "shuffle" was recorded resumes in the order its run started with: grain's on the seed.
    legacy = grain.MapDataset.source(records).shuffle(seed=1)
    expected = [legacy[i]["id"] for i in range(12)] + [legacy[12 + i]["id"] for i in range(12)]
    resumed = make_iterator(records, batch_size=3, seed=1)
    resumed.set_state({k: v for k, v in resumed.get_state().items() if k != "shuffle"} | {"next_index": 0})
    assert sum(take(resumed, 8), []) == expected
    assert resumed.get_state()["shuffle"] == "plain"  # and goes on saving that order


def test_each_epoch_is_a_fresh_permutation_of_all_records():
    records = toy_records(12)
    iterator = make_iterator(records, batch_size=3, seed=0)
    assert iterator.batches_per_epoch == 4
    epochs = [sum(take(iterator, 4), []) for _ in range(3)]
    assert all(sorted(epoch) == sorted(r["id"] for r in records) for epoch in epochs)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_shards_are_disjoint_and_cover_every_epoch():
    records = toy_records(24)
    shards = [make_iterator(records, batch_size=4, seed=3, shard_index=i, shard_count=3) for i in range(3)]
    assert {s.batches_per_epoch for s in shards} == {2}
    for _ in range(2):  # two epochs: reshuffled globally, so each shard sees other records each epoch
        parts = [sum(take(s, 2), []) for s in shards]
        assert sorted(sum(parts, [])) == sorted(r["id"] for r in records)
    uneven = [make_iterator(toy_records(25), batch_size=4, seed=3, shard_index=i, shard_count=3) for i in range(3)]
    parts = [set(sum(take(s, 2), [])) for s in uneven]  # 25 -> 24 kept, 8 per shard: equal steps on every host
    assert sum(map(len, parts)) == 24 and len(set.union(*parts)) == 24


def test_state_resumes_the_exact_order_across_epochs():
    records = toy_records(10)
    original = make_iterator(records, batch_size=3, seed=5, shard_index=1, shard_count=2)
    take(original, 4)  # 1 batch per epoch for this shard: already 4 epochs in
    state = json.loads(json.dumps(original.get_state()))
    digest = state.pop("records_sha256")
    assert state == {"next_index": 4, "seed": 5, "batch_size": 3, "shard_count": 2, "num_records": 10,
                     "shuffle": "sha256"}
    assert digest == pipeline.fingerprint(records) and len(digest) == 16
    resumed = make_iterator(records, batch_size=3, seed=5, shard_index=1, shard_count=2)
    resumed.set_state(state)  # a state saved before the content was recorded: the count is all it can check
    assert take(resumed, 7) == take(original, 7)
    with pytest.raises(ValueError, match=r"shuffle='xor', which this rlvjax does not know"):
        make_iterator(records, batch_size=6, seed=5).set_state({**state, "shuffle": "xor"})
    state["records_sha256"] = digest
    with pytest.raises(ValueError, match=r"data state was saved for a different pipeline: batch_size \(saved 3, "
                                         r"now 2\); resume with the same data"):
        make_iterator(records, batch_size=2, seed=5, shard_index=1, shard_count=2).set_state(state)
    # Another record of the same count (a data file edited in place) is another data set.
    edited = [*records[:-1], {**records[-1], "prompt": "edited"}]
    with pytest.raises(ValueError, match=rf"records_sha256 \(saved {digest}, now {pipeline.fingerprint(edited)}\)"):
        make_iterator(edited, batch_size=3, seed=5, shard_index=1, shard_count=2).set_state(state)
    # A row without an id is named for its file ("a-0"): the same rows in a renamed file are the same data (their
    # resume was refused as another pipeline); a state saved when the ids were hashed too resumes as well
    renamed = [{**r, "id": f"renamed-{i}"} for i, r in enumerate(records)]
    again = make_iterator(renamed, batch_size=3, seed=5, shard_index=1, shard_count=2)
    again.set_state(state)
    expected = take(make_iterator(records, batch_size=3, seed=5, shard_index=1, shard_count=2), 7)[4:]
    assert take(again, 3) == [[f"renamed-{i[1:]}" for i in batch] for batch in expected]
    with_ids = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:16]
    make_iterator(records, batch_size=3, seed=5, shard_index=1, shard_count=2).set_state(
        {**state, "records_sha256": with_ids})


def test_a_renamed_data_file_holds_the_same_data(tmp_path):
    rows = "".join(json.dumps({"prompt": f"{i}+1=", "gold": str(i + 1)}) + "\n" for i in range(4))
    (tmp_path / "a.jsonl").write_text(rows)
    (tmp_path / "renamed.jsonl").write_text(rows)
    a, renamed = (sources.load_records(tmp_path / name)[0] for name in ("a.jsonl", "renamed.jsonl"))
    assert [r["id"] for r in a] == ["a-0", "a-1", "a-2", "a-3"] and renamed[0]["id"] == "renamed-0"
    assert pipeline.fingerprint(a) == pipeline.fingerprint(renamed)


def test_num_epochs_bounds_the_stream_and_bad_arguments_are_named():
    assert len(list(make_iterator(toy_records(10), batch_size=3, seed=0, num_epochs=2))) == 6
    with pytest.raises(ValueError, match=r"5 records over 2 processes cannot fill one batch of 3 per process"):
        make_iterator(toy_records(5), batch_size=3, seed=0, shard_count=2)
    with pytest.raises(ValueError, match=r"shard_index=2, shard_count=2; need 0 <= shard_index < shard_count"):
        make_iterator(toy_records(5), batch_size=1, seed=0, shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match=r"num_epochs=0; need a positive count or None"):
        make_iterator(toy_records(5), batch_size=1, seed=0, num_epochs=0)


def test_a_nan_gold_is_no_answer(tmp_path):
    path = tmp_path / "golds.jsonl"
    path.write_text('{"problem": "1+1?", "answer": NaN}\n{"problem": "2+2?", "answer": "4"}\n')
    records, stats = load_records(path)
    assert [r["gold"] for r in records] == ["4"] and stats.skipped_bad_gold == 1
    with pytest.raises(ValueError, match="line 1 has no usable gold answer"):
        load_records(path, on_bad_gold="error")


def test_a_blank_gold_field_gives_way_to_a_filled_one(tmp_path):
    """A blank "gold" beside a filled "answer" skipped the row, telling the user to give it an answer in 'gold' or
    'answer' (a null "gold" gave way)."""
    path = tmp_path / "both.jsonl"
    rows = [{"prompt": "x", "gold": "", "answer": "5"}, {"prompt": "y", "gold": None, "answer": "6"},
            {"prompt": "z", "gold": " ", "answer": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, stats = load_records(path)
    assert [r["gold"] for r in records] == ["5", "6"] and stats.bad_gold_rows == ("line 3",)


def test_golds_no_completion_could_match_are_skipped_and_a_bom_is_read(tmp_path):
    path = tmp_path / "golds.jsonl"  # saved by a Windows editor: UTF-8 with a byte-order mark
    rows = [{"problem": "a", "answer": "\\frac{1}{2"}, {"problem": "b", "answer": "9" * 1001},
            {"problem": "c", "answer": "\\{1, 2\\}"}]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode())
    records, stats = load_records(path)
    assert [r["gold"] for r in records] == ["\\{1, 2\\}"] and stats.bad_gold_rows == ("line 1", "line 2")
    (tmp_path / "golds.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    assert [r["gold"] for r in load_records(tmp_path / "golds.json")[0]] == ["\\{1, 2\\}"]


def test_an_answer_column_gives_the_answer_it_states_and_a_sentence_is_no_gold(tmp_path, caplog):
    """Answer columns were golds verbatim: against "Answer: 12" or "Therefore the total is 12 apples." every right
    completion graded wrong, without a word. A label or GSM8K's "####" alone is stripped; a sentence or a working
    stating no answer is a bad gold (skipped and named); answers in words, boxes and "The answer is X" stay."""
    import logging

    from rlvjax.rewards import math as rm

    golds = ["Answer: 12", "**Final Answer:** 12", "#### 12", "Therefore the total is 12 apples.",
             "First 3 + 4 = 7.\nThen 7 + 5 = 12.", "The answer is $12$.", "\\boxed{12}", "12 apples", "$12",
             "\\text{Evelyn}", "all real numbers", "If and only if", "$5$ and $6$"]
    write_jsonl(tmp_path / "a.jsonl", [{"question": f"q{i}", "answer": g} for i, g in enumerate(golds)])
    with caplog.at_level(logging.WARNING):
        records, stats = load_records(tmp_path / "a.jsonl")
    assert [r["gold"] for r in records] == ["12", "12", "12", "The answer is $12$.", "\\boxed{12}", "12 apples", "$12",
                                            "\\text{Evelyn}", "all real numbers", "If and only if", "$5$ and $6$"]
    assert stats.bad_gold_rows == ("line 4", "line 5")
    assert "the answer itself, not a sentence or a working" in caplog.text
    assert all(rm.is_correct("\\boxed{12}", r["gold"]) for r in records[:6])
    assert rm.is_correct("\\boxed{12}", "Answer: 12")  # the grader reads the label too, since 2026-12-07


def test_an_eval_file_cut_to_num_eval_says_so(tmp_path, caplog):
    from rlvjax.data import tasks
    from rlvjax.experiment import TaskSpec

    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps({"problem": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(5)))
    spec = TaskSpec(name="file", train_file=str(path), eval_file=str(path), num_eval=3, prompt_format="as_is")
    evals = tasks.get("file").records(spec, None)[1]
    assert [r["gold"] for r in evals] == ["1", "2", "3"]
    assert f"{path}: evaluating its first 3 of 5 problems (TaskSpec.num_eval = 3); set TaskSpec.num_eval = 5" \
        in caplog.text


def test_prompts_the_tokenizer_cannot_encode_are_refused():
    from conftest import word_tokenizer

    from rlvjax import experiment
    from rlvjax.data.tokenizer import build_tokenizer

    word_tokenizer_96 = word_tokenizer(96)
    built_in = build_tokenizer()  # digits, operators, newline and space: drops anything else
    experiment.check_encodable(built_in, [{"id": "a", "prompt": "12 + 3 =\n"}], "train")
    with pytest.raises(ValueError, match=r"^1 eval prompt\(s\) hold characters the tokenizer cannot encode \(record "
                                         r"b: '计', '算'\); use a model"):
        experiment.check_encodable(built_in, [{"id": "a", "prompt": "1 + 1 ="}, {"id": "b", "prompt": "计算 1 + 1"}],
                                   "eval")
    # A word-level tokenizer encodes unknown words as <unk>: refused too, naming the first such record.
    experiment.check_encodable(word_tokenizer_96, [{"id": "c", "prompt": "w1 w2 Yes"}])
    with pytest.raises(ValueError, match=r"^2 prompt\(s\) hold .* \(record d: 'z', 'e', 'b', 'r', 'a'; and 1 more "
                                         r"record\(s\)\)"):
        experiment.check_encodable(word_tokenizer_96, [{"id": "d", "prompt": "w1 zebra"}, {"prompt": "q"}])


def test_a_reward_without_golds_keeps_rows_whose_gold_is_empty():
    """require_gold=False (a reward that reads other columns): a row needs only a problem, even where the data has an
    answer column with gaps; with golds required such rows are skipped."""
    from rlvjax.data.sources import from_rows

    rows = [{"prompt": "a", "answer": None, "target": 3}, {"prompt": "b", "answer": "1", "target": 4},
            {"prompt": "c", "answer": "", "target": 5}]
    kept, stats = from_rows(rows, require_gold=False)
    assert [(r["prompt"], r["gold"], r["target"]) for r in kept] == [("a", None, 3), ("b", "1", 4), ("c", None, 5)]
    assert stats.skipped_bad_gold == 0
    graded, stats = from_rows(rows)
    assert [r["prompt"] for r in graded] == ["b"] and stats.skipped_bad_gold == 2
    # A pandas level column with gaps holds floats and NaN: 3.0 is level 3, NaN none.
    import numpy as np

    levels = [{"problem": "p", "answer": "1", "level": 3.0}, {"problem": "q", "answer": "2", "level": float("nan")},
              {"problem": "r", "answer": "3", "level": np.int64(4)}]
    assert [r["level"] for r in from_rows(levels)[0]] == [3, None, 4]
    solutions = [{"problem": "p", "solution": "no box here"}, {"problem": "q", "solution": "so \\boxed{2}"}]
    assert [r["gold"] for r in from_rows(solutions, require_gold=False)[0]] == [None, "2"]
    # A prompt with a reference solution for a reward to read: it used to be refused as an unknown schema.
    graded_by_reward = from_rows([{"prompt": "p", "solution": "s"}], require_gold=False)[0]
    assert [(r["prompt"], r["solution"]) for r in graded_by_reward] == [("p", "s")]
    # A row that leaves the answer out (a jsonl line) is a row with a null answer (a parquet cell): it was refused.
    left_out = from_rows([{"prompt": "a", "answer": "1"}, {"prompt": "b"}], require_gold=False)[0]
    assert [(r["prompt"], r["gold"]) for r in left_out] == [("a", "1"), ("b", None)]
    # A gold column of the user's reward reaches it as the row holds it: it was read as a math answer (a list, a long
    # or unbalanced text became None, "... #### 7" became "7", 3.50 "3.5")
    golds = [["a", "b"], "x" * 5000, "{unbalanced", "step 1\n#### 7", 3.50]
    assert [r["gold"] for r in from_rows([{"prompt": "p", "gold": g} for g in golds], require_gold=False)[0]] == golds


def test_numbers_of_any_library_are_gold_answers():
    import decimal

    import numpy as np

    from rlvjax.data.sources import from_rows

    rows = [{"problem": str(i), "answer": a} for i, a in enumerate(
        [np.int64(204), np.float64(3.0), decimal.Decimal("0.10"), np.float32(2.5), decimal.Decimal("NaN"), True])]
    kept, stats = from_rows(rows)  # numpy-built rows, a with_format("numpy") dataset, a parquet decimal column
    assert [r["gold"] for r in kept] == ["204", "3", "0.10", "2.5"] and stats.skipped_bad_gold == 2
    # Small numbers are written without an exponent: '1e-05' reads as 1 * e - 5 to the grader, so a right answer
    # scored 0. A float32 keeps its own digits, a decimal column its own.
    from rlvjax.rewards.math import is_correct

    small = [0.00001, np.float32(2.5e-5), np.float32(0.1), decimal.Decimal("1.0E-7")]
    golds = [r["gold"] for r in from_rows([{"problem": str(i), "answer": a} for i, a in enumerate(small)])[0]]
    assert golds == ["0.00001", "0.000025", "0.1", "0.00000010"]
    assert is_correct("\\boxed{0.00001}", golds[0]) and is_correct("\\boxed{1 \\times 10^{-7}}", golds[3])
    gsm8k = {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
             "answer": "She sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 in all.\n#### 72"}
    assert from_rows([gsm8k])[0][0]["gold"] == "72"  # it was the whole rationale, which no answer equals


def test_prompts_are_led_by_the_tokenizers_own_bos_once():
    """A tokenizer that puts BOS before a text (Llama's) gets it on every prompt, as transformers' and vLLM's
    generate give it (prompts were encoded without it: a base Llama model saw no BOS under --raw_prompts), but not
    twice where a chat template already wrote it; the arithmetic tokenizer (Qwen2's convention) adds nothing."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    from rlvjax.data.encoding import encode_prompts, prompt_start
    from rlvjax.data.tokenizer import build_tokenizer

    qwen_like = build_tokenizer()
    assert prompt_start(qwen_like) == [] and encode_prompts(qwen_like, ["1+2="]) == [qwen_like.encode("1+2=")]
    backend = Tokenizer.from_str(qwen_like.backend_tokenizer.to_str())
    bos, bos_text = qwen_like.eos_token_id, qwen_like.eos_token  # a special token, standing in for Llama's <s>
    backend.post_processor = processors.TemplateProcessing(single=f"{bos_text} $A", special_tokens=[(bos_text, bos)])
    llama_like = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos_text)
    plain = llama_like.encode("1+2=", add_special_tokens=False)
    assert llama_like.encode("1+2=") == [bos, *plain]  # the tokenizer does add it
    assert prompt_start(llama_like) == [bos]
    assert encode_prompts(llama_like, ["1+2=", f"{bos_text}1+2="]) == [[bos, *plain], [bos, *plain]]
    eos = qwen_like.convert_tokens_to_ids("<pad>")  # a tokenizer that ends a text too (Llama-2's add_eos_token)
    backend.post_processor = processors.TemplateProcessing(single=f"{bos_text} $A <pad>",
                                                           special_tokens=[(bos_text, bos), ("<pad>", eos)])
    both = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos_text)
    assert both.encode("1+2=") == [bos, *plain, eos]
    assert prompt_start(both) == [bos] and encode_prompts(both, ["1+2="]) == [[bos, *plain]]  # nothing appended


def test_a_split_of_a_local_eval_file_is_refused(tmp_path):
    """A file has no splits: TaskSpec.eval_split = 'validation' on a local eval file evaluated the same rows as
    'test' (and 'nonsense' too), so "choose on validation, report on test" silently chose on the test problems."""
    from rlvjax.experiment import TaskSpec

    (tmp_path / "eval.jsonl").write_text('{"prompt": "1+1", "gold": "2"}\n')
    with pytest.raises(ValueError, match=r"^TaskSpec.eval_split='validation' picks a split of a datasets id or "
                                         r"directory; eval_file .*eval.jsonl is a file: point eval_file at"):
        TaskSpec(name="file", train_file=str(tmp_path / "eval.jsonl"), eval_file=str(tmp_path / "eval.jsonl"),
                 eval_split="validation")
    TaskSpec(name="file", train_file=str(tmp_path / "eval.jsonl"), eval_file=str(tmp_path / "eval.jsonl"))


# the job's data split over processes (multi-host jobs): pure Python, so in the fast tier
def test_global_batch_does_not_depend_on_the_process_count():
    records = [{"id": i} for i in range(27)]
    take = lambda it: [[r["id"] for r in next(it)] for _ in range(10)]  # 4 batches an epoch: crosses epochs
    one = take(make_iterator(records, batch_size=6, seed=3))
    for count in (2, 3):
        shards = [take(make_iterator(records, batch_size=6 // count, seed=3, shard_index=i, shard_count=count))
                  for i in range(count)]
        assert [sum((shard[k] for shard in shards), []) for k in range(10)] == one


def test_a_data_position_resumes_on_another_process_count():
    records = [{"id": i} for i in range(27)]
    two_hosts = [make_iterator(records, batch_size=3, seed=3, shard_index=i, shard_count=2) for i in range(2)]
    for _ in range(5):  # into the second epoch
        [next(it) for it in two_hosts]
    state = json.loads(json.dumps(two_hosts[0].get_state()))
    assert state == two_hosts[1].get_state()
    one_host = make_iterator(records, batch_size=6, seed=3)
    one_host.set_state(state)
    for _ in range(4):
        assert [r["id"] for r in next(one_host)] == [r["id"] for it in two_hosts for r in next(it)]
    with pytest.raises(ValueError, match=r"batch_size \(saved 3, now 4\), shard_count \(saved 2, now 1\); resume "
                                         r"with the same data, seed and global batch size"):
        make_iterator(records, batch_size=4, seed=3).set_state(state)


def test_registries_keep_rlvjax_names_and_import_module_names(tmp_path, monkeypatch):
    """A user's task or reward named like rlvjax's replaced it for every run in the process ("math", "file"), silently
    (review 2026-12-06); now refused. "module:attribute" imports the module, so a new process knows the name."""
    from rlvjax.data import tasks
    from rlvjax.rewards import registry

    with pytest.raises(ValueError, match="task 'file' is rlvjax's own; register yours under another name"):
        tasks.register("file", tasks.get("digit"))
    with pytest.raises(ValueError, match="reward 'math' is rlvjax's own; register yours under another name"):
        registry.register("math")(lambda prompts, completions, **kw: [0.0] * len(completions))
    assert tasks.get("file").generated is False and registry.resolve("math") is registry.math_reward
    (tmp_path / "my_task.py").write_text("from rlvjax.data import tasks\nSUMS = tasks.get('digit')\nNOT_A_TASK = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert tasks.get("my_task:SUMS") is tasks.get("digit")
    with pytest.raises(ValueError, match="TaskSpec.name: 'my_task:NOT_A_TASK' is a int, not an rlvjax.data.tasks.Task"):
        tasks.get("my_task:NOT_A_TASK")
    with pytest.raises(ValueError, match=r"unknown task 'sums'; .*'module:attribute'"):
        tasks.get("sums")
