"""The Python API (rlvjax.RLVTrainer / RLVConfig): a user's own JSONL, reward function and verify question, in
15 lines; evaluated and saved; the run's config.gin reproduces it through the CLI."""

import contextlib
import dataclasses
import inspect
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

import rlvjax
from rlvjax import cli
from rlvjax.cli import UserError
from rlvjax.rewards import registry
import forkserver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTION = "1+1=2"  # what the built-in arithmetic tokenizer can spell: digits and operators

USER_CODE = '''
import rlvjax
from my_rewards import exact_match

args = rlvjax.RLVConfig(output_dir="run", num_steps=2, batch_size=4, group_size=4, max_new_tokens=4,
                        learning_rate=1e-3, verify_question="1+1=2")
trainer = rlvjax.RLVTrainer(reward_funcs=exact_match, train_dataset="data.jsonl", eval_dataset="data.jsonl",
                            args=args)
trainer.train()
evaluation = trainer.evaluate(num_samples=4)
trainer.save_model("exported")
'''

REWARD_MODULE = '''
CALLS = []

def exact_match(prompts, completions, target, **columns):
    CALLS.append({"prompts": list(prompts), "completions": list(completions), "target": list(target),
                  "columns": sorted(columns)})
    return [float(c.strip() == t) for c, t in zip(completions, target)]
'''


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """The user's directory after running USER_CODE in it (in this process: the API, not the CLI)."""
    root = tmp_path_factory.mktemp("user")
    (root / "my_rewards.py").write_text(REWARD_MODULE)
    rng = np.random.default_rng(0)
    rows = [{"prompt": f"{a}+{b}=", "target": str(a + b), "source": "mine"}
            for a, b in rng.integers(0, 5, size=(32, 2)).tolist()]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len([line for line in USER_CODE.strip().splitlines() if line.strip()]) <= 15
    cwd, path = os.getcwd(), list(sys.path)
    # A worker may set this fixture up twice (worksteal interleaves modules): import this directory's module.
    sys.modules.pop("my_rewards", None)
    os.chdir(root)
    sys.path.insert(0, str(root))
    try:
        namespace = {}
        exec(compile(USER_CODE, "user_code", "exec"), namespace)
        import my_rewards
    finally:
        os.chdir(cwd)
        sys.path[:] = path
    return root, namespace, my_rewards.CALLS, rows


def test_the_reward_function_gets_every_column_and_grades_what_was_sampled(user_run):
    root, _, calls, rows = user_run
    by_prompt = {r["prompt"]: r["target"] for r in rows}
    training = [c for c in calls if len(c["completions"]) == 16]  # 4 prompts x 4 samples per step
    assert len(training) == 2
    for call in training:
        assert call["target"] == [by_prompt[p] for p in call["prompts"]]  # aligned row by row
        # every other column of the user's data, the sampled ids and the trainer's state, as TRL passes them
        assert call["columns"] == ["completion_ids", "id", "level", "source", "trainer_state"]
    # The logged rewards are the function's values for the logged completions.
    samples = [json.loads(line) for line in (root / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples
    for s in samples:
        assert s["reward"] == float(s["completion"].strip() == by_prompt[s["prompt"]])


def test_the_verify_question_is_asked_at_training_and_test_time_and_saved(user_run):
    root, namespace, _, _ = user_run
    trainer = namespace["trainer"]
    assert trainer.config.verifier.question == QUESTION
    stored = json.loads((root / "run" / "config.json").read_text())
    assert stored["verifier"]["question"] == QUESTION and stored["task"]["rewards"] == ["my_rewards:exact_match"]
    saved = json.loads((root / "exported" / "rlvjax_verifier.json").read_text())
    assert saved["question"] == QUESTION
    model, tokenizer = rlvjax.load_hf(root / "exported")
    from rlvjax.rl import verifier
    from rlvjax.rl.verifier import base_verify_prompt

    suffix = verifier.tokens(tokenizer, QUESTION).suffix
    assert tokenizer.decode(suffix) == base_verify_prompt(QUESTION)  # one token of the built-in tokenizer
    assert len(suffix) == 1
    # Another trainer's args on the run: its evaluate() asked their question of the policy, silently.
    other = rlvjax.RLVTrainer(reward_funcs=namespace["exact_match"],
                              args=rlvjax.RLVConfig(output_dir=root / "run", verify_question="2+2=5"))
    with pytest.raises(ValueError, match="^" + re.escape(f"{root / 'run' / 'final'} was trained with verify_question="
                                                         f"{QUESTION!r}, these args give verify_question='2+2=5'; "
                                                         "evaluate with the run's own args")):
        other.evaluate(num_samples=4)
    # ... and another reward (the default "math", where the run was trained on the user's): refused alike
    with pytest.raises(ValueError, match=r"was trained with reward_funcs=\('my_rewards:exact_match',\), these args "
                                         r"give reward_funcs=\('math',\)"):
        rlvjax.RLVTrainer(args=rlvjax.RLVConfig(output_dir=root / "run")).evaluate(num_samples=4)


@pytest.mark.slow
def test_the_export_is_evaluated_as_its_run_rendered_prompts_and_sampled(user_run, tmp_path):
    """``evaluate --model_dir`` on an API run's export wrapped its raw prompts in the Qwen2.5-Math chat format
    (here refused: the arithmetic tokenizer cannot spell the instruction; a real tokenizer's run scored pass@1 0 for
    0.24) and sampled at 1.0 for 1024 tokens. The export now says how its run asked (rlvjax_sampling.json)."""
    import shutil

    root, namespace, _, rows = user_run
    temperature = namespace["trainer"].config.rl.temperature
    saved = json.loads((root / "exported" / "rlvjax_sampling.json").read_text())
    assert saved == {"prompt_format": "as_is", "temperature": temperature, "top_p": 1.0, "top_k": 0,
                     "max_new_tokens": 4}
    from transformers import GenerationConfig  # generate samples it alike (it decoded greedily)

    generation = GenerationConfig.from_pretrained(root / "exported", local_files_only=True)
    assert (generation.do_sample, generation.temperature, generation.top_p, generation.top_k,
            generation.max_new_tokens) == (True, temperature, 1.0, 0, 4)
    # a copy whose run sampled at 0.7, top-p 0.9 and top-k 1 for 2 tokens: none is evaluate's own default (1.0, off,
    # 1024; top-p and top-k were not recorded, and the export was evaluated without them: review 2026-12-07)
    export = shutil.copytree(root / "exported", tmp_path / "export")
    (export / "rlvjax_sampling.json").write_text(json.dumps({**saved, "temperature": 0.7, "max_new_tokens": 2,
                                                             "top_p": 0.9, "top_k": 1}))
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["prompt"], "answer": r["target"]}) + "\n" for r in rows[:8]))
    out = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--model_dir", str(export), "--data",
                          str(data), "--num_samples", "2", "--out", str(tmp_path / "eval")],
                         timeout=300, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    evaluation = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert evaluation["evaluated"]["prompt_format"] == "as_is"
    assert evaluation["headline_temperature"] == 0.7 and evaluation["evaluated"]["settings"]["max_new_tokens"] == 2
    assert (evaluation["evaluated"]["settings"]["top_p"], evaluation["evaluated"]["settings"]["top_k"]) == (0.9, 1)
    samples = [json.loads(line) for line in (tmp_path / "eval" / "eval_samples.jsonl").read_text().splitlines()]
    assert {s["prompt"] for s in samples} == {r["prompt"] for r in rows[:8]} and max(s["tokens"] for s in samples) <= 2
    for problem in range(8):  # top-k 1: each problem's two samples are its greedy completion
        assert len({s["completion"] for s in samples if s["problem"] == problem}) == 1
    # a damaged file is one line, nothing written
    damaged = tmp_path / "damaged"
    shutil.copytree(root / "exported", damaged)
    (damaged / "rlvjax_sampling.json").write_text(json.dumps({**saved, "prompt_format": "latex"}))
    bad = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--model_dir", str(damaged), "--data", str(data),
                          "--out", str(tmp_path / "bad")], timeout=300, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.strip().endswith(
        f"{damaged / 'rlvjax_sampling.json'} is damaged: it needs prompt_format (one of math, as_is, chat), "
        "temperature > 0, top_p in (0, 1], top_k >= 0 and max_new_tokens >= 1; fix it, or delete it to evaluate "
        "with the flags' defaults"), bad.stderr[-2000:]
    assert not (tmp_path / "bad").exists()
    from rlvjax import run_sampling

    (damaged / "rlvjax_sampling.json").write_text(json.dumps({**saved, "top_p": 1.5}))
    with pytest.raises(ValueError, match="is damaged: it needs prompt_format"):
        run_sampling.load(damaged)
    older = {k: v for k, v in saved.items() if k not in ("top_p", "top_k")}  # an export from before 2026-12-07
    (damaged / "rlvjax_sampling.json").write_text(json.dumps(older))
    assert run_sampling.load(damaged) == {**older, "top_p": 1.0, "top_k": 0}


def test_a_new_session_evaluates_the_runs_own_problems_and_other_data_beside_them(user_run):
    """A trainer rebuilt later without data evaluated the default arithmetic task (200 generated problems) and
    wrote it over the run's report as "the run's own"; one given other eval rows replaced that report too."""
    root, namespace, _, rows = user_run
    own = json.loads((root / "run" / "eval" / "final" / "eval.json").read_text())
    later = rlvjax.RLVTrainer(reward_funcs=namespace["exact_match"], args=rlvjax.RLVConfig(output_dir=root / "run"))
    again = later.evaluate(num_samples=4)
    assert again["evaluated"]["data"] is None and again == own  # the run's own problems, keys and report
    others = [{"prompt": "4+4=", "target": "8"}, {"prompt": "1+2=", "target": "3"}]
    other = rlvjax.RLVTrainer(reward_funcs=namespace["exact_match"], train_dataset=rows, eval_dataset=others,
                              args=rlvjax.RLVConfig(output_dir=root / "run"))
    elsewhere = other.evaluate(num_samples=4)
    assert elsewhere["evaluated"]["data"].startswith("eval_dataset:")
    from rlvjax.reports import temperature_key

    assert elsewhere["reports"][temperature_key(elsewhere["headline_temperature"])]["final"]["num_problems"] == 2
    written = root / "run" / "eval" / f"final-{elsewhere['evaluated']['data'].replace(':', '-')}" / "eval.json"
    assert json.loads(written.read_text()) == elsewhere  # returned as written (NaN as None, tuples as lists)
    assert json.loads((root / "run" / "eval" / "final" / "eval.json").read_text()) == own
    # A finished run whose checkpoints were deleted after the export: its config.json and final/ are enough
    import shutil

    kept = root / "kept"
    shutil.copytree(root / "run", kept, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    alone = rlvjax.RLVTrainer(reward_funcs=namespace["exact_match"], args=rlvjax.RLVConfig(output_dir=kept))
    assert alone.evaluate(num_samples=4)["reports"] == own["reports"]


def test_evaluate_returns_and_writes_the_report(user_run):
    root, namespace, calls, _ = user_run
    evaluation = namespace["evaluation"]
    out = root / "run" / "eval" / "final"  # where `python -m rlvjax.evaluate --workdir run` writes
    assert json.loads((out / "eval.json").read_text()) == json.loads(json.dumps(evaluation))
    from rlvjax.reports import temperature_key

    final = evaluation["reports"][temperature_key(evaluation["headline_temperature"])]["final"]
    assert final["num_problems"] == 32 and final["num_samples"] == 4
    samples = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 32 * 4 and [s["problem"] for s in samples[:5]] == [0, 0, 0, 0, 1]
    assert any(len(c["completions"]) == 32 * 4 for c in calls)  # evaluate graded with the user's reward
    # Where a completion boxes no answer, under this reward the votes group the whole completion, and best-of-1 is
    # pass@1 (it was 0: every unboxed sample counted as no answer, whatever its reward)
    from rlvjax.rewards.answers import extract_answer

    answers = [s["answer"] for s in samples]
    assert answers == [extract_answer(s["completion"]) or s["completion"].strip() or None for s in samples]
    assert any(extract_answer(s["completion"]) is None and s["answer"] for s in samples)
    assert any(s["correct"] for s in samples)
    assert final["pass@1"] > 0 and final["accuracy"]["best_of_n"]["1"] == pytest.approx(final["pass@1"])  # exact
    assert final["conventions"]["grouping"] == "string"  # what the votes used, not the math default asked for
    for vote in ("majority", "weighted"):  # over 1000 random subsets
        assert final["accuracy"][vote]["1"] == pytest.approx(final["pass@1"], abs=0.003), vote


SIGTERM_WHILE_WRITING = """
import sys, time
import rlvjax
from rlvjax import cli, reports
from my_rewards import exact_match

real = reports.write_samples
def slow(*args, **kwargs):
    real(*args, **kwargs)
    print("reached", flush=True)
    time.sleep(120)
reports.write_samples = slow
trainer = rlvjax.RLVTrainer(reward_funcs=exact_match, args=rlvjax.RLVConfig(output_dir="run"))
try:
    trainer.evaluate(num_samples=2, out=sys.argv[1])
except cli.Preempted as e:
    print(e, file=sys.stderr)
    sys.exit(3)
"""


@pytest.mark.slow
def test_a_sigterm_while_the_api_writes_an_evaluation_removes_its_files_and_raises(user_run, tmp_path):
    """``trainer.evaluate`` had no SIGTERM handler: a scheduler's notice while the report was written ended the
    process with hidden partial files in the folder. It now raises ``Preempted`` where the script is, as
    ``train()`` does, with the staged files and the folders it made removed."""
    import signal

    root, _, _, _ = user_run
    out = tmp_path / "made" / "eval"
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_WHILE_WRITING, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=root,
                            env={**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{REPO}", "JAX_PLATFORMS": "cpu"})
    for line in proc.stdout:
        if line.strip() == "reached":
            break
    assert [p.name for p in out.iterdir() if p.name.startswith(".eval_samples.")]  # staged, not yet moved in
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err[-2000:]
    assert err.strip().splitlines()[-1] == f"SIGTERM while the evaluation's report was written: {out} is as it was"
    assert not (tmp_path / "made").exists()


def test_a_re_evaluation_with_other_settings_keeps_the_last_one(user_run, tmp_path):
    """``trainer.evaluate`` replaced ``eval/final`` whatever it held (another K or temperature: at K = 64 on MATH-500,
    hours of sampling); the CLI's ``evaluate --workdir``, writing the same folder, refuses alike."""
    root, namespace, _, _ = user_run
    folder = root / "run" / "eval" / "final"
    before = (folder / "eval.json").read_text()
    assert json.loads(before)["evaluated"]["settings"]["num_samples"] == 4
    trainer = rlvjax.RLVTrainer(reward_funcs=namespace["exact_match"], args=rlvjax.RLVConfig(output_dir=root / "run"))
    with pytest.raises(ValueError, match="^" + re.escape(
            f"{folder} holds an evaluation with num_samples=4 (this one: num_samples=2), which it would replace; pass "
            f"out= to keep both, or remove {folder} to replace it")):
        trainer.evaluate(num_samples=2)
    assert (folder / "eval.json").read_text() == before
    kept = trainer.evaluate(num_samples=2, out=tmp_path / "k2")
    assert json.loads((tmp_path / "k2" / "eval.json").read_text()) == json.loads(json.dumps(kept))
    assert kept["evaluated"]["settings"]["num_samples"] == 2 and (folder / "eval.json").read_text() == before
    # the CLI writes the same folder and records the same settings: another temperature or vote convention is
    # refused (the API recorded no conventions, and an evaluation with --score raw replaced it)
    temperature = json.loads(before)["evaluated"]["settings"]["temperature"]
    for flags, changed in ((["--temperature", "3"], f"temperature={temperature!r} (this one: temperature=3.0)"),
                           (["--score", "raw"], "score='normalized' (this one: score='raw')")):
        cli = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(root / "run"), "--num_samples",
                              "4", *flags], timeout=300, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"})
        assert cli.returncode == 2 and cli.stderr.strip().endswith(
            f"{folder} holds an evaluation with {changed}, which it would replace; pass --out to keep both, or "
            f"remove {folder} to replace it"), cli.stderr[-2000:]
    assert (folder / "eval.json").read_text() == before
    with pytest.raises(ValueError, match=r"^out='' names no folder; pass the directory for eval.json"):
        trainer.evaluate(num_samples=2, out="")
    with pytest.raises(ValueError, match=r"^out= \S+ is a training run: its eval.json is the run's own end-of-run "):
        trainer.evaluate(num_samples=2, out=root / "run")


@pytest.mark.slow
def test_the_written_config_reproduces_the_run_through_the_cli(user_run, tmp_path):
    root, _, _, _ = user_run
    env = {**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"}
    out = forkserver.run([sys.executable, "-m", "rlvjax.train", "--gin_file", str(root / "run" / "config.gin"),
                          "--workdir", str(tmp_path / "again")], timeout=600,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    timing = ("time/", "_per_s")
    logs = [[{k: v for k, v in json.loads(line).items() if not any(t in k for t in timing)}
             for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (root / "run", tmp_path / "again")]
    assert logs[0] == logs[1] and len(logs[0]) == 2


def test_in_memory_datasets_are_written_with_the_run_and_reproduce_it(tmp_path):
    rows = [{"prompt": f"{i}+1=", "target": str(i + 1), "n": np.int64(i)} for i in range(8)]  # numpy: pandas'
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=1, batch_size=4, group_size=2,
                            max_new_tokens=2)
    trainer = rlvjax.RLVTrainer(reward_funcs=length_penalty, train_dataset=rows,
                                args=args)
    trainer.train()
    written = [json.loads(line) for line in (tmp_path / "run" / "data" / "train.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["target"], r["n"]) for r in written] == [(r["prompt"], r["target"], int(r["n"]))
                                                                     for r in rows]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["task"]["name"] == "file"
    assert config["task"]["train_file"] == str(tmp_path / "run" / "data" / "train.jsonl")
    assert config["task"]["rewards"] == [f"{__name__}:length_penalty"]
    # A later session resumes it longer with a trainer built without the rows: the run's own data (the trainer put in
    # the built-in arithmetic task, and the resume refused it as other data)
    later = rlvjax.RLVTrainer(reward_funcs=length_penalty, args=dataclasses.replace(args, num_steps=2))
    later.train(resume=True)
    logged = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [1, 2]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["task"] == config["task"]


@pytest.mark.slow
def test_a_moved_run_reads_its_own_copy_of_the_data(tmp_path, capsys):
    """An API run names the datasets it wrote to WORKDIR/data/ by absolute path: moved, its resume (the API's and the
    CLI's) and ``evaluate --workdir`` failed with "no such data file" on its old place, and its own evaluation was
    "another model's". A data file the run was pointed at since, wherever it is, is read as given."""
    import shutil

    from rlvjax import outputs
    from rlvjax.config import written_values

    rows = [{"prompt": f"{i}+1=", "target": str(i + 1)} for i in range(8)]
    evals = [{"prompt": f"{i}+2=", "target": str(i + 2)} for i in range(2)]
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=1, batch_size=4, group_size=2,
                            max_new_tokens=2)
    trainer = rlvjax.RLVTrainer(reward_funcs=length_penalty, train_dataset=rows, eval_dataset=evals, args=args)
    trainer.train()
    trainer.evaluate(num_samples=2)  # run/eval/final, of run/final
    moved = shutil.move(tmp_path / "run", tmp_path / "moved")
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "tests"), "JAX_PLATFORMS": "cpu"}

    def cli(*args):
        out = forkserver.run([sys.executable, "-m", *args], timeout=300, cwd=REPO,
                             env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stderr

    cli("rlvjax.evaluate", "--workdir", str(moved), "--num_samples", "2")  # into its own eval/final, as before
    evaluated = json.loads((moved / "eval" / "final" / "eval.json").read_text())
    assert next(iter(evaluated["reports"].values()))["final"]["num_problems"] == 2  # the run's own eval rows
    later = rlvjax.RLVTrainer(reward_funcs=length_penalty, args=dataclasses.replace(args, output_dir=str(moved),
                                                                                     num_steps=2))
    capsys.readouterr()
    later.train(resume=True)
    # the data moved with the run is not a changed setting; the steps are
    assert "resuming with changed settings: run.num_steps 1 -> 2\n" in capsys.readouterr().err
    task = json.loads((moved / "config.json").read_text())["task"]
    assert (task["train_file"], task["eval_file"]) == (str(moved / "data" / "train.jsonl"),
                                                       str(moved / "data" / "eval.jsonl"))
    # moved again, and resumed by the CLI with another eval file, named data/eval.jsonl too: read as given
    again = shutil.move(moved, tmp_path / "again")
    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "data" / "eval.jsonl").write_text(json.dumps({"prompt": "9+9=", "target": "18"}) + "\n")
    said = cli("rlvjax.train", "--workdir", str(again), "--resume", "--gin_param", "RunConfig.num_steps = 3",
               "--gin_param", f"TaskSpec.eval_file = '{tmp_path / 'project' / 'data' / 'eval.jsonl'}'")
    changed = [line for line in said.splitlines() if "resuming with changed settings" in line]
    assert len(changed) == 1 and "run.num_steps 2 -> 3" in changed[0] and "task.train_file" not in changed[0]
    assert f"task.eval_file '{again / 'data' / 'eval.jsonl'}' -> '{tmp_path / 'project' / 'data' / 'eval.jsonl'}'" \
        in changed[0], changed
    assert [json.loads(line)["step"] for line in (again / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    task = outputs.moved_data(again, written_values(again)).task
    assert (task.train_file, task.eval_file) == (str(again / "data" / "train.jsonl"),
                                                 str(tmp_path / "project" / "data" / "eval.jsonl"))
    # that file gone, it is not swapped for the run's old copy (the run's next step says "no such data file")
    shutil.move(tmp_path / "project", tmp_path / "renamed")
    assert outputs.moved_data(again, written_values(again)).task.eval_file == str(tmp_path / "project" / "data" /
                                                                                 "eval.jsonl")


def test_a_moved_baseline_reads_its_own_copy_of_the_data(tmp_path):
    """A lambda = 0 baseline keeps its own copy of the API's datasets (baseline_lambda0/data/): moved, it was
    looked for in its run's data/ ("no such data file")."""
    from rlvjax import outputs
    from rlvjax.config import WRITTEN_IN

    was, now = tmp_path / "old" / outputs.BASELINE, tmp_path / "new" / outputs.BASELINE
    (now / "data").mkdir(parents=True)
    (now / "data" / "train.jsonl").write_text(json.dumps({"prompt": "1+1=", "target": "2"}) + "\n")
    values = {WRITTEN_IN: str(was), "task": {"name": "file", "train_file": str(was / "data" / "train.jsonl"),
                                             "eval_file": str(tmp_path / "mine" / "data" / "eval.jsonl")}}
    task = outputs.moved_data(now, values).task
    assert (task.train_file, task.eval_file) == (str(now / "data" / "train.jsonl"),
                                                 str(tmp_path / "mine" / "data" / "eval.jsonl"))  # not its copy


@pytest.mark.slow
def test_a_run_on_in_memory_rows_reads_back_the_same_data_from_what_it_wrote(tmp_path):
    """What the CLI's --resume of an API run reads (the stored config's task over WORKDIR/data/) is the data the run
    trained on: the same fingerprint as the checkpoint's data state (numpy values included) and every eval row,
    however few TaskSpec.num_eval keeps of a file."""
    import dataclasses

    from rlvjax import experiment
    from rlvjax.config import Config
    from rlvjax.data import pipeline

    rows = [{"prompt": f"{i}+1=", "target": str(i + 1), "n": np.int64(i)} for i in range(8)]
    evals = [{"prompt": f"{i}+2=", "target": str(i + 2)} for i in range(3)]
    base = Config()
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=1, batch_size=4, group_size=2,
                            max_new_tokens=2, config=dataclasses.replace(base, task=dataclasses.replace(
                                base.task, num_eval=2), run=dataclasses.replace(base.run, final_eval_samples=2)))
    rlvjax.RLVTrainer(reward_funcs=length_penalty, train_dataset=rows, eval_dataset=evals, args=args).train()
    # the end-of-run report the config asks for, as the CLI writes it: every given eval row, the user's reward
    report = json.loads((tmp_path / "run" / "eval.json").read_text())["reports"]
    final = next(iter(report.values()))["final"]
    assert (final["num_problems"], final["num_samples"], final["pass@1"]) == (3, 2, 0.0)
    stored = Config.from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))
    train, held_out = experiment.build_records(stored.task, experiment.abstract_policy(stored.model)[1])
    assert [r["prompt"] for r in held_out] == [r["prompt"] for r in evals]
    saved = json.loads((tmp_path / "run" / "checkpoints" / "1" / "data_state" / "metadata").read_text())
    assert pipeline.fingerprint([{**r, "index": i} for i, r in enumerate(train)]) == saved["records_sha256"]


def length_penalty(prompts, completions, **columns):
    return [-len(c) / 10 for c in completions]


def even_length(completions, **columns):
    return [float(len(c) % 2 == 0) for c in completions]


def format_bonus(completions, **columns):
    return [0.5] * len(completions)


def test_a_named_label_reward_labels_training_and_evaluation(tmp_path):
    """A 0.5 bonus summed in lifts every rollout to the 0.5 threshold; with ``verify_label_reward`` named, the
    verifier's labels, the logged verdicts and the evaluation's correctness are that reward's alone."""
    rows = [{"prompt": f"{i}+1="} for i in range(8)]
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=1, batch_size=4, group_size=4,
                            max_new_tokens=3, verify_label_reward="even_length")
    trainer = rlvjax.RLVTrainer(reward_funcs=[even_length, format_bonus], train_dataset=rows, eval_dataset=rows[:4],
                                args=args)
    trainer.train()
    trainer.evaluate(num_samples=4)
    run = tmp_path / "run"
    logged = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    graded = [json.loads(line) for line in (run / "eval" / "final" / "eval_samples.jsonl").read_text().splitlines()]
    assert len(logged) == 4 and len(graded) == 16
    for row in logged + graded:
        assert row["correct"] == (len(row["completion"]) % 2 == 0), row
        assert row["reward"] == float(row["correct"]) + 0.5, row
    assert {r["correct"] for r in graded} == {True, False}  # both verdicts occur: the sum alone says True
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 < metrics["verify_yes_labels"] < 1
    assert metrics["eval/pass@1"] < 1


def test_a_truncated_rollout_gets_truncated_reward_and_the_label_no(tmp_path):
    """``RLConfig.truncated_reward``: every rollout cut off at ``max_new_tokens`` is worth it and labelled 'No',
    whatever its reward says (here 1 for all): the logged mean reward is 1 - 2 x the truncation rate."""
    from rlvjax.config import Config

    rows = [{"prompt": f"{i}+1="} for i in range(8)]
    base = Config()
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=1, batch_size=4, group_size=4,
                            max_new_tokens=2, config=dataclasses.replace(base, rl=dataclasses.replace(
                                base.rl, truncated_reward=-1.0)))
    rlvjax.RLVTrainer(reward_funcs=format_bonus, train_dataset=rows, eval_dataset=rows[:4], args=args).train()
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    truncated = metrics["truncation_rate"]
    assert truncated > 0
    assert metrics["reward_mean"] == pytest.approx(0.5 * (1 - truncated) - truncated)
    assert metrics["verify_yes_labels"] == pytest.approx(1 - truncated)


def test_in_memory_rows_json_cannot_hold_are_refused_before_anything_is_written(tmp_path):
    import datetime

    rows = [{"prompt": f"{i}+1=", "when": datetime.date(2026, 1, 1 + i)} for i in range(8)]
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=1, batch_size=4, group_size=2,
                            max_new_tokens=2)
    trainer = rlvjax.RLVTrainer(reward_funcs=length_penalty, train_dataset=rows, args=args)
    with pytest.raises(ValueError, match=r"^train_dataset row 0, column 'when': date cannot be written as JSON "
                                         r"\(.*\); convert it to text, numbers, lists or dicts$"):
        trainer.train()
    assert not (tmp_path / "run").exists()


def test_save_model_never_touches_the_run_and_replaces_only_when_asked(user_run, monkeypatch):
    root, namespace, _, _ = user_run
    trainer = namespace["trainer"]
    monkeypatch.chdir(root)  # the user's code named its run "run"
    run_files = sorted(p.relative_to(root / "run") for p in (root / "run").rglob("*"))
    with pytest.raises(ValueError, match=r"save_model: output_dir .*run would replace the training run"):
        trainer.save_model(root / "run")
    with pytest.raises(ValueError, match=r"output_dir \S*checkpoints is \S*checkpoints, which the run in"):
        trainer.save_model(root / "run" / "checkpoints")
    with pytest.raises(ValueError, match=r"output_dir .*exported exists and is not empty; pass overwrite=True to "
                                         "replace it or choose another"):
        trainer.save_model(root / "exported")
    assert sorted(p.relative_to(root / "run") for p in (root / "run").rglob("*")) == run_files
    (root / "exported" / "stale.txt").write_text("from an older export")
    trainer.save_model(root / "exported", overwrite=True)
    assert sorted(p.name for p in (root / "exported").iterdir()) == sorted(p.name for p in
                                                                          (root / "run" / "final").iterdir())
    assert not [p for p in root.iterdir() if p.name.startswith(".exported")]  # no temporary left beside it
    # "~/x" is the home directory's x (it was a ./~/x), and a killed copy's staging folder (a model's size, named
    # with its dead process's id and host) is removed by the next save; a running one's stays
    home = root / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    here = socket.gethostname()
    dead, running = home / f".mine.4194305@{here}-abcd1234", home / f".mine.{os.getpid()}@{here}-efgh5678"
    for folder in (dead, running):
        folder.mkdir()
    trainer.save_model("~/mine")
    assert (home / "mine" / "config.json").is_file() and not (root / "~").exists()
    assert not dead.exists() and running.exists()


def test_save_model_writes_the_weights_in_the_dtype_asked(user_run, tmp_path):
    """An f32 run of a bf16 checkpoint saved twice its size (only `export --dtype` could halve it). In bf16: the
    weights and config.json's dtype, the same step stamped, every other file of final/ as it is; a non-float dtype
    is refused before anything is written."""
    import jax.numpy as jnp
    from safetensors import safe_open

    from rlvjax.model.hf import export_stamp, load_hf

    root, namespace, _, _ = user_run
    trainer, final = namespace["trainer"], root / "run" / "final"
    with pytest.raises(ValueError, match=r"^save_model: dtype='int8' is not a floating dtype"):
        trainer.save_model(tmp_path / "int8", dtype="int8")
    assert not list(tmp_path.iterdir())
    trainer.save_model(tmp_path / "half", dtype="bfloat16")
    half = tmp_path / "half"
    with safe_open(str(half / "model.safetensors"), "np") as f:
        assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"BF16"}
    assert json.loads((half / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert export_stamp(half)["rlvjax_step"] == export_stamp(final)["rlvjax_step"]
    same = [p.name for p in final.iterdir() if p.suffix == ".json" and p.name != "config.json"]
    assert "generation_config.json" in same and "rlvjax_sampling.json" in same
    assert all((half / name).read_text() == (final / name).read_text() for name in same)
    (model, _), (trained, _) = load_hf(half), load_hf(final)
    ids = jnp.array([[1, 2, 3, 4]])
    np.testing.assert_allclose(model(ids), trained(ids), atol=0.05)
    assert sorted(p.name for p in half.iterdir()) == sorted(p.name for p in final.iterdir())


def test_several_rewards_are_summed_with_their_weights():
    rows = [{"prompt": "p", "gold": "2", "target": "x"}] * 3
    rewards = registry.Rewards(["a", "b"], [1.0, 0.5], [lambda p, c, **k: [1.0] * len(c),
                                                      lambda p, c, target, **k: [float(x == t) for x, t in
                                                                                 zip(c, target)]])
    np.testing.assert_allclose(rewards(["p"] * 3, ["x", "y", "x"], rows).rewards, [1.5, 1.0, 1.5])
    assert registry.required_columns(lambda prompts, completions, target, level=None, **rest: []) == {"target"}
    # A column named like anything the trainer uses internally still reaches the user's function.
    by_index = registry.Rewards(["c"], None, [lambda p, c, index, **k: [float(i) for i in index]])
    by_index.check_columns([{"prompt": "p", "index": 7}], "train")
    np.testing.assert_allclose(by_index(["p"] * 2, ["x", "y"], [{"prompt": "p", "index": 7}, {"prompt": "p",
                                                                                            "index": 9}]).rewards,
                               [7, 9])
    # finite rewards whose weighted sum is not a float32 (and an infinite weight): one line, not inf/nan advantages
    huge = registry.Rewards(["a", "b"], [1.0, 1.0], [lambda p, c, **k: [3e38] * len(c)] * 2)
    with pytest.raises(rlvjax.cli.UserError, match=r"^the weighted reward is not finite \(inf: rewards a, b with "
                                                   r"weights \(1.0, 1.0\)\); keep rewards and weights small"):
        huge(["p"], ["x"], [{"prompt": "p"}])
    with pytest.raises(ValueError, match=r"^TaskSpec.reward_weights=\(nan,\) must hold finite numbers only"):
        registry.Rewards(["a"], [float("nan")], [lambda p, c, **k: [1.0] * len(c)])


def test_a_format_bonus_beside_the_math_reward_keeps_the_votes_on_math_answers():
    """With a format bonus summed in (the README's recipe) the votes grouped whole strings: "\\frac{1}{2}" and "0.5"
    split a vote, and best-of-N could pick a completion that boxes no answer (review 2026-12-07)."""
    from rlvjax import testtime

    summed = registry.Rewards(["math", "fmt"], [1.0, 0.1], [registry.math_reward, format_bonus], label="math")
    own = registry.Rewards(["fmt"], None, [format_bonus])
    assert summed.grouping("math") == "math" and summed.grouping("string") == "string"
    assert own.grouping("math") == "string"
    completions = ["so \\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "I am not sure what the answer is."]
    assert [summed.answer(c) for c in completions] == ["\\frac{1}{2}", "0.5", None]
    assert own.answer(completions[2]) == completions[2]
    answers = [summed.answer(c) for c in completions]
    np.testing.assert_array_equal(testtime.answer_classes(answers, grouping=summed.grouping("math")), [0, 0, -1])


def test_summed_or_scaled_rewards_warn_that_the_verifier_label_may_not_mean_correct(caplog):
    """Without a label reward the label is Yes where the weighted sum reaches VerifierConfig.threshold: with a format
    bonus a wrong answer reaches 0.5, and a correctness reward scaled by 0.3 never does. One correctness reward of
    weight 1, or a named label reward: no warning."""
    one = lambda p, c, **k: [1.0] * len(c)  # noqa: E731
    with caplog.at_level("WARNING", logger=registry.__name__):
        registry.Rewards(["math"], None, [one]).warn_about_labels()
        registry.Rewards(["math", "fmt"], [1.0, 0.5], [one, one], label="math").warn_about_labels()
        assert not caplog.records
        registry.Rewards(["math", "fmt"], [1.0, 0.5], [one, one]).warn_about_labels()
        registry.Rewards(["math"], [0.3], [one], threshold=0.25).warn_about_labels()
    assert [r.getMessage().split(" >=")[0] for r in caplog.records] == [
        "the verifier learns Yes where 1 x math + 0.5 x fmt", "the verifier learns Yes where 0.3 x math"]
    assert ["VerifierConfig.threshold = 0.5" in r.getMessage() for r in caplog.records] == [True, False]
    assert all("VerifierConfig.label_reward" in r.getMessage() for r in caplog.records)


def test_a_label_reward_alone_says_which_completions_are_correct():
    """Rewards: 1 for the right answer, 0.5 for the format. Summed, a wrong well-formatted answer reaches 0.5 and
    counts as correct; with label="accuracy" (its function's name) only the right answers do, whatever the weights,
    and a None from the label reward is wrong."""
    def accuracy(completions, target, **k):
        return [None if c == "?" else float(c.strip("<>") == t) for c, t in zip(completions, target)]

    def fmt(completions, **k):
        return [0.5 * c.startswith("<") for c in completions]

    rows = [{"prompt": "p", "target": "4"}] * 4
    completions = ["<4>", "<5>", "4", "?"]
    names = ["my_rewards:accuracy", "my_rewards:fmt"]
    summed = registry.Rewards(names, None, [accuracy, fmt])(["p"] * 4, completions, rows)
    np.testing.assert_allclose(summed.rewards, [1.5, 0.5, 1.0, 0.0])
    np.testing.assert_array_equal(summed.correct, [True, True, True, False])
    for label in ("accuracy", "my_rewards:accuracy"):
        graded = registry.Rewards(names, [0.3, 1.0], [accuracy, fmt], label=label)(["p"] * 4, completions, rows)
        np.testing.assert_allclose(graded.rewards, [0.8, 0.5, 0.3, 0.0], rtol=1e-6)
        np.testing.assert_array_equal(graded.correct, [True, False, True, False])
    strict = registry.Rewards(names, None, [accuracy, fmt], label="fmt", threshold=0.6)
    np.testing.assert_array_equal(strict(["p"] * 4, completions, rows).correct, [False] * 4)
    for label, said in [("format", "names none of"), ("f", "names none of")]:
        with pytest.raises(ValueError, match=f"^VerifierConfig.label_reward={label!r} {said} TaskSpec.rewards "):
            registry.Rewards(names, None, [accuracy, fmt], label=label)
    with pytest.raises(ValueError, match="^VerifierConfig.label_reward='acc' names several of TaskSpec.rewards"):
        registry.Rewards(["a:acc", "b:acc"], None, [accuracy, accuracy], label="acc")
    assert registry.label_index(["a:acc", "acc"], "acc") == 1  # a whole name before a function's name
    # through the API's config= too: the label is checked against reward_funcs, not the config's default rewards
    from rlvjax.config import Config
    from rlvjax.rl.verifier import VerifierConfig

    def as_config(label):
        return rlvjax.RLVConfig(output_dir="unused", config=Config(verifier=VerifierConfig(label_reward=label)))
    assert rlvjax.RLVTrainer(reward_funcs=[accuracy, fmt], args=as_config("accuracy")).reward.label == 0
    with pytest.raises(ValueError, match="^VerifierConfig.label_reward='format' names none of TaskSpec.rewards"):
        rlvjax.RLVTrainer(reward_funcs=[accuracy, fmt], args=as_config("format"))
    # the label shapes RL's labels, not the warm start's weights: a warm start exported before it is reused
    from rlvjax import outputs

    ids = [outputs.warm_start_id(Config(verifier=VerifierConfig(**v)))
           for v in ({}, {"label_reward": "math"}, {"question": "Right (Yes/No)?"})]
    assert ids[0] == ids[1] != ids[2]


def test_columns_only_some_rows_have_reach_the_function_whatever_row_leads():
    rows = [{"prompt": "p", "gold": "1"}, {"prompt": "q", "gold": "2", "bonus": 1.0}]
    rewards = registry.Rewards(["b"], None, [lambda p, c, bonus=None, **k: [float(b or 0) for b in bonus]])
    for order in (rows, rows[::-1]):
        np.testing.assert_allclose(rewards(["p", "q"], ["x", "y"], order).rewards,
                                   [float("bonus" in r) for r in order])
    # a required column missing from a later row is refused at load, naming the row, not mid-run
    needs = registry.Rewards(["t"], None, [lambda p, c, bonus, **k: [0.0] * len(c)])
    with pytest.raises(ValueError, match=r"^reward 't' needs column\(s\) \['bonus'\] that row 1 of the train data"):
        needs.check_columns(rows, "train")


def test_trl_style_rewards_are_called_by_keyword():
    """TRL calls reward_func(prompts=..., completions=..., **columns); functions written for it work unchanged."""
    def accuracy_reward(completions, solution, **kwargs):  # TRL's own signature
        assert kwargs["prompts"] == ["p", "q"]
        return [float(c == s) for c, s in zip(completions, solution)]

    def think_format_reward(completions, **kwargs):
        return [float(c.startswith("<think>")) for c in completions]

    def no_prompts(completions, solution):
        return [0.5] * len(completions)

    def keywords_only(**kwargs):  # named nothing: it was called positionally and raised TypeError (review)
        assert kwargs["prompts"] == ["p", "q"] and kwargs["solution"] == ["x", "z"]
        return [float(len(c)) for c in kwargs["completions"]]

    rows = [{"prompt": "p", "solution": "x"}, {"prompt": "q", "solution": "z"}]
    rewards = registry.Rewards(["a", "t", "n", "k"], None, [accuracy_reward, think_format_reward, no_prompts,
                                                          keywords_only])
    rewards.check_columns(rows, "train")
    np.testing.assert_allclose(rewards(["p", "q"], ["x", "<think>y"], rows).rewards, [2.5, 9.5])
    assert registry.required_columns(keywords_only) == set()
    assert registry.required_columns(accuracy_reward) == {"solution"}
    with pytest.raises(ValueError, match=r"needs column\(s\) \['solution'\]"):
        rewards.check_columns([{"prompt": "p", "gold": "1"}], "train")


def test_trl_token_id_rewards_get_the_sampled_ids():
    """TRL's own ``get_soft_overlong_punishment`` returns an object called as ``f(completion_ids, **kwargs)``; it was
    called positionally with (prompts, completions) and raised TypeError, and a function naming ``completion_ids``
    was told to add it as a data column."""

    class SoftOverlong:  # TRL's _SoftOverlongPunishment's shape: a penalty past a length
        def __call__(self, completion_ids, **kwargs):
            return [-max(0, len(ids) - 2) / 2 for ids in completion_ids]

    def long_enough(completions, completion_ids, **kwargs):
        return [float(len(ids) >= 3) for ids in completion_ids]

    rewards = registry.Rewards(["soft", "long"], None, [SoftOverlong(), long_enough])
    assert registry.required_columns(long_enough) == set()  # not a column the rows must hold
    rewards.check_columns([{"prompt": "p"}], "train")
    rewards.probe([{"prompt": "p"}])
    graded = rewards(["p", "q"], ["a", "b c d"], [{"prompt": "p"}, {"prompt": "q"}], [[5, 0], [7, 8, 9, 0]])
    np.testing.assert_allclose(graded.rewards, [0 + 0, -1 + 1])


def test_trl_async_rewards_and_trainer_state(tmp_path):
    """TRL awaits an ``async def`` reward and passes ``trainer_state`` to every one; the first was refused as
    returning "a coroutine, not a flat list of numbers", the second as needing a 'trainer_state' data column (review,
    2026-12-06). An async reward is run in a thread of its own, so a notebook's running event loop is no obstacle."""
    import asyncio

    async def judged(completions, **kwargs):  # a reward that awaits a remote judge
        await asyncio.sleep(0)
        return [float(len(c)) for c in completions]

    seen = []

    def ramped(completions, trainer_state, **kwargs):  # a penalty that ramps up over training
        seen.append((trainer_state.global_step, trainer_state.max_steps))
        return [-trainer_state.global_step / max(trainer_state.max_steps, 1)] * len(completions)

    rewards = registry.Rewards(["judged", "ramped"], None, [judged, ramped])
    assert registry.required_columns(ramped) == set()
    rewards.check_columns([{"prompt": "p"}], "train")
    rewards.state.global_step, rewards.state.max_steps = 1, 4

    async def in_a_notebook():  # its event loop is running while the reward is graded
        return rewards(["p", "q"], ["ab", "abc"], [{"prompt": "p"}, {"prompt": "q"}]).rewards

    np.testing.assert_allclose(asyncio.run(in_a_notebook()), [2 - 0.25, 3 - 0.25])
    seen.clear()
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=2, batch_size=4, group_size=2,
                            max_new_tokens=2, verify_question=QUESTION)
    trainer = rlvjax.RLVTrainer(reward_funcs=[judged, ramped], train_dataset=[{"prompt": "1+1="}] * 8,
                                eval_dataset=[{"prompt": "2+2="}], args=args)
    trainer.train()
    assert {step for step, _ in seen} == {0, 1, 2} and {total for _, total in seen} == {2}, seen
    assert seen[0] == (0, 2)  # the start-up probe: no step done yet (it saw the run finished, review diff19)
    # an evaluation of the trained run grades it as trained to its end (it saw 0 of 0 steps, review 2026-12-06)
    seen.clear()
    trainer.evaluate(num_samples=2)
    assert set(seen) == {(2, 2)}, seen


def test_a_sigterm_in_the_api_says_how_to_resume_in_the_api(tmp_path):
    """A scheduler's notice during ``trainer.train()`` saves the step and raises Preempted; its message named the
    CLI's ``--resume`` to a script that has no command line."""
    import signal

    calls = []

    def judge(completions, **kwargs):
        calls.append(len(completions))
        if len(calls) == 3:  # the probe at start, step 1, then during step 2's grading
            os.kill(os.getpid(), signal.SIGTERM)
        return [float(len(c)) for c in completions]

    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=4, batch_size=4, group_size=2,
                            max_new_tokens=2, verify_question=QUESTION)
    rows = [{"prompt": f"{i}+1="} for i in range(8)]
    with pytest.raises(cli.Preempted) as stopped:
        rlvjax.RLVTrainer(reward_funcs=judge, train_dataset=rows, args=args).train()
    assert str(stopped.value) == (f"SIGTERM: saved the checkpoint of step 2 in {tmp_path / 'run' / 'checkpoints'} "
                                  "and stopped; rerun with train(resume=True) to continue")
    rlvjax.RLVTrainer(reward_funcs=judge, train_dataset=rows, args=args).train(resume=True)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_reward_that_raises_mid_run_keeps_the_steps_done(tmp_path):
    """A remote judge that times out at step 3 of 4 (before the first checkpoint, due at 10): the run stopped with the
    error and nothing saved, so a resume started from step 0 (review 2026-12-06). The 2 steps done are saved now,
    and the resume trains steps 3 and 4 from the data's place after step 2."""
    calls = []

    def judge(completions, **kwargs):
        calls.append(len(completions))
        if len(calls) == 4:  # a probe of the rows at start, steps 1 and 2, then step 3's grading fails
            raise TimeoutError("judge endpoint timed out")
        return [float(len(c)) for c in completions]

    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=4, batch_size=4, group_size=2,
                            max_new_tokens=2, verify_question=QUESTION)
    rows = [{"prompt": f"{i}+1="} for i in range(8)]
    with pytest.raises(UserError, match=r"reward function '.*judge' raised TimeoutError: judge endpoint timed out; "
                                        r"fix the function; the 2 steps done are saved \(checkpoint of step 2\): "
                                        r"rerun with train\(resume=True\) once it is fixed"):
        rlvjax.RLVTrainer(reward_funcs=judge, train_dataset=rows, args=args).train()
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]
    rlvjax.RLVTrainer(reward_funcs=judge, train_dataset=rows, args=args).train(resume=True)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    # back to step 2 from the API, as --checkpoint 2 (a refusal advised a resume_step the API lacked)
    rlvjax.RLVTrainer(reward_funcs=judge, train_dataset=rows, args=args).train(resume=True, resume_step=2)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2", "4"]
    assert [p.name for p in (tmp_path / "run" / "checkpoints_set_aside").rglob("4")]  # the step 4 it retrained
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    # failing in the in-training eval, after step 2's update and before its metrics row: nothing saved there (a
    # resume from step 2 would have lacked that row for good), the resume retrains step 2
    failed = []

    def judge_failing_on_eval(completions, prompts, **kwargs):
        if "9+9=" in prompts[0] and not failed:
            failed.append(True)
            raise TimeoutError("judge endpoint timed out")
        return [float(len(c)) for c in completions]

    config = dataclasses.replace(args.config, run=dataclasses.replace(args.config.run, eval_every=2))
    evaluated = dataclasses.replace(args, output_dir=str(tmp_path / "evaluated"), config=config)
    with pytest.raises(UserError, match=r"judge endpoint timed out; fix the function$"):
        rlvjax.RLVTrainer(reward_funcs=judge_failing_on_eval, train_dataset=rows, eval_dataset=[{"prompt": "9+9="}],
                          args=evaluated).train()
    assert not os.listdir(tmp_path / "evaluated" / "checkpoints")
    rlvjax.RLVTrainer(reward_funcs=judge_failing_on_eval, train_dataset=rows, eval_dataset=[{"prompt": "9+9="}],
                      args=evaluated).train(resume=True)
    rows_written = (tmp_path / "evaluated" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in rows_written] == [1, 2, 3, 4]


def test_a_reward_that_raises_in_the_baseline_or_the_report_says_what_is_kept(tmp_path):
    """After the run is trained and exported: a judge that times out in the lambda = 0 baseline's second step names
    the baseline's saved step, not the run's (it said "the latest checkpoint is step 2" of the baseline alone); in
    the end-of-run report it says training is saved and a resume does only the report (it said "fix the function"
    alone). Each resume then finishes the rest."""
    calls, fail = [], "baseline"
    baseline = tmp_path / "run" / "baseline_lambda0"

    def judge(completions, prompts, **kwargs):
        calls.append(prompts[0])
        if (fail == "baseline" and (baseline / "metrics.jsonl").exists()  # its step 2, after step 1 was logged
                and (baseline / "metrics.jsonl").read_text().strip()
                or fail == "report" and (baseline / "final").exists()):  # all trained and exported
            raise TimeoutError("judge endpoint timed out")
        return [float(len(c)) for c in completions]

    base = rlvjax.Config()
    config = dataclasses.replace(base, run=dataclasses.replace(base.run, baseline=True, final_eval_samples=2,
                                                               checkpoint_every=1))
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=2, batch_size=4, group_size=2,
                            max_new_tokens=2, verify_question=QUESTION, lambda_verify=1.0, config=config)
    rows, held_out = [{"prompt": f"{i}+1="} for i in range(8)], [{"prompt": "9+9="}]
    with pytest.raises(UserError, match=r"judge endpoint timed out; fix the function \(the lambda = 0 baseline's "
                                        r"latest checkpoint is step 1\)$"):
        rlvjax.RLVTrainer(reward_funcs=judge, train_dataset=rows, eval_dataset=held_out, args=args).train()
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["1", "2"]
    assert os.listdir(tmp_path / "run" / "baseline_lambda0" / "checkpoints") == ["1"]
    fail = "report"
    with pytest.raises(UserError, match=r"judge endpoint timed out; fix the function \(in the end-of-run report: "
                                        r"training is complete and saved; once it is fixed, a resume does only the "
                                        r"report\)$"):
        rlvjax.RLVTrainer(reward_funcs=judge, train_dataset=rows, eval_dataset=held_out, args=args).train(resume=True)
    assert sorted(os.listdir(tmp_path / "run" / "baseline_lambda0" / "checkpoints")) == ["1", "2"]
    assert not (tmp_path / "run" / "eval.json").exists()
    fail = None
    calls.clear()
    rlvjax.RLVTrainer(reward_funcs=judge, train_dataset=rows, eval_dataset=held_out, args=args).train(resume=True)
    # the start-up probes of the run and of its baseline (their first rows), then the report alone
    assert calls[:2] == ["0+1=", "0+1="] and set(calls[2:]) == {"9+9="}, calls
    assert set(json.loads((tmp_path / "run" / "eval.json").read_text())["policies"]) >= {"final", "lambda0"}


def test_an_estimator_returning_nan_stops_at_once_in_one_line(tmp_path):
    """GRPO written without its epsilon: 0 / 0 for a group whose rewards are all equal. The run trained 5 steps of
    NaN and then blamed the learning rate and "the latest checkpoint (step None)" (review 2026-12-06)."""
    from rlvjax.rl import advantages

    advantages.register("test_grpo_without_eps")(lambda r: (r - r.mean(1, keepdims=True)) / r.std(1, keepdims=True))
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=2, batch_size=4, group_size=2,
                            max_new_tokens=2, verify_question=QUESTION, algorithm="test_grpo_without_eps")
    with pytest.raises(UserError, match=r"^advantage estimator 'test_grpo_without_eps' returned non-finite advantages "
                                        r"at step 1 \(e.g. 0 / 0 for a group whose rewards are all equal\); make it "
                                        r"return finite values$"):
        rlvjax.RLVTrainer(reward_funcs=lambda completions, **kw: [1.0] * len(completions),
                          train_dataset=[{"prompt": "1+1="}] * 8, args=args).train()
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or not (tmp_path / "run" / "metrics.jsonl").read_text()


def test_conversational_rows_reach_trl_style_rewards_as_messages(caplog):
    """TRL passes conversational prompts as their messages and completions as [{"role": "assistant", ...}]; a
    function written for that (``completion[0]["content"]``) raised IndexError on the rendered texts. None is
    "not applicable" (TRL's multi-task convention): it adds nothing."""
    import logging

    from conftest import word_tokenizer

    from rlvjax.data import prompts

    tokenizer = word_tokenizer(16)
    tokenizer.chat_template = ("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}[assistant]{% endif %}")
    messages = [[{"role": "user", "content": "1+1?"}], [{"role": "user", "content": "2+2?"}]]
    rows = prompts.format_records([{"prompt": m, "solution": s} for m, s in zip(messages, "24")], tokenizer, "as_is")
    assert rows[0]["prompt"] == "[user]1+1?[assistant]"  # the policy still reads the rendered text
    seen = {}

    def accuracy_reward(completions, solution, **kwargs):  # TRL's access pattern
        seen.update(prompts=kwargs["prompts"], completions=completions, columns=sorted(kwargs))
        return [float(c[0]["content"] == s) for c, s in zip(completions, solution)]

    def only_first(prompts, completions, **kwargs):
        return [1.0, None]

    rewards = registry.Rewards(["a", "math", "f"], None, [accuracy_reward, registry.math_reward, only_first])
    with caplog.at_level(logging.WARNING):
        got = rewards([r["prompt"] for r in rows], ["2", "\\boxed{4}"],
                      [{**r, "gold": s} for r, s in zip(rows, "24")]).rewards
    np.testing.assert_allclose(got, [1 + 0 + 1, 0 + 1 + 0])  # the math reward graded the texts
    assert seen["prompts"] == messages and seen["completions"][1] == [{"role": "assistant", "content": "\\boxed{4}"}]
    assert seen["columns"] == ["gold", "prompts", "trainer_state"]  # the kept messages are not a column
    assert "got None from every reward function" not in caplog.text
    none = registry.Rewards(["n"], None, [lambda p, c, **k: [None] * len(c)])
    with caplog.at_level(logging.WARNING):
        np.testing.assert_allclose(none(["p"], ["x"], [{"prompt": "p"}]).rewards, [0.0])
    assert "1 of 1 completions got None from every reward function (n); their reward is 0" in caplog.text
    # ... and it is not correct, though 0 reaches a threshold of 0 (a +-1 reward's): the verifier learnt Yes for it
    signed = lambda p, c, **k: [None, -1.0, 1.0]  # noqa: E731
    for label in ("", "s"):
        graded = registry.Rewards(["s"], None, [signed], label=label, threshold=0.0)(["p"] * 3, ["x"] * 3,
                                                                                     [{"prompt": "p"}] * 3)
        np.testing.assert_array_equal(graded.rewards, [0.0, -1.0, 1.0])
        np.testing.assert_array_equal(graded.correct, [False, False, True])
    both = registry.Rewards(["s", "b"], None, [signed, lambda p, c, **k: [0.5] * 3], label="s", threshold=0.0)
    np.testing.assert_array_equal(both(["p"] * 3, ["x"] * 3, [{"prompt": "p"}] * 3).correct, [False, False, True])


def test_prompts_mixing_messages_and_text_are_refused_and_rewards_get_the_columns_they_name():
    """A mixed dataset sent one batch's prompts to a user's reward as messages and the next one's as text (it
    failed mid-run; the math reward reads the rendered texts alike); a TRL reward without **kwargs failed on the id
    and level columns rlvjax adds, which its user never had (review "api", 2026-12-07)."""
    from conftest import word_tokenizer

    from rlvjax.data import prompts

    tokenizer = word_tokenizer(16)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    rows = prompts.format_records([{"id": 0, "prompt": [{"role": "user", "content": "1+1?"}], "gold": "2"},
                                   {"id": 1, "prompt": "2+2?", "gold": "4"}, {"id": 2, "prompt": "3+3?", "gold": "6"}],
                                  tokenizer, "as_is")
    registry.Rewards(["math"]).check_columns(rows, "train")
    with pytest.raises(ValueError, match=r"^the train data mixes chat-message prompts \(1 of 3 rows, e.g. row 1\) "
                                         r"and text prompts \(e.g. row 2\); reward function\(s\) 'mine' would get"):
        registry.Rewards(["math", "mine"], None, [registry.math_reward, lambda completions, **kw: [0.0] * len(
            completions)]).check_columns(rows, "train")

    def named_only(prompts, completions, target):  # no **kwargs
        return [float(c == t) for c, t in zip(completions, target)]

    graded = registry.Rewards(["n"], None, [named_only])(["p", "q"], ["2", "5"], [
        {"prompt": "p", "target": "2", "id": 0, "level": 1}, {"prompt": "q", "target": "4", "id": 1, "level": 1}])
    np.testing.assert_array_equal(graded.rewards, [1.0, 0.0])


def test_a_reward_module_that_fails_to_import_is_named_in_one_line(tmp_path, monkeypatch):
    """A reward module with a syntax error (or one raising as it is imported) gave a traceback; one importing a
    package that is not installed was said to be missing itself ("put its module on PYTHONPATH")."""
    (tmp_path / "broken_rw.py").write_text("def f(:\n")
    (tmp_path / "boom_rw.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "needs_rw.py").write_text("import no_such_package\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, message in [
            ("boom_rw:f", "--reward: importing 'boom_rw:f' failed (RuntimeError: boom); fix its module"),
            ("needs_rw:f", "--reward: the module of 'needs_rw:f' imports 'no_such_package', which is not installed "
                           "here; install it"),
            ("no_such_rw:f", "--reward: cannot import 'no_such_rw:f' (No module named 'no_such_rw'); put its module on "
                             "PYTHONPATH or fix the name"),
            ("json.no_such:f", "--reward: cannot import 'json.no_such:f' (No module named 'json.no_such'); put its "
                               "module on PYTHONPATH or fix the name")]:
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            registry.resolve(name, "--reward")
    with pytest.raises(ValueError, match=r"^--reward: importing 'broken_rw:f' failed \(SyntaxError: .*broken_rw.py, "
                                         r"line 1\)\); fix its module$"):
        registry.resolve("broken_rw:f", "--reward")


def test_a_reward_returning_a_string_or_a_huge_int_is_named_in_one_line():
    for value, said in [("1", r"returned a str \('1'\) among its values"),
                        (10 ** 400, "returned a number too large for a float")]:
        rewards = registry.Rewards(["r"], None, [lambda p, c, **k: [value] * len(c)])
        with pytest.raises(rlvjax.cli.UserError, match=f"^reward function 'r' {said}"):
            rewards(["p"], ["x"], [{"prompt": "p"}])


def test_trainer_refuses_bad_arguments_in_one_line(tmp_path):
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="train_dataset must be a file path or datasets id, a datasets.Dataset or a "
                                         "list of dicts, got int"):
        rlvjax.RLVTrainer(train_dataset=3, args=args)
    import datasets

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "1+1=", "gold": "2"}])})
    with pytest.raises(ValueError, match=r"got DatasetDict; pass one of its splits, train_dataset=dataset\[SPLIT\] "
                                         r"with SPLIT one of 'train'$"):
        rlvjax.RLVTrainer(train_dataset=splits, args=args)
    with pytest.raises(ValueError, match=r"RLVConfig.group_size='4' must be an int or None, not a str"):
        rlvjax.RLVConfig(output_dir="x", group_size="4")
    with pytest.raises(ValueError, match="args must be an rlvjax.RLVConfig, got dict"):
        rlvjax.RLVTrainer(args={})
    # TRL's names and positional order (a bare TypeError named neither; review "api", 2026-12-07)
    with pytest.raises(TypeError, match=r"^RLVConfig has no num_generations: use group_size; no max_steps: use "
                                        r"num_steps \(RL steps\) \(docs/config.md lists every knob\)$"):
        rlvjax.RLVConfig(output_dir="x", num_generations=4, max_steps=10)
    with pytest.raises(TypeError, match=r"^RLVConfig has no beta: use config=Config\(rl=RLConfig\(beta=...\)\)"):
        rlvjax.RLVConfig(output_dir="x", beta=0.04)
    assert dataclasses.replace(args, group_size=4).group_size == 4  # replace builds one through the same check
    assert list(inspect.signature(rlvjax.RLVConfig).parameters)[:2] == ["output_dir", "algorithm"]  # help()'s
    with pytest.raises(ValueError, match=r"^pass args= by keyword: RLVTrainer\(model, reward_funcs, train_dataset, "
                                         r"eval_dataset, args=RLVConfig\(...\)\) \(TRL's third positional is args"):
        rlvjax.RLVTrainer(None, "math", args)
    with pytest.raises(ValueError, match=r"^args= is needed: RLVTrainer\(..., args=RLVConfig\(output_dir="):
        rlvjax.RLVTrainer()
    with pytest.raises(ValueError, match=r"^reward_funcs: unknown reward 'my_rewards.em'"):
        rlvjax.RLVTrainer(reward_funcs="my_rewards.em", args=args)
    with pytest.raises(ValueError, match=r"^resume_step=2 chooses the checkpoint to resume from; pass resume=True"):
        rlvjax.RLVTrainer(args=args).train(resume_step=2)
    with pytest.raises(ValueError, match="^eval_dataset without train_dataset: the run would train and evaluate on "
                                         "its task's own problems; pass train_dataset= too, or drop eval_dataset$"):
        rlvjax.RLVTrainer(eval_dataset=[{"prompt": "1+1=", "gold": "2"}], args=args)
    with pytest.raises(ValueError, match=r"^num_samples=1: use a power of two >= 2"):
        rlvjax.RLVTrainer(args=args).evaluate(num_samples=1)
    # bare TypeErrors that named no argument, and True read as 1 (review, 2026-12-06)
    for call, message in ((dict(num_samples=True), r"^num_samples=True must be a whole number"),
                          (dict(num_samples=2, temperature="1"), r"^temperature='1' must be a number"),
                          (dict(num_samples=2, out=5), r"^out=5 must be a directory's path")):
        with pytest.raises(ValueError, match=message):
            rlvjax.RLVTrainer(args=args).evaluate(**call)
    with pytest.raises(ValueError, match=r"^output_dir=None must be a directory's path \(str or pathlib.Path\)$"):
        rlvjax.RLVTrainer(args=args).save_model(None)
    # a column named as what every reward is passed: a TypeError "got multiple values" blamed on the function
    with pytest.raises(ValueError, match=re.escape("the train data has column(s) ['completions', 'prompts'], the "
                                                   "name(s) of what every reward function is passed (prompts, "
                                                   "completions, completion_ids, trainer_state); rename them")):
        rlvjax.RLVTrainer(reward_funcs=length_penalty, args=args, train_dataset=[
            {"prompt": f"{i}+1=", "prompts": "x", "completions": "y"} for i in range(4)]).train()
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"^RLVConfig.output_dir is empty; name the run's directory"):
        rlvjax.RLVConfig(output_dir=" ")  # "" trained into the working directory
    with pytest.raises(ValueError, match=r"^reward_funcs=\[\]: pass a reward function, a list of them, or a "):
        rlvjax.RLVTrainer(reward_funcs=[], args=args)
    with pytest.raises(ValueError, match=r"^reward_funcs holds 1, neither a function nor a registered name"):
        rlvjax.RLVTrainer(reward_funcs=[1], args=args)  # accepted, then a bare TypeError in train()
    # None (the default) is the config's own rewards: a default "math" replaced them, keeping their weights
    from rlvjax.config import Config
    from rlvjax.experiment import TaskSpec

    own = Config(task=TaskSpec(rewards=("math", "math"), reward_weights=(2.0, 1.0)))
    kept = rlvjax.RLVTrainer(args=rlvjax.RLVConfig(output_dir=args.output_dir, config=own))
    assert kept.config.task.rewards == ("math", "math") and kept.reward.names == ("math", "math")
    with pytest.raises(ValueError, match=r"^rules= are a test-time strategy's; pass strategy="):
        rlvjax.RLVTrainer(args=args).evaluate(num_samples=4, rules=[object()])  # silently dropped
    # each of these was a TypeError traceback, or (temperature 0) K identical greedy samples voted over
    with pytest.raises(ValueError, match=r"^model must be an HF directory or hub id \(a str or Path\), not a object"):
        rlvjax.RLVTrainer(model=object(), args=args)
    with pytest.raises(ValueError, match=r"^reward_funcs=5: pass a reward function, a registered name"):
        rlvjax.RLVTrainer(reward_funcs=5, args=args)
    with pytest.raises(ValueError, match=r"^num_samples=16.0 must be a whole number"):
        rlvjax.RLVTrainer(args=args).evaluate(num_samples=16.0)
    with pytest.raises(ValueError, match=r"^temperature=0 must be >= 1e-05 and finite: votes need distinct samples"):
        rlvjax.RLVTrainer(args=args).evaluate(num_samples=4, temperature=0)
    # Paths are taken wherever a directory is (they were refused as "not a str; fix the binding's value")
    assert rlvjax.RLVConfig(output_dir=tmp_path / "run").output_dir == str(tmp_path / "run")
    model_dir = tmp_path / "model"
    assert rlvjax.RLVTrainer(model=model_dir, args=args).config.model.hf_dir == str(model_dir)
    model_dir.mkdir()  # a relative directory is stored absolute: evaluate and export read it from elsewhere
    with contextlib.chdir(tmp_path):
        assert rlvjax.RLVTrainer(model="model", args=args).config.model.hf_dir == str(model_dir)
    assert rlvjax.RLVTrainer(model="Qwen/Qwen2.5-Math-1.5B", args=args).config.model.hf_dir == \
        "Qwen/Qwen2.5-Math-1.5B"  # a hub id, as given
    # so are the config's own (they were stored as given: the run's resume and evaluate failed elsewhere)
    from rlvjax.experiment import ModelSpec, TaskSpec

    (tmp_path / "train.jsonl").write_text("")
    own = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), config=rlvjax.Config(
        model=ModelSpec(hf_dir="model", tokenizer_dir="Qwen/Qwen2.5-Math-1.5B"),
        task=TaskSpec(name="file", train_file="train.jsonl", eval_file="not_yet.jsonl")))
    with contextlib.chdir(tmp_path):
        trainer = rlvjax.RLVTrainer(args=dataclasses.replace(own, output_dir="run"))
    config = trainer.config  # the run's own directory too (it was taken at each call: a chdir split run and data)
    assert trainer.output_dir == tmp_path / "run"
    assert (config.model.hf_dir, config.model.tokenizer_dir, config.task.train_file, config.task.eval_file) == (
        str(model_dir), "Qwen/Qwen2.5-Math-1.5B", str(tmp_path / "train.jsonl"), "not_yet.jsonl")
    assert rlvjax.RLVConfig(output_dir="x", reward_weights=[1.0, 0.5]).reward_weights == (1.0, 0.5)  # TRL's lists
    with pytest.raises(ValueError, match="^RLVConfig.output_dir gs://b/run is a URL; runs are written to a local "):
        rlvjax.RLVConfig(output_dir="gs://b/run")
    # a warm start generates its task's solutions: in-memory rows have none (it trained on arithmetic instead)
    from rlvjax.config import Config
    from rlvjax.sft import WarmStartConfig

    warm = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), config=Config(warm_start=WarmStartConfig(num_steps=2)))
    with pytest.raises(ValueError, match=r"^a warm start \(WarmStartConfig.num_steps > 0\) needs a task that "
                                         "generates solutions; in-memory datasets have none"):
        rlvjax.RLVTrainer(reward_funcs=lambda p, c, **k: [0.0] * len(c), train_dataset=[{"prompt": "1+1="}] * 8,
                          args=warm).train()
    assert not (tmp_path / "run").exists()


def test_datasets_are_read_as_the_task_spec_says(tmp_path, monkeypatch):
    """An eval path beside in-memory training rows is read from TaskSpec.eval_split (it was read from "train": the
    run evaluated on training problems), and TaskSpec.on_bad_gold applies to in-memory rows as to files."""
    import datasets

    from rlvjax.config import Config
    from rlvjax.experiment import TaskSpec

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    rows = lambda tag, n: [{"prompt": f"{tag}{i}+1=", "gold": str(i + 1)} for i in range(n)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows("1", 4)),
                          "test": datasets.Dataset.from_list(rows("2", 3))}).save_to_disk(tmp_path / "data")
    args = lambda **task: rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), config=Config(task=TaskSpec(**task)))
    trainer = rlvjax.RLVTrainer(train_dataset=rows("3", 4), eval_dataset=str(tmp_path / "data"), args=args())
    assert [r["prompt"] for r in trainer.records[1]] == ["20+1=", "21+1=", "22+1="]
    with pytest.raises(ValueError, match=r"has no split 'validation' \(its splits: train, test\); set "
                                         r"TaskSpec.eval_split to one of them"):
        rlvjax.RLVTrainer(train_dataset=rows("3", 4), eval_dataset=str(tmp_path / "data"),
                          args=args(eval_split="validation"))
    bad = rows("3", 4) + [{"prompt": "9+1=", "gold": ""}]
    assert len(rlvjax.RLVTrainer(train_dataset=bad, args=args()).records[0]) == 4  # "skip": counted and logged
    with pytest.raises(ValueError, match=r"^train_dataset: row 5 has no usable gold answer for schema 'generic'"):
        rlvjax.RLVTrainer(train_dataset=bad, args=args(on_bad_gold="error"))
    assert not (tmp_path / "run").exists()


def test_the_configs_eval_file_is_kept_and_every_given_eval_row_is_evaluated(tmp_path):
    """A train_dataset without eval_dataset keeps the config's TaskSpec.eval_file (it was dropped: no evals, in
    silence), its first TaskSpec.num_eval rows as the CLI reads it; and an eval_dataset's rows are all evaluated,
    whether given as a file or in memory (a file was cut to num_eval = 200)."""
    from rlvjax.config import Config
    from rlvjax.experiment import TaskSpec

    rows = lambda tag, n: [{"prompt": f"{tag}{i}+1=", "gold": str(i + 1)} for i in range(n)]
    for name, n in (("train.jsonl", 4), ("test.jsonl", 300)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows(name[:2], n)))
    test = str(tmp_path / "test.jsonl")
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), config=Config(task=TaskSpec(eval_file=test,
                                                                                           num_eval=50)))
    from_files = rlvjax.RLVTrainer(train_dataset=str(tmp_path / "train.jsonl"), args=args)
    assert (from_files.config.task.eval_file, from_files.config.task.num_eval) == (test, 50)
    in_memory = rlvjax.RLVTrainer(train_dataset=rows("3", 4), args=args)
    assert len(in_memory.records[1]) == 50
    plain = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"))
    both = rlvjax.RLVTrainer(train_dataset=str(tmp_path / "train.jsonl"), eval_dataset=test, args=plain)
    assert both.config.task.num_eval == 300
    assert not (tmp_path / "run").exists()


def test_rlv_config_fields_are_applied_together():
    """Each section's overrides are applied as one change and checked as a whole: grpo with 4 samples over a base
    config of VinePPO with 1 sample was refused on the way ("grpo compares samples of one problem")."""
    from rlvjax.config import Config
    from rlvjax.rl.config import RLConfig

    base = Config(rl=RLConfig(algorithm="vineppo", group_size=1))
    config = rlvjax.RLVConfig(output_dir="x", algorithm="grpo", group_size=4, config=base).to_config(None, ["math"])
    assert (config.rl.algorithm, config.rl.group_size, config.task.rewards) == ("grpo", 4, ("math",))


class _Scorer:
    def score(self, prompts, completions, **columns):
        return [0.0] * len(completions)


def test_a_bound_method_reward_warns_that_the_config_cannot_name_it(tmp_path, caplog):
    """Its module:qualname resolves to the unbound function, which the written config.gin could not call (no self):
    the run warns, as for a lambda, instead of writing a name a resume fails on."""
    from rlvjax.rewards import registry

    assert registry.name_of(_Scorer().score) is None and registry.name_of(_Scorer.score) is not None
    rlvjax.RLVTrainer(reward_funcs=_Scorer().score, train_dataset=[{"prompt": "1+1="}] * 8,
                      args=rlvjax.RLVConfig(output_dir=str(tmp_path / "run")))
    assert "cannot reproduce the run from the command line" in caplog.text


def _accuracy(prompts, completions, **columns):
    return [0.0] * len(completions)


def test_a_users_registered_reward_warns_that_a_new_process_needs_its_module(tmp_path, monkeypatch, caplog):
    """Its registered name resolves only in a process that imported its module: the CLI's resume or evaluate of the
    run fails with "unknown reward 'acc'", and the trainer's warning advised registering for the opposite. The name
    is kept (a label_reward and a stored run name it); rlvjax's own names warn nothing."""
    from rlvjax.rewards import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("acc")(_accuracy)
    assert registry.name_of(_accuracy) == "acc" and registry.known_only_here("acc") == __name__
    assert registry.known_only_here("math") is None and registry.known_only_here(f"{__name__}:_accuracy") is None
    trainer = rlvjax.RLVTrainer(reward_funcs=[_accuracy, "math"], train_dataset=[{"prompt": "1+1=", "gold": "2"}] * 8,
                                args=rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), verify_label_reward="acc"))
    assert trainer.config.task.rewards == ("acc", "math")
    assert f"reward 'acc' is registered by {__name__}: a new process" in caplog.text and "'math'" not in caplog.text


def test_a_lambda_reward_trains_but_warns_that_the_config_cannot_name_it(tmp_path, caplog):
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"))
    trainer = rlvjax.RLVTrainer(reward_funcs=lambda prompts, completions, **kw: [0.0] * len(completions),
                                train_dataset=[{"prompt": "1+1="}] * 8, args=args)
    assert "cannot reproduce the run from the command line" in caplog.text
    assert trainer.reward.functions[0]([""], [""]) == [0.0]


def test_evaluate_prices_a_test_time_strategy_through_the_api(user_run, monkeypatch, tmp_path):
    import shutil

    from rlvjax.strategies.adaptive import AdaptiveRule
    from rlvjax.strategies.length import LengthRule

    root, namespace, _, _ = user_run
    # On a copy: the other tests of the module read eval/final as the user's (a worker that ran this test first, when
    # it replaced eval/final, failed test_evaluate_returns_and_writes_the_report)
    root = shutil.copytree(root, tmp_path / "user")
    monkeypatch.chdir(root)  # the user's output_dir is relative: taken in the directory the trainer is built in
    trainer = rlvjax.RLVTrainer(reward_funcs=namespace["exact_match"], train_dataset="data.jsonl",
                                eval_dataset="data.jsonl", args=namespace["args"])
    rules = [AdaptiveRule(min_samples=1, round_size=1, max_samples=4, delta=d) for d in (0.5, 0.0)]
    # eval/final holds the fixed strategy's evaluation: refused there, not replaced
    with pytest.raises(ValueError, match=r"holds an evaluation with strategy='fixed', rules=\[\] \(this one: "
                                         r"strategy='adaptive', rules=\['AdaptiveRule\(min_samples=1, "):
        trainer.evaluate(num_samples=4, strategy="adaptive", rules=rules)
    rep = trainer.evaluate(num_samples=4, strategy="adaptive", rules=rules, out="adaptive")["reports"]["1"]["final"]
    points = rep["strategy"]["points"]
    assert [p["rule"]["delta"] for p in points] == [0.5, 0.0]
    assert all(1 <= p["samples_per_problem"] <= 4 for p in points)
    assert rep["strategy"]["fixed"]["ns"] == [1, 2, 4] and (root / "adaptive" / "compute.png").is_file()
    # in the default folder, an adaptive evaluation is not replaced by one with other rules either
    shutil.rmtree(root / "run" / "eval" / "final")
    trainer.evaluate(num_samples=4, strategy="adaptive", rules=rules)
    with pytest.raises(ValueError, match=r"holds an evaluation with rules=\['AdaptiveRule\(.*delta=0.5.*\(this one: "
                                         r"rules=\['AdaptiveRule\(.*delta=0.0"):
        trainer.evaluate(num_samples=4, strategy="adaptive", rules=rules[1:])
    with pytest.raises(ValueError, match="unknown strategy 'beam'"):
        trainer.evaluate(num_samples=4, strategy="beam")
    with pytest.raises(ValueError, match=r"LengthRule.samples=8 is more than the pool's 4 samples"):
        trainer.evaluate(num_samples=4, strategy="length", rules=[LengthRule(budgets=(2, 4), samples=8)])
    # a rule past the pool: its first round refused (the CLI refused it; the API ran it capped), its cap recorded as
    # run (eval.json named max_samples 64 beside a replay on 4 samples)
    with pytest.raises(ValueError, match=r"^AdaptiveRule.min_samples=8 is more than the pool's 4 samples per "
                                         r"problem; lower it, or raise the pool"):
        trainer.evaluate(num_samples=4, strategy="adaptive", rules=[AdaptiveRule(min_samples=8, max_samples=8)])
    capped = trainer.evaluate(num_samples=4, strategy="adaptive", rules=[AdaptiveRule(min_samples=2, delta=0.0)],
                              out="capped")
    point = capped["reports"]["1"]["final"]["strategy"]["points"][0]
    assert point["rule"]["max_samples"] == 4 and point["max_samples"] <= 4


def test_each_run_in_a_process_uses_its_own_compilation_cache(tmp_path):
    """JAX opens its persistent cache once per process: a second run with another directory (or none) kept
    writing to the first. In a subprocess: the cache is process-wide state. Programs that compile in milliseconds
    are kept too (JAX's own default keeps only those over 1 s)."""
    script = """
import os, sys
import jax, jax.numpy as jnp
from rlvjax import experiment
root = sys.argv[1]
for i, target in enumerate([f"{root}/a", f"{root}/b", None]):
    experiment.use_compilation_cache(target)
    jax.jit(lambda x, i=i: x * (i + 2))(jnp.ones(3 + i)).block_until_ready()
    print(*(len(os.listdir(f"{root}/{d}")) if os.path.isdir(f"{root}/{d}") else 0 for d in "ab"))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR",
                                                             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b, off = ([int(n) for n in line.split()] for line in done.stdout.splitlines())
    assert a[0] > 0 == a[1] and b[0] == a[0] and b[1] > 0 and off == b  # a, then b, then nothing written


@pytest.mark.slow
def test_a_run_on_chat_messages_has_text_problems_evaluated_as_the_users_turn(hf_checkpoint, tmp_path):
    """An API run trained on chat messages was recorded "as_is": ``evaluate`` read a text problem verbatim, never
    in the chat template its policy always saw. Its exports (the run's own, and the CLI's of a checkpoint) and
    ``evaluate --workdir`` now render text problems as the user's message."""
    import shutil

    from conftest import word_tokenizer

    model_dir = shutil.copytree(hf_checkpoint("qwen2")[0], tmp_path / "chat_model")
    tokenizer = word_tokenizer(96)
    tokenizer.chat_template = ("{% for m in messages %}{{ 'w1 ' if m['role'] == 'user' else 'w2 ' }}{{ m['content'] }} "
                               "{% endfor %}{% if add_generation_prompt %}w3 {% endif %}")
    tokenizer.save_pretrained(model_dir)
    rows = [{"prompt": [{"role": "user", "content": f"w{10 + i} w{20 + i}"}]} for i in range(8)]
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=1, batch_size=4, group_size=2,
                            max_new_tokens=2, verify_question="w5 w6")
    rlvjax.RLVTrainer(str(model_dir), reward_funcs=length_penalty, train_dataset=rows, args=args).train()
    assert json.loads((tmp_path / "run" / "final" / "rlvjax_sampling.json").read_text())["prompt_format"] == "chat"
    # text rows made the user's message: refused as "the 'arithmetic' task", which the user never chose (review)
    texts = dataclasses.replace(args, output_dir=str(tmp_path / "text_run"), prompt_format="chat")
    rlvjax.RLVTrainer(str(model_dir), reward_funcs=length_penalty, train_dataset=[{"prompt": f"w{10 + i}"} for i in
                                                                                  range(8)], args=texts).train()
    logged = [json.loads(line) for line in (tmp_path / "text_run" / "samples.jsonl").read_text().splitlines()]
    assert logged and all(re.fullmatch(r"w1 w1\d w3 ", s["prompt"]) for s in logged), logged
    # the API's evaluation on text rows renders them alike (it read them verbatim)
    other = rlvjax.RLVTrainer(str(model_dir), reward_funcs=length_penalty, train_dataset=rows, args=args,
                              eval_dataset=[{"prompt": "w40"}, {"prompt": "w41"}])
    evaluation = other.evaluate(num_samples=2)
    folder = tmp_path / "run" / "eval" / f"final-{evaluation['evaluated']['data'].replace(':', '-')}"
    samples = [json.loads(line) for line in (folder / "eval_samples.jsonl").read_text().splitlines()]
    assert {s["prompt"] for s in samples} == {"w1 w40 w3 ", "w1 w41 w3 "}
    assert evaluation["evaluated"]["prompt_format"] == "chat"

    def cli(*args):
        out = forkserver.run([sys.executable, "-m", *args], timeout=300, cwd=REPO,
                             env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.path.join(REPO, "tests")})
        assert out.returncode == 0, out.stderr[-2000:]  # the run's reward is test_trainer:length_penalty

    cli("rlvjax.export", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "exported"))
    # where the run's reward cannot be imported, evaluate --workdir names --reward (one line, nothing written)
    unimported = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path / "run"), "--out",
                                 str(tmp_path / "unimported")], timeout=300, cwd=REPO)
    assert unimported.returncode == 2 and unimported.stderr.strip().endswith(
        "put its module on PYTHONPATH or fix the name; or grade with --reward (e.g. --reward math)"), unimported.stderr
    assert not (tmp_path / "unimported").exists()
    assert json.loads((tmp_path / "exported" / "rlvjax_sampling.json").read_text())["prompt_format"] == "chat"
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"w{40 + i}", "answer": str(i)}) + "\n" for i in range(4)))
    for source in (["--model_dir", str(tmp_path / "exported")], ["--workdir", str(tmp_path / "run")]):
        out = tmp_path / f"eval{source[0]}"
        cli("rlvjax.evaluate", *source, "--data", str(data), "--num_samples", "2", "--max_new_tokens", "2",
            "--out", str(out))
        assert json.loads((out / "eval.json").read_text())["evaluated"]["prompt_format"] == "chat"
        samples = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
        assert {s["prompt"] for s in samples} == {f"w1 w{40 + i} w3 " for i in range(4)}


@pytest.mark.parametrize("kind", ["qwen3", "mistral"])
def test_qwen3_and_mistral_checkpoints_train_and_export_as_their_own_architecture(hf_checkpoint, tmp_path, kind):
    """A Qwen3 (query/key norms) or Mistral checkpoint trains through the API, and its export is the same family:
    transformers loads it as one, with rlvjax's logits, and the step moved every tensor (the query/key norms too)."""
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    source, _ = hf_checkpoint(kind)
    rows = [{"prompt": f"w{10 + i} w{20 + i}"} for i in range(8)]
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=1, batch_size=4, group_size=2,
                            max_new_tokens=3, learning_rate=1e-2, verify_question="w5 w6")
    rlvjax.RLVTrainer(str(source), reward_funcs=length_penalty, train_dataset=rows, args=args).train()
    final = tmp_path / "run" / "final"
    config = json.loads((final / "config.json").read_text())
    family = {"qwen3": "Qwen3ForCausalLM", "mistral": "MistralForCausalLM"}[kind]
    assert (config["model_type"], config["architectures"]) == (kind, [family])
    assert config.get("sliding_window", 4096 if kind == "mistral" else None) is None  # Mistral's default slides
    reloaded = AutoModelForCausalLM.from_pretrained(final).eval()
    assert type(reloaded).__name__ == family
    ids = np.random.default_rng(0).integers(3, 96, (2, 9))
    with torch.no_grad():
        theirs = reloaded(torch.tensor(ids)).logits.numpy()
    ours, _ = rlvjax.load_hf(final, tokenizer=False)
    np.testing.assert_allclose(np.asarray(ours(np.asarray(ids))), theirs, atol=1e-4, rtol=0)
    before, after = load_file(source / "model.safetensors"), load_file(final / "model.safetensors")
    assert before.keys() == after.keys()
    assert any("q_norm" in name for name in after) == (kind == "qwen3")
    unchanged = [name for name in before if np.array_equal(before[name], after[name].astype(before[name].dtype))]
    assert not unchanged, unchanged


@pytest.mark.slow
def test_the_cli_and_the_api_resuming_a_finished_run_take_its_report_for_theirs(tmp_path, capsys):
    """The API identified its in-memory eval rows by their values, the CLI (resuming the run from its config) by the
    bytes of the file they were written to: each took the other's report for another's and sampled it again, on
    every switch between ``train --resume`` and ``trainer.train(resume=True)`` (hours at K = 64 on MATH-500)."""
    rows = [{"prompt": f"{i}+1=", "target": str(i + 1)} for i in range(8)]
    evals = [{"prompt": f"{i}+2=", "target": str(i + 2)} for i in range(2)]
    from rlvjax.config import Config

    base = Config()
    args = rlvjax.RLVConfig(output_dir=str(tmp_path / "run"), num_steps=1, batch_size=4, group_size=2,
                            max_new_tokens=2, config=dataclasses.replace(
                                base, run=dataclasses.replace(base.run, final_eval_samples=2)))
    trainer = rlvjax.RLVTrainer(reward_funcs=length_penalty, train_dataset=rows, eval_dataset=evals, args=args)
    trainer.train()
    report = (tmp_path / "run" / "eval.json").read_text()
    again = "eval.json already reports these policies with these settings; not evaluated again"
    assert again not in capsys.readouterr().err
    out = forkserver.run([sys.executable, "-m", "rlvjax.train", "--workdir", str(tmp_path / "run"), "--resume"],
                         timeout=300, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": os.path.join(REPO, "tests"), "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0 and again in out.stderr, out.stderr[-2000:]
    rlvjax.RLVTrainer(reward_funcs=length_penalty, train_dataset=rows, eval_dataset=evals, args=args).train(
        resume=True)
    assert again in capsys.readouterr().err
    assert (tmp_path / "run" / "eval.json").read_text() == report
