"""The catalogue of bad inputs (docs/errors.md): each ends in one line naming the problem and the fix, a non-zero
exit, and nothing written.

Most cases call the train CLI in this process (``cli.run_main`` around ``train.launch``, exactly what
``python -m rlvjax.train`` runs after flag parsing); a few run the real subprocess to prove the exit code and
the single stderr line end to end (more in test_cli.py).
"""

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import gin
import jax.numpy as jnp
import numpy as np
import pytest

from safetensors.numpy import load_file, save_file

from rlvjax import checkpoint, cli, experiment, export, outputs, resume, testtime, train
from rlvjax.checkpoint import Checkpointer, DamagedCheckpoint
from rlvjax.config import Config
from rlvjax.data import sources
from rlvjax.model.hf import save_hf
from conftest import xla_flags
import forkserver

REPO = Path(__file__).resolve().parents[1]
DIGIT = str(REPO / "configs" / "digit_smoke.gin")
TINY = ["WarmStartConfig.num_steps = 0", "RunConfig.num_steps = 2", "RunConfig.export_final = False"]


def train_error(workdir, bindings=(), *, gin_files=(DIGIT,), resume=False, capsys) -> tuple[int, str]:
    """Runs the train CLI in-process; returns (exit code, its one error line). The run must fail."""
    gin.clear_config()
    entry = cli.run_main("rlvjax.train", lambda argv: train.launch(list(gin_files), [*TINY, *bindings],
                                                                     str(workdir), resume=resume))
    try:
        with pytest.raises(SystemExit) as exit_info:
            entry([])
    finally:
        gin.clear_config()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rlvjax.train: error:")]
    assert len(lines) == 1, err[-3000:]
    return exit_info.value.code, lines[0]


def assert_fails_cleanly(tmp_path, capsys, bindings=(), *, expect, gin_files=(DIGIT,), code=2):
    workdir = tmp_path / "run"
    got_code, line = train_error(workdir, bindings, gin_files=gin_files, capsys=capsys)
    assert got_code == code
    assert expect in line, line
    assert not workdir.exists(), sorted(p.name for p in workdir.rglob("*"))  # nothing half-written
    return line


# --- config: gin syntax, names, values ----------------------------------------------------------------------------

CONFIG_CASES = {
    # the random model's sizes: 0 trained a step and failed saving it (hanging at times), negative ones tracebacks
    "model_size_zero": (["ModelSpec.hidden_size = 0"], "ModelSpec.hidden_size=0: each of the random model's sizes "
                                                       "must be >= 1"),
    "heads_do_not_divide": (["ModelSpec.num_kv_heads = 3"], "ModelSpec: hidden_size=128 must split into num_heads=4 "
                                                            "heads, and num_heads into num_kv_heads=3 groups"),
    "num_eval_negative": (["TaskSpec.num_eval = -1"], "must be >= 1 and TaskSpec.num_eval=-1 >= 0 (problems)"),
    "seed_past_32_bits": (["RunConfig.seed = 4294967296"], "RunConfig.seed=4294967296 must be in [0, 2**32)"),
    "task_seed_negative": (["TaskSpec.seed = -1"], "TaskSpec.seed=-1 must be in [0, 2**32)"),
    "bad_gold_policy": (["TaskSpec.on_bad_gold = 'drop'"], "TaskSpec.on_bad_gold='drop': use 'skip' or 'error'"),
    "empty_train_file": (["TaskSpec.name = 'file'", "TaskSpec.train_file = ''"],
                         "TaskSpec.train_file is empty; name a .jsonl/.json/.parquet file or a datasets id"),
    "memory_budget_not_positive": (["MemoryConfig.device_memory_gib = 0.0"],
                                   "MemoryConfig.device_memory_gib=0.0 must be > 0 (or None"),
    "unknown_configurable": (["Nope.x = 1"], "No configurable matching 'Nope' (In bindings string line 4 Nope.x = 1); "
                                             "docs/config.md lists every Section.field"),
    # a field bound under the wrong section or misspelt: the hint listed source files and named no section
    "field_of_other_sections": (["RLConfig.num_steps = 5"], "doesn't have a parameter named 'num_steps' (In bindings "
                                "string line 4 RLConfig.num_steps = 5); WarmStartConfig and RunConfig have it: write "
                                "WarmStartConfig.num_steps or RunConfig.num_steps"),
    "misspelt_field": (["VerifierConfig.treshold = 0.5"], "; did you mean VerifierConfig.threshold?"),
    "misspelt_section": (["RLconfig.lambda_verify = 0.5"], "No configurable matching 'RLconfig' (In bindings string "
                         "line 4 RLconfig.lambda_verify = 0.5); did you mean RLConfig?"),
    # gin read it as a macro nothing uses, and the run trained with lambda = 1.0
    "misspelt_bare_field": (["lamda_verify = 0.5"], "gin binding `lamda_verify = ...` binds no config field (gin reads "
                            "it as a macro that nothing uses); did you mean lambda_verify, written as "
                            "RLConfig.lambda_verify?"),
    # the run went on with no eval/* metric in any row and no word
    "eval_every_without_eval_problems": (["TaskSpec.num_eval = 0"], "RunConfig.eval_every=10 evaluates the policy "
                                         "during training, but the task has no eval problems; give some "
                                         "(TaskSpec.eval_file / num_eval, or eval_dataset) or set RunConfig.eval_every "
                                         "= 0"),
    "unknown_algorithm": (["RLConfig.algorithm = 'ppo'"], "unknown advantage estimator 'ppo'; valid names"),
    "eps_not_positive": (["RLConfig.eps_low = 0.0"], "RLConfig.eps_low=0.0 must be in (0, 1) (the ratio's lower"),
    "group_size_below_2": (["RLConfig.group_size = 1"],
                           "RLConfig.group_size=1: grpo compares samples of one problem, use >= 2"),
    "wrong_value_type": (["RLConfig.group_size = '8'"],
                         "RLConfig.group_size='8' must be an int, not a str; fix the binding's value"),
    "float_step_count": (["RunConfig.num_steps = 2.0"],
                         "RunConfig.num_steps=2.0 must be an int, not a float; fix the binding's value"),
    "float_model_size": (["ModelSpec.hidden_size = 64.0"],
                         "ModelSpec.hidden_size=64.0 must be an int, not a float; fix the binding's value"),
    "string_mesh_axis": (["MeshConfig.data = '1'"], "MeshConfig.data='1' must be an int, not a str"),
    "list_for_a_tuple": (["TaskSpec.levels = [2, 3]"], "TaskSpec.levels=[2, 3] must be a tuple of int, not a list"),
    "warm_start_type": (["WarmStartConfig.batch_size = 'big'"], "WarmStartConfig.batch_size='big' must be an int"),
    "text_without_quotes": (["TaskSpec.name = arithmetic"], "malformed gin config in the --gin_param bindings line 4: "
                            "arithmetic is not a Python literal; text needs quotes, e.g. TaskSpec.name = 'arithmetic'"),
    "learning_rate_not_positive": (["OptimConfig.learning_rate = 0.0"], "OptimConfig.learning_rate=0.0 must be > 0"),
    "checkpoint_every_zero": (["RunConfig.checkpoint_every = 0"], "RunConfig.checkpoint_every=0 must be >= 1"),
    "final_report_without_eval_problems": (["RunConfig.final_eval_samples = 2", "RunConfig.export_final = True",
                                            "TaskSpec.num_eval = 0"],
                                           "RunConfig.final_eval_samples=2 asks for an end-of-run report, but the task "
                                           "has no eval problems; give some (TaskSpec.eval_file / num_eval, or "
                                           "eval_dataset) or set RunConfig.final_eval_samples = 0"),
    "warm_start_examples_below_batch": (["WarmStartConfig.num_steps = 2", "WarmStartConfig.num_examples = 4"],
                                        "WarmStartConfig.num_examples=4 is fewer than its batch_size=32 (a step "
                                        "draws distinct examples); raise num_examples or lower batch_size"),
    "eval_samples_one": (["RunConfig.eval_samples = 1"],
                         "RunConfig.eval_samples=1 must be >= 2 (best-of-K compares a problem's samples)"),
    "final_eval_samples_not_a_power_of_two": (["RunConfig.final_eval_samples = 6"],
                                              "RunConfig.final_eval_samples=6: use 0 (no final report) or a power of "
                                              "two >= 2 (the report's curve doubles N up to the pool)"),
    "eval_temperature_zero": (["RunConfig.eval_temperature = 0.0"],
                              "RunConfig.eval_temperature=0.0 must be >= 1e-05 (votes need distinct samples) or None "
                              "(the RL sampling temperature)"),
    # accepted, then refused by the eval sampler after the warm start, naming RLConfig.temperature
    "eval_temperature_tiny": (["RunConfig.eval_temperature = 1e-6"],
                              "RunConfig.eval_temperature=1e-06 must be >= 1e-05 (votes need distinct samples) or None "
                              "(the RL sampling temperature)"),
    # 1e999 parses as inf, which passed ">= 0" and wrote a config.gin ("= inf") that gin cannot read back.
    "scoped_binding": (["eval/RLConfig.group_size = 4"],  # used to be ignored: the run trained with group_size 8
                       "gin binding eval/RLConfig.group_size has a scope, which rlvjax does not use (it would be "
                       "ignored); drop the 'eval/'"),
    "lambda_verify_inf": (["RLConfig.lambda_verify = 1e999"],
                          "RLConfig.lambda_verify=inf must be a finite number (where inf means no bound, give a large "
                          "number, e.g. 1e9)"),
    "max_value_too_large": (["TaskSpec.max_value = 1000"],  # refused only when problems were generated
                            "TaskSpec.max_value=1000 must be in 2..99"),
    "levels_empty": (["TaskSpec.levels = ()"],  # a ZeroDivisionError traceback
                     "TaskSpec.levels=() must name at least one level, each >= 1 (steps per problem)"),
    # inside a tuple it passed, and a weight of inf made every reward inf or nan
    "reward_weight_inf": (["TaskSpec.reward_weights = (1e999,)"],
                          "TaskSpec.reward_weights=(inf,) must hold finite numbers only"),
    "minibatches_do_not_split": (["RLConfig.num_minibatches = 3"],
                                 "64 rollouts per step (batch_size 8 x group_size 8) do not split into "
                                 "RLConfig.num_minibatches=3; pick a divisor"),
    "mesh_larger_than_devices": (["MeshConfig.data = 2"], "needs 2 devices but 1 are present; set MeshConfig sizes"),
    "unknown_task": (["TaskSpec.name = 'chess'"], "unknown task 'chess'; use one of ['arithmetic', 'digit', 'file']"),
    "unknown_remat": (["RLConfig.remat = 'some'"], "RLConfig.remat: unknown remat policy 'some'; valid names: ['none', "
                                                   "'full', "),
    "bad_compute_dtype": (["ModelSpec.compute_dtype = 'fp8'"],
                          "ModelSpec.compute_dtype='fp8' is not a dtype rlvjax trains in; use 'float32' or "
                          "'bfloat16'"),
    "float16_weights": (["ModelSpec.dtype = 'float16'"],  # trained, and saved NaN weights in every checkpoint
                        "ModelSpec.dtype='float16' would keep the weights and AdamW's moments in float16, where the "
                        "optimizer's update overflows and the weights turn NaN; use dtype='float32' with "
                        "compute_dtype='bfloat16'"),
    # no loss scaling: gradients underflowed float16 (review 2026-12-06), and the float16-weights line advised it
    "float16_compute": (["ModelSpec.compute_dtype = 'float16'"],
                        "ModelSpec.compute_dtype='float16' trains without loss scaling, which rlvjax does not do: "),
    # the peak rate passed, the cosine schedule's floor (10%) is below the limit for the last half of the run
    "bfloat16_weights_cosine_floor": (
        ["ModelSpec.dtype = 'bfloat16'", "OptimConfig.learning_rate = 1e-4", "OptimConfig.schedule = 'cosine'"],
        "an update of OptimConfig.learning_rate=0.0001 (its cosine schedule decays to 1.0e-05) rounds away"),
    # bf16 weights at the paper's learning rate: one update moved 2% of the weights, silently
    "bfloat16_weights_learning_rate": (
        ["ModelSpec.dtype = 'bfloat16'", "OptimConfig.learning_rate = 1e-6"],
        "ModelSpec.dtype='bfloat16' keeps the weights in bfloat16, whose spacing around a typical weight (0.02) is "
        "1.2e-04: an update of OptimConfig.learning_rate=1e-06 rounds away and most weights never change; keep "
        "dtype='float32' with compute_dtype='bfloat16' (float32 weights, bfloat16 matmuls), or raise it so that it "
        "stays >= 6.1e-05"),
    "bfloat16_weights_warm_start": (["ModelSpec.dtype = 'bfloat16'", "WarmStartConfig.num_steps = 10",
                                     "WarmStartConfig.learning_rate = 1e-5"],
                                    "an update of WarmStartConfig.learning_rate=1e-05 (its cosine schedule decays to "
                                    "5.0e-07) rounds away"),
    "bad_max_prompt_tokens": (["TaskSpec.max_prompt_tokens = 0"],
                              "TaskSpec.max_prompt_tokens=0 must be a whole number >= 1 (or None: no limit)"),
    "all_prompts_too_long": (["TaskSpec.max_prompt_tokens = 1"],
                             "every train prompt is longer than TaskSpec.max_prompt_tokens=1; raise it"),
    # A wrong type in every other section too.
    "verify_question_type": (["VerifierConfig.question = 1"],
                             "VerifierConfig.question=1 must be a str, not an int; fix the binding's value"),
    "verify_threshold_type": (["VerifierConfig.threshold = '0.5'"], "VerifierConfig.threshold='0.5' must be a float"),
    "unknown_label_reward": (["VerifierConfig.label_reward = 'format'"],
                             "VerifierConfig.label_reward='format' names none of TaskSpec.rewards ('math',); name "
                             "the one that says whether an answer is right, or leave it empty to label by the weighted "
                             "sum"),
    "optimizer_type": (["OptimConfig.b1 = '0.9'"], "OptimConfig.b1='0.9' must be a float, not a str"),
    "memory_type": (["MemoryConfig.refuse = 'yes'"], "MemoryConfig.refuse='yes' must be a bool, not a str"),
    "conventions_type": (["Conventions.score = 1"], "Conventions.score=1 must be a str, not an int"),
    "reward_weights_type": (["TaskSpec.reward_weights = 1.0"],
                            "TaskSpec.reward_weights=1.0 must be a tuple of float or None, not a float"),
    "reward_weights_count": (["TaskSpec.reward_weights = (1.0, 2.0)"],
                             "TaskSpec.reward_weights has 2 weights for 1 rewards ('math',); give one weight per reward"),
    "unknown_reward": (["TaskSpec.rewards = ('exact',)"], "TaskSpec.rewards: unknown reward 'exact'; use one of "
                                                          "['math'] or 'module:function'"),
    "unimportable_reward": (["TaskSpec.rewards = ('no_such_module:f',)"],
                            "TaskSpec.rewards: cannot import 'no_such_module:f' (No module named 'no_such_module'); "
                            "put its module on PYTHONPATH or fix the name"),
    "hub_id_offline": (["ModelSpec.hf_dir = 'nobody/no-such-model'"],
                       "model 'nobody/no-such-model' is not a local directory and not in the Hugging Face cache, and "
                       "the hub cannot be reached (HF_HUB_OFFLINE set, or no network); download it once online or "
                       "pass a local directory"),
    "empty_verify_question": (["VerifierConfig.question = ' '"], "VerifierConfig.question is empty; ask the model "
                                                                 "something"),
    # settings another one made void (review, 2026-12-06): each trained or reported without a word on something other
    # than the config said, exit 0
    "data_file_of_a_generated_task": (["TaskSpec.train_file = '/nonexistent/train.jsonl'"],
                                      "TaskSpec.train_file='/nonexistent/train.jsonl' is not read by the 'digit' task, "
                                      "which generates its problems; set TaskSpec.name = 'file' to train on it"),
    "chat_prompts_of_a_generated_task": (["TaskSpec.prompt_format = 'chat'"],
                                         "TaskSpec.prompt_format='chat' is not applied by the 'digit' task, whose "
                                         "prompts are its own"),
    "threshold_labels_all_yes": (["VerifierConfig.threshold = 0.0"], "VerifierConfig.threshold=0 labels every rollout "
                                                                     "Yes: the math reward is 0 or 1; use a threshold "
                                                                     "in (0, 1]"),
    "threshold_labels_all_no": (["VerifierConfig.threshold = 5.0", "VerifierConfig.label_reward = 'math'"],
                                "VerifierConfig.threshold=5 labels every rollout No"),
    "report_without_export": (["RunConfig.final_eval_samples = 2"],  # TINY: export_final = False
                              "RunConfig.final_eval_samples=2 asks for the end-of-run report, which evaluates the "
                              "exported final/ that RunConfig.export_final = False does not write"),
    "baseline_of_lambda_0": (["RunConfig.baseline = True", "RLConfig.lambda_verify = 0.0"],
                             "RLConfig.lambda_verify is 0 already: the same run twice; set RunConfig.baseline = False"),
    "tokenizer_beside_an_hf_model": (["ModelSpec.hf_dir = 'nobody/no-such-model'", "ModelSpec.tokenizer_dir = 'tok'"],
                                     "ModelSpec.tokenizer_dir is a random model's; the model in ModelSpec.hf_dir uses "
                                     "its own tokenizer: drop tokenizer_dir"),
    "odd_head_dimension": (["ModelSpec.hidden_size = 12", "ModelSpec.num_heads = 4", "ModelSpec.num_kv_heads = 2"],
                           "ModelSpec: hidden_size=12 / num_heads=4 = 3, the head dimension, must be even"),
    "validation_problems_too_few": (["TaskSpec.name = 'arithmetic'", "TaskSpec.max_value = 3", "TaskSpec.levels = (1,)",
                                     "TaskSpec.num_eval = 2", "TaskSpec.eval_split = 'validation'"],
                                    "lower TaskSpec.num_eval, or raise TaskSpec.max_value or add levels (TaskSpec."
                                    "levels) (TaskSpec.eval_split='validation' takes the 2 problems after the 2 test "
                                    "ones)"),
}


# A user's reward module, imported by name as the CLI would ("module:function").
REWARDS = """
import math

def raises(prompts, completions, **columns):
    raise KeyError("gold_answer")

def too_few(prompts, completions, **columns):
    return [0.0]

def not_finite(prompts, completions, **columns):
    return [math.nan] * len(completions)

def per_prompt(prompts, completions, **columns):  # one value per distinct prompt, not per completion
    return [0.0] * len(set(prompts))

def needs_target(prompts, completions, target, **columns):
    return [float(c == t) for c, t in zip(completions, target)]

def strings(prompts, completions, **columns):
    return ["0.5"] * len(completions)

def nested(prompts, completions, **columns):
    return [[0.0] * len(completions)]
"""
REWARD_CASES = {
    "raises": "reward function 'user_rewards:raises' raised KeyError: 'gold_answer'; fix the function",
    "too_few": "reward function 'user_rewards:too_few' returned 1 values for 4 completions; return one number per "
               "completion",
    # the probe's two prompts had one completion each: this passed it and failed the run's first step
    "per_prompt": "reward function 'user_rewards:per_prompt' returned 2 values for 4 completions; return one number "
                  "per completion",
    "not_finite": "reward function 'user_rewards:not_finite' returned a non-finite value (nan); return finite numbers "
                  "(None where the reward does not apply to a completion: it then adds nothing, as in TRL)",
    "strings": "reward function 'user_rewards:strings' returned a str ('0.5') among its values, not a flat list of "
               "numbers; return one number per completion",
    "nested": "reward function 'user_rewards:nested' returned list of shape (1, 4), not a flat list of numbers; "
              "return one number per completion",
    "needs_target": "reward 'user_rewards:needs_target' needs column(s) ['target'] that row 1 of the train data lacks "
                    "(it has ['gold', 'id', 'level', 'prompt']); add them to every row or change the reward",
}


@pytest.mark.parametrize("case", sorted(REWARD_CASES))
def test_bad_reward_functions(tmp_path, capsys, monkeypatch, case):
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "user_rewards.py").write_text(REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path / "mod"))
    assert_fails_cleanly(tmp_path, capsys, [f"TaskSpec.rewards = ('user_rewards:{case}',)"],
                         expect=REWARD_CASES[case])


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_values(tmp_path, capsys, case):
    bindings, expect = CONFIG_CASES[case]
    assert_fails_cleanly(tmp_path, capsys, bindings, expect=expect)


def test_a_resume_is_checked_as_a_start_where_the_runs_own_config_passes(tmp_path, capsys):
    """What a resume may change (the report, the baseline, the data files) was not checked: `--resume --gin_param
    RunConfig.final_eval_samples = 2` on a run with export_final = False went on, exit 0, with no report and no word
    (review "config", 2026-12-07). A stored config the checks refuse (an older rlvjax accepted it) stays resumable."""
    workdir = tmp_path / "run"
    fake_run(workdir, ["RunConfig.final_eval_samples = 0"])
    before = sorted((p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob("*"))
    for binding, message in (("RunConfig.final_eval_samples = 2", "RunConfig.final_eval_samples=2 asks for the "
                              "end-of-run report, which evaluates the exported final/ that RunConfig.export_final = "
                              "False does not write"),
                             ("TaskSpec.train_file = 'x.jsonl'", "TaskSpec.train_file='x.jsonl' is not read by the "
                              "'digit' task, which generates its problems")):
        code, line = train_error(workdir, [binding], resume=True, capsys=capsys)
        assert code == 2 and message in line, line
    assert sorted((p.relative_to(workdir), p.stat().st_mtime_ns) for p in workdir.rglob("*")) == before
    # the periodic eval without eval problems (refused since 2026-12-07): a run started so stays resumable as it is
    kept = tmp_path / "kept"
    fake_run(kept, ["TaskSpec.num_eval = 0", "RunConfig.final_eval_samples = 0"])  # eval_every = 10 (digit_smoke)
    code, line = train_error(kept, ["TaskSpec.num_eval = 0", "RunConfig.final_eval_samples = 0"], resume=True,
                             capsys=capsys)
    assert "eval_every" not in line, line
    code, line = train_error(kept, ["TaskSpec.num_eval = 0", "RunConfig.final_eval_samples = 0",
                                    "RunConfig.eval_every = 5"], resume=True, capsys=capsys)
    assert code == 2 and "RunConfig.eval_every=5 evaluates the policy during training, but the task has no eval " \
        "problems" in line, line


def test_a_warm_up_the_run_never_finishes_is_said(tmp_path, capsys):
    """OptimConfig.warmup_steps = 100000 on a 2-step run trained at learning rates 0 and 4e-9 without a word. A
    warning, not a refusal: a smoke run of a long config is a fair thing to start."""
    gin.clear_config()
    entry = cli.run_main("rlvjax.train", lambda argv: train.launch(
        [DIGIT], [*TINY, "OptimConfig.warmup_steps = 100000", "TaskSpec.num_eval = 0"], str(tmp_path / "run")))
    try:
        with pytest.raises(SystemExit):
            entry([])  # then stopped by the eval_every check below it, before anything is written
    finally:
        gin.clear_config()
    err = capsys.readouterr().err
    assert "warning: OptimConfig.warmup_steps=100000 is not below the run's 2 optimizer updates: the learning rate " \
        "never reaches OptimConfig.learning_rate=0.001 (the last update's is 1e-08)" in err, err[-2000:]


def test_a_resume_with_nothing_saved_is_checked_as_a_first_launch(tmp_path, capsys):
    """`--resume` on a workdir with nothing stored is a first launch (a sweep's --resume of a run not yet started):
    the checks of a starting run apply (review diff17: it trained the digit task beside a train_file, exit 0)."""
    code, line = train_error(tmp_path / "run", ["TaskSpec.train_file = '/nonexistent/train.jsonl'"], resume=True,
                             capsys=capsys)
    assert code == 2 and "is not read by the 'digit' task, which generates its problems" in line, line
    assert not (tmp_path / "run").exists()


def test_a_baseline_that_would_not_run_is_refused_before_the_main_run(tmp_path, capsys):
    """Its config differs from the run's (no partial-solution rows at lambda = 0): a micro-batch that divides only
    the main run's rows failed after the whole main run had trained (review diff18)."""
    code, line = train_error(tmp_path / "run", ["RunConfig.baseline = True", "RLConfig.verify_prefixes = 1",
                                                "RLConfig.micro_batch_size = 128"], capsys=capsys)
    assert code == 2 and line.endswith(
        "the lambda = 0 baseline (RunConfig.baseline = True) would not run: minibatch of 64 training rows is not a "
        "multiple of RLConfig.micro_batch_size=128; pick a divisor (0: no accumulation)"), line
    assert not (tmp_path / "run").exists()


def test_the_baseline_of_a_random_model_with_its_own_tokenizer_runs():
    """Its config named the warm start's export beside the random model's tokenizer_dir, which the baseline's own
    run refused after the main run had trained (review diff19): the export's tokenizer is the baseline's, and the
    start-up check builds the baseline as it will run."""
    config = Config.from_dict({"model": {"tokenizer_dir": "Qwen/Qwen2.5-Math-1.5B"}, "run": {"baseline": True},
                               "warm_start": {"num_steps": 10}})
    config.check_consistent()
    assert config.lambda0_baseline("/run/warm_start").model.tokenizer_dir is None


def test_a_resume_that_lowers_a_bfloat16_runs_learning_rate_is_checked(tmp_path, capsys):
    """A resume may change the learning rate: one below bfloat16's spacing is refused as at a start (after the
    resume-skips-the-checks fix it trained on, review diff19); the run's own rate passes."""
    fake_run(tmp_path / "run", ["ModelSpec.dtype = 'bfloat16'", "OptimConfig.learning_rate = 1e-4"])
    code, line = train_error(tmp_path / "run", ["ModelSpec.dtype = 'bfloat16'", "OptimConfig.learning_rate = 1e-6"],
                             resume=True, capsys=capsys)
    assert code == 2 and "an update of OptimConfig.learning_rate=1e-06 rounds away" in line, line
    code, line = train_error(tmp_path / "run", ["ModelSpec.dtype = 'bfloat16'", "OptimConfig.learning_rate = 1e-4"],
                             resume=True, capsys=capsys)
    assert "rounds away" not in line, line  # it goes on (to restore the stand-in state, which fails here)


def test_a_run_an_older_rlvjax_accepted_stays_resumable(tmp_path, capsys):
    """float16 compute (which the float16-weights line once advised) is refused when a run starts; a run trained
    with it before was refused on --resume, with no setting left that resumes it (review diff18)."""
    fake_run(tmp_path / "run", ["ModelSpec.compute_dtype = 'float16'"])
    code, line = train_error(tmp_path / "run", ["ModelSpec.compute_dtype = 'float16'"], resume=True, capsys=capsys)
    assert "loss scaling" not in line, line  # it goes on (to restore the stand-in state, which fails here)
    code, line = train_error(tmp_path / "fresh", ["ModelSpec.compute_dtype = 'float16'"], capsys=capsys)
    assert code == 2 and "ModelSpec.compute_dtype='float16' trains without loss scaling" in line, line


def test_malformed_gin_file_and_missing_gin_file(tmp_path, capsys):
    bad = tmp_path / "bad.gin"
    bad.write_text("RLConfig.group_size = 4\nRLConfig.lambda_verify = (1,\n")
    line = assert_fails_cleanly(tmp_path, capsys, gin_files=[DIGIT, str(bad)],
                                expect=f"malformed gin config in {bad} line 3: EOF in multi-line statement; each "
                                       "binding is 'Configurable.parameter = python_literal'")
    assert "Traceback" not in line
    assert_fails_cleanly(tmp_path, capsys, gin_files=[str(tmp_path / "nope.gin")],
                         expect=f"no such gin file: {tmp_path / 'nope.gin'}; check the --gin_file path")
    # The same in an included file: named by its include statement (it named the including file, as a raw tuple).
    including = tmp_path / "including.gin"
    including.write_text(f"RLConfig.group_size = 4\ninclude '{bad}'\n")
    assert_fails_cleanly(tmp_path, capsys, gin_files=[DIGIT, str(including)],
                         expect=f"malformed gin config in the file `include '{bad}'` ({including} line 2) includes, at "
                                "its line 3: EOF in multi-line statement; close every bracket and quote")
    # An unbound macro: gin's message held the whole config text.
    assert_fails_cleanly(tmp_path, capsys, ["RLConfig.group_size = %G"],
                         expect="gin macro %G is used but never bound; bind it (e.g. G = 8) or write the value in its "
                                "place")
    # A field without its dataclass: gin read it as a macro nothing uses, and the run trained with the old value.
    assert_fails_cleanly(tmp_path, capsys, ["lambda_verify = 0.0"],
                         expect="gin binding `lambda_verify = ...` binds no config field (gin reads it as a macro that "
                                "nothing uses); write it as RLConfig.lambda_verify")
    assert_fails_cleanly(tmp_path, capsys, ["num_steps = 5"], expect="write it as WarmStartConfig.num_steps or "
                                                                     "RunConfig.num_steps")
    # A file's own macro whose one use a --gin_param overrides (a sweep over a base file) is left alone.
    base = tmp_path / "base.gin"
    base.write_text(f"include '{DIGIT}'\nG = 8\nRLConfig.group_size = %G\n")
    gin.clear_config()
    try:
        cli.parse_gin([str(base)], ["RLConfig.group_size = 4"])
        assert Config.from_gin().rl.group_size == 4
    finally:
        gin.clear_config()


# --- data files ---------------------------------------------------------------------------------------------------


def data_file(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / "data" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return str(path)


def rows(*records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


GOOD = {"prompt": "1 + 1 =", "gold": "2"}  # what the built-in arithmetic tokenizer can encode
DATA_CASES = {
    "missing": (None, "no such data file: {path}; check the path"),
    "empty": (b"\n\n", "{path} is empty; expected one JSON object per line"),
    "not_utf8": (rows(GOOD) + b'{"prompt": "caf\xe9", "gold": "1"}\n',
                 "{path}: line 2 is not UTF-8 (byte 0xe9 at column 16); re-encode the file as UTF-8"),
    "row_missing_field": (rows(GOOD, {"question_text": "2 + 2?", "gold": "4"}),
                          "{path}: line 2 lacks field 'prompt' or 'question'; add it (the rows are read as the "
                          "'generic' schema, whose fields every row needs)"),
    "no_usable_gold": (rows({"prompt": "a", "gold": ""}, {"prompt": "b", "gold": None}),
                       "{path}: none of its 2 rows has a usable gold answer for schema 'generic'; give each row an "
                       "answer in 'gold' or 'answer' (the answer itself, not a sentence or a working; not empty, "
                       "braces balanced, at most 1000 characters)"),
    # The built-in arithmetic tokenizer has only digits and operators: it would drop the instruction's letters
    # (and any CJK) silently, and the model would see another problem.
    "unencodable_prompt": (rows(*[GOOD] * 4, {"prompt": "计算 1 + 1", "gold": "2"}, *[GOOD] * 3),
                           "8 train prompt(s) hold characters the tokenizer cannot encode (record "
                           "unencodable_prompt-0: 'P', 'l', 'e', 'a', 's', ...; and 7 more record(s)); use a model "
                           "whose tokenizer covers them"),
    "too_few_rows_for_a_batch": (rows(*[GOOD] * 3),
                                 "3 records over 1 processes cannot fill one batch of 8 per process; lower "
                                 "batch_size or add data"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_files(tmp_path, capsys, case):
    content, expect = DATA_CASES[case]
    path = str(tmp_path / "data" / "absent.jsonl") if content is None else data_file(tmp_path, f"{case}.jsonl",
                                                                                      content)
    assert_fails_cleanly(tmp_path, capsys, ["TaskSpec.name = 'file'", f"TaskSpec.train_file = '{path}'",
                                            "RunConfig.eval_every = 0"],  # no eval file: digit_smoke's 10 is refused
                         expect=expect.format(path=path))


def test_warm_start_on_a_task_without_generated_solutions(tmp_path, capsys):
    path = data_file(tmp_path, "ok.jsonl", rows(*[GOOD] * 16))
    assert_fails_cleanly(tmp_path, capsys, ["TaskSpec.name = 'file'", f"TaskSpec.train_file = '{path}'",
                                            "WarmStartConfig.num_steps = 10", "RunConfig.eval_every = 0"],
                         expect="task 'file' has no generated solutions for a warm start; set "
                                "WarmStartConfig.num_steps = 0 and start from an instruction-tuned checkpoint")


def test_unparseable_gold_rows_are_skipped_counted_and_logged_or_refused(tmp_path, caplog):
    path = data_file(tmp_path, "mixed.jsonl", rows(GOOD, {"prompt": "b", "gold": " "}, GOOD))
    with caplog.at_level(logging.WARNING):
        records, stats = sources.load_records(path)
    assert len(records) == 2 and (stats.rows, stats.kept, stats.skipped_bad_gold) == (3, 2, 1)
    assert stats.bad_gold_rows == ("line 2",)
    assert (f"{path}: skipped 1 of 3 rows with no usable gold answer for schema 'generic' (line 2); give them an "
            "answer in 'gold' or 'answer' (the answer itself, not a sentence or a working; not empty, braces "
            "balanced, at most 1000 characters) or remove them") \
        in caplog.text
    with pytest.raises(ValueError, match=r"line 2 has no usable gold answer for schema 'generic'; fix the row"):
        sources.load_records(path, on_bad_gold="error")


# --- models: HF directories and tokenizers ------------------------------------------------------------------------


@pytest.fixture
def hf_copy(hf_checkpoint, tmp_path):
    source, _ = hf_checkpoint("qwen2_tied")
    target = tmp_path / "hf"
    shutil.copytree(source, target)
    return target


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_hf_dir_missing_tensors(tmp_path, capsys, hf_copy):
    tensors = load_file(hf_copy / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, hf_copy / "model.safetensors", metadata={"format": "pt"})
    assert_fails_cleanly(tmp_path, capsys, [f"ModelSpec.hf_dir = '{hf_copy}'"],
                         expect="is missing tensors for parameters ['layers/1/mlp/up_proj/kernel'] (1 of ")


def test_hf_dir_tied_in_config_with_its_own_head_in_the_weights(tmp_path, capsys, hf_copy):
    # A fine-tune that untied the head but kept the config: transformers keeps the stored head; tying it away would
    # compute other logits. The same head as the embedding (a tied model saved with both) loads as before.
    tensors = load_file(hf_copy / "model.safetensors")
    embedding = tensors["model.embed_tokens.weight"]
    save_file({**tensors, "lm_head.weight": embedding.copy()}, hf_copy / "model.safetensors", metadata={"format": "pt"})
    from rlvjax.model.hf import load_hf

    load_hf(hf_copy, tokenizer=False)
    save_file({**tensors, "lm_head.weight": embedding + 0.5}, hf_copy / "model.safetensors", metadata={"format": "pt"})
    assert_fails_cleanly(tmp_path, capsys, [f"ModelSpec.hf_dir = '{hf_copy}'"],
                         expect="config.json says tie_word_embeddings=true, but the weights hold an lm_head.weight "
                                "that differs from the embedding; set \"tie_word_embeddings\": false in config.json")


def test_hf_dir_wrong_shapes(tmp_path, capsys, hf_copy):
    edit_config(hf_copy, intermediate_size=96)
    assert_fails_cleanly(tmp_path, capsys, [f"ModelSpec.hf_dir = '{hf_copy}'"],
                         expect="from config.json; use the config.json saved with these weights")


def test_hf_dir_unsupported_architecture(tmp_path, capsys, hf_copy):
    edit_config(hf_copy, model_type="gpt2", architectures=["GPT2LMHeadModel"])
    assert_fails_cleanly(tmp_path, capsys, [f"ModelSpec.hf_dir = '{hf_copy}'"],
                         expect="unsupported architecture model_type='gpt2' (architectures=['GPT2LMHeadModel']); "
                                "rlvjax loads ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM', "
                                "'Qwen3ForCausalLM']; pick a checkpoint")


@pytest.mark.parametrize("damage,expect", [
    ("not_json", "/hf/config.json is not JSON (Expecting property name enclosed in double quotes: line 1 column 2"),
    ("no_hidden_size", "config.json: hidden_size=None; each of vocab_size, hidden_size, intermediate_size, "
                       "num_hidden_layers, num_attention_heads must be a whole number >= 1"),
    ("zero_heads", "config.json: num_attention_heads=0; each of"),
    ("truncated", "/hf/model.safetensors is not a readable safetensors file (Error while deserializing header"),
])
def test_hf_dir_damaged_or_too_short(tmp_path, capsys, hf_copy, damage, expect):
    if damage == "not_json":
        (hf_copy / "config.json").write_text("{oops")
    elif damage == "no_hidden_size":
        config = json.loads((hf_copy / "config.json").read_text())
        del config["hidden_size"]
        (hf_copy / "config.json").write_text(json.dumps(config))
    elif damage == "zero_heads":
        edit_config(hf_copy, num_attention_heads=0)
    else:
        with open(hf_copy / "model.safetensors", "r+b") as f:
            f.truncate((hf_copy / "model.safetensors").stat().st_size // 2)
    assert_fails_cleanly(tmp_path, capsys, [f"ModelSpec.hf_dir = '{hf_copy}'"], expect=expect)


def test_sequences_longer_than_the_model_allows(tmp_path, capsys):
    model, tokenizer = experiment.build_policy(experiment.ModelSpec(hidden_size=32, intermediate_size=64,
                                                                    num_layers=1, num_heads=2, num_kv_heads=1))
    save_hf(model, tokenizer, tmp_path / "short")
    edit_config(tmp_path / "short", max_position_embeddings=8)  # digit prompts + 6 new tokens + 1 verify token
    line = assert_fails_cleanly(tmp_path, capsys, [f"ModelSpec.hf_dir = '{tmp_path / 'short'}'"],
                                expect="positions, more than the model's max_position_embeddings=8; lower "
                                       "RLConfig.max_new_tokens or TaskSpec.max_prompt_tokens")
    assert "prompts of up to " in line


def test_hf_dir_that_does_not_exist(tmp_path, capsys, monkeypatch):
    """A CLI line named the API ("point load_hf at ..."); a relative path says where it was read from, a GGUF file
    that it is one, with its conversion."""
    assert_fails_cleanly(tmp_path, capsys, [f"ModelSpec.hf_dir = '{tmp_path / 'nope'}'"],
                         expect=f"{tmp_path / 'nope'}: no such model directory")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert_fails_cleanly(tmp_path, capsys, ["ModelSpec.hf_dir = 'smollm2'"],
                         expect=f"smollm2: no such model directory (a relative path reads from the current directory, "
                                f"{tmp_path / 'elsewhere'}: run the command where it names the model, or give its "
                                "absolute path)")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    assert_fails_cleanly(tmp_path, capsys, [f"ModelSpec.hf_dir = '{tmp_path / 'model.gguf'}'"],
                         expect=f"{tmp_path / 'model.gguf'} is a GGUF file, not an HF model directory; convert it once")


def test_tokenizer_without_single_token_yes_no(tmp_path, capsys, hf_copy):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(92)]  # no "Yes", no "No"
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (hf_copy / name).unlink(missing_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(hf_copy)
    assert_fails_cleanly(tmp_path, capsys, [f"ModelSpec.hf_dir = '{hf_copy}'"],
                         expect="tokenizer lacks a single-token Yes/No: after the verify prompt it encodes")


# --- workdirs and checkpoints -------------------------------------------------------------------------------------


def fake_run(workdir: Path, bindings=()) -> None:
    """A workdir holding one checkpoint whose stored config is the digit config with ``bindings``; the state is a
    stand-in (every check below happens before any array is read)."""
    gin.clear_config()
    gin.parse_config_files_and_bindings([DIGIT], [*TINY, *bindings])
    config = Config.from_gin()
    gin.clear_config()
    architecture = experiment.abstract_policy(config.model)[0]
    config = {**config.to_dict(), "architecture": json.loads(json.dumps(dataclasses.asdict(architecture)))}
    with Checkpointer(workdir / "checkpoints", async_=False) as checkpoints:
        checkpoints.save(1, {"x": jnp.zeros(2)}, data_state={}, config=config)


def test_resume_with_another_model_config(tmp_path, capsys):
    workdir = tmp_path / "run"
    fake_run(workdir, ["ModelSpec.hidden_size = 64"])
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    code, line = train_error(workdir, resume=True, capsys=capsys)
    assert code == 2
    assert line.endswith("checkpoint config differs in architecture.hidden_size (checkpoint 64, now 128), "
                         "model.hidden_size (checkpoint 64, now 128); restore with the config it was trained with, or "
                         "use a fresh workdir")
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before  # nothing added


@pytest.mark.slow
def test_resume_with_the_base_model_moved(tmp_path):
    """A job copies its base model to scratch and deletes the old copy: the resume compares the architecture, not
    the path, and continues."""
    def train_run(workdir, bindings, resume=False):
        gin.clear_config()
        gin.parse_config_files_and_bindings([DIGIT], [*TINY, *bindings])
        try:
            return train.train(Config.from_gin(), str(workdir), resume=resume)
        finally:
            gin.clear_config()

    train_run(tmp_path / "base", ["RunConfig.num_steps = 1", "RunConfig.export_final = True"])
    first, second = tmp_path / "data" / "base", tmp_path / "scratch" / "base"
    shutil.copytree(tmp_path / "base" / "final", first)
    train_run(tmp_path / "run", [f"ModelSpec.hf_dir = '{first}'", "RunConfig.num_steps = 1"])
    shutil.move(first, second)
    resumed = train_run(tmp_path / "run", [f"ModelSpec.hf_dir = '{second}'"], resume=True)
    assert len(resumed) == 1
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2]
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["model"]["hf_dir"] == str(second)


@pytest.mark.parametrize("binding,named", [
    ("RLConfig.beta = 0.1", "rl.beta (checkpoint 0.0, now 0.1)"),
    ("OptimConfig.warmup_steps = 5", "optim.warmup_steps (checkpoint 0, now 5)"),
    # What the run trains: a resume that changed it would continue another run under this one's name.
    ("RLConfig.algorithm = 'rloo'", "rl.algorithm (checkpoint 'grpo', now 'rloo')"),
    ("RunConfig.seed = 1", "run.seed (checkpoint 0, now 1)"),
    # The cosine schedule decays over num_steps (a constant one lets a resume extend the run).
    ("OptimConfig.schedule = 'cosine'", "optim.schedule (checkpoint 'constant', now 'cosine')"),
])
def test_resume_with_a_setting_that_shapes_the_saved_state(tmp_path, capsys, binding, named):
    # beta > 0 keeps a reference copy of the parameters, a warm-up another optimizer state: Orbax would fail on the
    # tree structure; the resume names the setting instead, and nothing is set aside as damaged.
    workdir = tmp_path / "run"
    fake_run(workdir)
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    code, line = train_error(workdir, [binding], resume=True, capsys=capsys)
    assert code == 2 and line.endswith(f"checkpoint config differs in {named}; restore with the config it was "
                                       "trained with, or use a fresh workdir")
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


def test_resume_without_gin_flags_takes_the_run_s_own_config(tmp_path, capsys):
    workdir = tmp_path / "run"
    fake_run(workdir, ["RLConfig.lambda_verify = 0.25", "OptimConfig.schedule = 'cosine'"])
    config = resume.stored_config(workdir, None)
    assert config.rl.lambda_verify == 0.25 and config.optim.schedule == "cosine"
    gin.clear_config()
    gin.parse_config_files_and_bindings([DIGIT], [*TINY, "RLConfig.lambda_verify = 0.25",
                                                  "OptimConfig.schedule = 'cosine'"])
    assert config == Config.from_gin()
    gin.clear_config()
    assert resume.resume_keys(config).count("run.num_steps") == 1  # cosine: fixed; constant: free
    # A data file (or an in-memory run's output_dir) may move: its content is checked by the pipeline's fingerprint.
    assert "task.train_file" not in resume.resume_keys(config) and "task.num_train" in resume.resume_keys(config)
    # what is evaluated may change, as README says (num_eval and eval_split were refused: review 2026-12-06)
    assert not {"task.num_eval", "task.eval_split", "task.eval_file"} & set(resume.resume_keys(config))
    assert "run.num_steps" not in resume.resume_keys(dataclasses.replace(
        config, optim=dataclasses.replace(config.optim, schedule="constant")))
    # --gin_param without --gin_file goes on top of the run's own config, not configs/default.gin (which differed
    # in ~20 fields, so `--resume --gin_param 'RunConfig.log_every = 3'` was refused); --print_config shows it.
    train.launch(None, ["RunConfig.log_every = 3"], str(workdir), resume=True, print_config=True)
    gin.clear_config()
    printed = capsys.readouterr().out
    assert "RLConfig.lambda_verify = 0.25" in printed and "RunConfig.log_every = 3" in printed
    assert "OptimConfig.schedule = 'cosine'" in printed
    # Where a multi-host run's job ran is not kept: resumed in one process, it waited to join the old job (300 s),
    # then aborted. This launch's flags (or environment) say where it runs.
    cluster = tmp_path / "cluster"
    fake_run(cluster, ["MeshConfig.coordinator_address = '10.0.0.1:1234'", "MeshConfig.num_processes = 2",
                       "MeshConfig.process_id = 0"])
    train.launch(None, [], str(cluster), resume=True, print_config=True)
    gin.clear_config()
    printed = capsys.readouterr().out
    assert "MeshConfig.coordinator_address = None" in printed and "MeshConfig.process_id = None" in printed
    train.launch(None, ["MeshConfig.process_id = 1"], str(cluster), resume=True, print_config=True)
    gin.clear_config()
    assert "MeshConfig.process_id = 1" in capsys.readouterr().out
    # A newer step whose stored config cannot be read: the config comes from the newest that can, as the resume
    # itself skips damaged steps (it used to stop on the damaged one).
    with Checkpointer(workdir / "checkpoints", async_=False) as checkpoints:
        checkpoints.save(2, {"x": jnp.zeros(2)}, data_state={}, config={**config.to_dict(), "architecture": {}})
    (workdir / "checkpoints" / "2" / "config" / "metadata").write_text("{not json")
    assert resume.stored_config(workdir, None) == config
    with pytest.raises(DamagedCheckpoint, match="checkpoint step 2"):
        resume.stored_config(workdir, 2)
    # A change a `--resume --gin_param` made (written to config.json once the checkpoint accepted it) holds for the
    # next `--resume` alone though no checkpoint was saved after it (a finished run resumed with a baseline asked
    # for and stopped in it: the next resume dropped the baseline); --checkpoint N still takes that step's config.
    accepted = dataclasses.replace(config, run=dataclasses.replace(config.run, baseline=not config.run.baseline))
    accepted.write(workdir)
    assert resume.stored_config(workdir, None) == accepted and resume.stored_config(workdir, 1) == config
    (workdir / "config.json").write_text('{"model_type": "qwen2"}')  # not a run's: the checkpoint's, as before
    assert resume.stored_config(workdir, None) == config
    # A run stopped before its first checkpoint (Ctrl-C in the warm start) holds only its config.gin: --resume alone
    # reads it, through launch (reading it locked gin's config, and launch's own parse then crashed).
    started = tmp_path / "started"
    started.mkdir()
    config.write(started)
    train.launch(None, ["RunConfig.log_every = 3"], str(started), resume=True, print_config=True)
    gin.clear_config()
    printed = capsys.readouterr().out
    assert "RLConfig.lambda_verify = 0.25" in printed and "RunConfig.log_every = 3" in printed
    # With a --gin_file too (its num_steps checked against the run's): config.gin read before the flags are parsed
    (started / "config.json").unlink()
    train.launch([DIGIT], [*TINY, f"RunConfig.num_steps = {config.run.num_steps}"], str(started), resume=True,
                 print_config=True)
    gin.clear_config()
    assert f"RunConfig.num_steps = {config.run.num_steps}" in capsys.readouterr().out
    # Nothing to read the config from: one line, nothing created.
    entry = cli.run_main("rlvjax.train", lambda argv: train.launch(None, [], str(tmp_path / "typo"), resume=True))
    with pytest.raises(SystemExit) as exit_info:
        entry([])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"--resume continues a run with its own config, but "
                                                    f"{tmp_path / 'typo'} holds no checkpoint or config.gin; check "
                                                    "--workdir, or pass the run's --gin_file/--gin_param")
    # With --gin_param and nothing stored, a first launch: the default config and the flags (it was this refusal,
    # which the advice above and a SIGTERM at the start, "rerun the same command", led to)
    train.launch(None, ["RunConfig.log_every = 3"], str(tmp_path / "first"), resume=True, print_config=True)
    gin.clear_config()
    printed = capsys.readouterr().out
    assert "RunConfig.log_every = 3" in printed and "RLConfig.lambda_verify = 0.3" in printed  # default.gin's
    entry = cli.run_main("rlvjax.train", lambda argv: train.launch([DIGIT], TINY, str(tmp_path / "typo"),
                                                                     resume=True, resume_step=5))
    with pytest.raises(SystemExit):
        entry([])
    gin.clear_config()
    assert capsys.readouterr().err.strip().endswith(f"no checkpoint for step 5: {tmp_path / 'typo'} holds no "
                                                    "checkpoints; check --workdir")
    assert not (tmp_path / "typo").exists()
    with pytest.raises(FileNotFoundError, match=f"^no checkpoint for step 5: {started} holds no checkpoints; "):
        resume.stored_config(started, 5)  # said "holds no checkpoint or config.gin" beside its config.gin


def test_fresh_run_into_a_workdir_with_checkpoints(tmp_path, capsys, monkeypatch):
    workdir = tmp_path / "run"
    fake_run(workdir)

    def loaded(*args, **kwargs):  # refused before the model is loaded and the memory plan printed
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(experiment, "build_policy", loaded)
    code, line = train_error(workdir, capsys=capsys)
    assert code == 2
    assert line.endswith(f"{workdir} already holds checkpoints (latest step 1); pass --resume to continue that "
                         "run (the API: train(resume=True)), or choose a fresh --workdir (output_dir)")
    assert sorted(p.name for p in workdir.iterdir()) == ["checkpoints"]


def test_a_run_from_step_0_never_replaces_files_it_did_not_write(tmp_path, capsys):
    # A project's own logs were cut back and replaced; its data/train.jsonl, by the rows of a run given in memory.
    project = tmp_path / "project"
    (project / "tensorboard").mkdir(parents=True)
    (project / "metrics.jsonl").write_text('{"step": 0}\n')
    code, line = train_error(project, capsys=capsys)
    assert code == 2 and line.endswith(f"{project} holds tensorboard, metrics.jsonl, which this run would replace, "
                                       "and no checkpoint to resume; choose a new or empty --workdir (output_dir)")
    assert sorted(p.name for p in project.iterdir()) == ["metrics.jsonl", "tensorboard"]
    (project / "data").mkdir()
    (project / "data" / "train.jsonl").write_text('{"prompt": "mine", "target": "1"}\n')
    shutil.rmtree(project / "tensorboard")
    (project / "metrics.jsonl").unlink()
    outputs.check_unused(project, given=False)  # a run reading its task from files leaves data/ alone
    with pytest.raises(FileExistsError, match="holds data/train.jsonl, which this run would replace"):
        outputs.check_unused(project, given=True)
    # A finished run whose checkpoints were deleted: its final policy and report were replaced, even by --resume.
    finished = tmp_path / "finished"
    (finished / "final").mkdir(parents=True)
    (finished / "eval.json").write_text("{}")
    gin.parse_config_files_and_bindings([DIGIT], TINY)
    Config.from_gin().write(finished)
    gin.clear_config()
    for resuming in (False, True):
        code, line = train_error(finished, capsys=capsys, resume=resuming)
        assert code == 2 and line.endswith(f"{finished} holds final, eval.json, which this run would replace, and no "
                                           "checkpoint to resume; choose a new or empty --workdir (output_dir)")
    assert sorted(p.name for p in finished.iterdir()) == ["config.gin", "config.json", "eval.json", "final"]
    # An earlier start that warm-started and stopped before its first checkpoint, restarted without a warm start:
    # its warm_start/ became the lambda = 0 baseline's start and the report's warm_start policy.
    stopped = tmp_path / "stopped"
    (stopped / "warm_start").mkdir(parents=True)
    gin.parse_config_files_and_bindings([DIGIT], TINY)
    Config.from_gin().write(stopped)
    gin.clear_config()
    for resuming in (False, True):
        code, line = train_error(stopped, ["WarmStartConfig.num_steps = 0"], capsys=capsys, resume=resuming)
        assert code == 2 and line.endswith(f"{stopped} holds warm_start/ from an earlier start that warm-started, "
                                           "which this run (WarmStartConfig.num_steps = 0) does not: its lambda = 0 "
                                           "baseline and report would start from it; move warm_start/ away, or keep "
                                           "the warm start"), line
    assert sorted(p.name for p in stopped.iterdir()) == ["config.gin", "config.json", "warm_start"]


def test_a_workdir_holding_another_tools_config_is_refused(tmp_path, capsys, monkeypatch):
    hf = tmp_path / "hf_model"  # e.g. a model directory passed as --workdir: its config.json would be replaced
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "qwen2"}')
    with monkeypatch.context() as patched:  # refused before the model loads and the memory plan prints (it was after)
        patched.setattr(experiment, "build_policy", lambda *args: pytest.fail("the model was loaded first"))
        code, line = train_error(hf, capsys=capsys)
    assert code == 2 and line.endswith(f"{hf / 'config.json'} is not a training run's config, and a run would "
                                       "replace it; choose a new or empty --workdir")
    (tmp_path / "odd").mkdir()  # the names a run's sections have, not their values: it was an AttributeError
    (tmp_path / "odd" / "config.json").write_text('{"model": "qwen2", "rl": 1, "run": []}')
    code, line = train_error(tmp_path / "odd", capsys=capsys)
    assert code == 2 and line.endswith("config.json is not a training run's config, and a run would replace it; choose "
                                       "a new or empty --workdir")
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.gin").write_text("RLConfig.lambda_verify = 1.0  # the user's own gin file\n")
    code, line = train_error(project, capsys=capsys)
    assert code == 2 and "config.gin is not a training run's (no config.json beside it)" in line
    for workdir in (hf, project):
        assert sorted(p.name for p in workdir.iterdir()) in (["config.json"], ["config.gin"])  # nothing written


def test_a_url_workdir_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it trained into ./gs:/my-bucket/run1 and failed at its first checkpoint save
    code, line = train_error("gs://my-bucket/run1", capsys=capsys)
    assert code == 2 and line.endswith("--workdir gs://my-bucket/run1 is a URL; runs are written to a local or mounted "
                                       "filesystem (a bucket: mount it, e.g. with gcsfuse, and pass the mount's path)")
    code, line = train_error("gs://my-bucket/run1", gin_files=(), resume=True, capsys=capsys)  # said: no config.gin
    assert code == 2 and "--workdir gs://my-bucket/run1 is a URL" in line
    assert list(tmp_path.iterdir()) == []


def test_a_file_the_system_refused_to_write_is_named_with_the_fix(capsys):
    """The operating system's own "Permission denied: 'path'" (a workdir made read-only under a run) was printed
    bare; the fix and ``--resume`` follow it. rlvjax's own permission messages carry their fix already."""
    def denied(argv):
        raise PermissionError(errno.EACCES, "Permission denied", "/runs/mine/final")

    def ours(argv):
        raise PermissionError("workdir /runs/mine is not writable (Not a directory); choose a workdir you can write to")

    for main, expect in ((denied, "rlvjax.train: error: [Errno 13] Permission denied: '/runs/mine/final'; fix its "
                                  "permissions, then run the command again (a training run that had started: with "
                                  "--resume)"),
                         (ours, "rlvjax.train: error: workdir /runs/mine is not writable (Not a directory); choose a "
                                "workdir you can write to")):
        with pytest.raises(SystemExit) as exit_info:
            cli.run_main("rlvjax.train", main)([])
        assert exit_info.value.code == 2 and capsys.readouterr().err.strip() == expect


def test_unwritable_workdir(tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a directory")
    workdir = tmp_path / "file" / "run"
    code, line = train_error(workdir, capsys=capsys)
    assert code == 2
    assert line.endswith(f"workdir {workdir} is not writable (Not a directory); choose a workdir you can write to")


def test_a_workdir_another_host_creates_meanwhile_that_this_host_cannot_write(tmp_path, monkeypatch):
    """A job's other host creates the shared workdir between this host's look and its write probe, which fails here
    (this node's mount, another uid): the folder it had not created was removed as its own, and epath's "Directory
    ... is not empty" (a ValueError) replaced the line."""
    from etils import epath

    workdir = epath.Path(tmp_path / "run")
    kind = type(workdir)  # epath's class for local paths
    mkdir, write_text = kind.mkdir, kind.write_text

    def theirs_first(path, *args, **kwargs):
        mkdir(path, *args, **kwargs)
        (path / ".lock").write_text("host 0")  # the other host's first file

    monkeypatch.setattr(kind, "mkdir", theirs_first)
    monkeypatch.setattr(checkpoint.os, "getpid", lambda: "denied")

    def probe(path, *args, **kwargs):
        if "denied" in path.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(kind, "write_text", probe)
    with pytest.raises(PermissionError, match=f"^workdir {workdir} is not writable \\(Permission denied\\); choose "):
        checkpoint.ensure_writable(workdir, "workdir")
    assert (workdir / ".lock").read_text() == "host 0"


def test_full_disk_fails_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    line = assert_fails_cleanly(tmp_path, capsys, expect="only 1000 B free under ")
    # max_to_keep checkpoints plus the one being saved (Orbax deletes the oldest after it).
    assert line.endswith("the run (4 more checkpoint(s): RunConfig.max_to_keep=3 and the one being saved) needs about "
                         "13.7 MiB; free some space or choose a workdir on a larger disk")
    # the lambda = 0 baseline trains after the run, in its own folder: counted too (a disk with room for the run
    # alone was refused once the run was trained, in a line that read as if it had not started, review)
    line = assert_fails_cleanly(tmp_path, capsys, ["RunConfig.baseline = True"], expect="only 1000 B free under ")
    assert line.endswith("the run (4 more checkpoint(s): RunConfig.max_to_keep=3 and the one being saved), then its "
                         "lambda = 0 baseline (4 more checkpoint(s): RunConfig.max_to_keep=3 and the one being saved) "
                         "needs about 27.4 MiB; free some space or choose a workdir on a larger disk")


def test_a_finished_run_resumed_again_asks_for_no_checkpoint_space(tmp_path):
    from safetensors.numpy import save_file

    config = Config()
    params = {"w": np.zeros(1000, np.float32)}  # 4,000 bytes
    workdir = tmp_path / "run"
    for step in (2, 4):
        (workdir / "checkpoints" / str(step)).mkdir(parents=True)
    run = dataclasses.replace(config.run, num_steps=4, export_final=True, max_to_keep=3)
    need = lambda **kw: outputs.disk_need(params, config.rl, run, config.warm_start, workdir, **kw)  # noqa: E731
    assert need() == (4000, "finished: 1 exported model(s)")  # final/ not there yet
    (workdir / "final").mkdir()
    save_file({"w": np.zeros(1, np.float32)}, str(workdir / "final" / "model.safetensors"),
              metadata={"rlvjax_step": "4", "rlvjax_export_id": "x"})
    assert need() == (0, "finished: 0 exported model(s)")  # it asked for 2 more checkpoints and an export
    assert need(resume_step=2)[0] == 2 * 3 * 4000 + 4000  # gone back to step 2: it trains and saves again


# --- subprocesses: the real exit code and the single stderr line --------------------------------------------------


def run_cli(module: str, args, *, env=None) -> tuple[int, list[str]]:
    out = forkserver.run([sys.executable, "-m", module, *args], timeout=300,
                         cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})
    return out.returncode, [line for line in out.stderr.splitlines() if line.startswith(f"{module}: error:")]


FLAG_MISTAKES = [  # (module, args, the one line after "module: error: "); the first two run in the fast tier
    ("rlvjax.train", ["--nope", "1"], "Unknown command line flag 'nope'; see python -m rlvjax.train --help"),
    ("rlvjax.evaluate", ["--workdir", "absent", "warm_start"],  # --policy forgotten: warm_start was ignored
     "unexpected argument 'warm_start'; every input is a --flag (see python -m rlvjax.evaluate --help)"),
    ("rlvjax.train", ["--checkpoint", "abc"],
     "flag --checkpoint=abc: invalid literal for int() with base 10: 'abc'; see python -m rlvjax.train --help"),
    ("rlvjax.export", ["--workdir", "absent"],
     "flag --out=None: Flag --out must have a value other than None; see python -m rlvjax.export --help"),
    ("rlvjax.evaluate", ["--model_dir", "absent", "--data", "x.jsonl", "--checkpoint", "2"],
     "--checkpoint 2 picks a step of a training run; drop it, or pass the run's --workdir instead of --model_dir"),
    # "" was "not given" to some checks and "." to others: another model's eval.json was overwritten
    ("rlvjax.evaluate", ["--workdir", "absent", "--out", ""],
     "--out is empty; pass a directory, or leave the flag out"),
    ("rlvjax.evaluate", ["--workdir", "absent", "--seed", "4294967296"], "--seed=4294967296 must be in [0, 2**32)"),
    ("rlvjax.evaluate", ["--workdir", "absent", "--policy", "warm_start", "--checkpoint", "1"],  # step 1 evaluated
     "--policy warm_start names an exported policy, --checkpoint 1 a step of the run's training (or of its "
     "baseline, with --policy lambda0); drop one"),
    ("rlvjax.train", ["--dry_run", "--checkpoint", "5"], "--checkpoint 5 picks the step a --resume continues from; "
                                                         "--dry_run and --print_config read the config alone: drop "
                                                         "--checkpoint"),
    # flags that applied to nothing (review, 2026-12-06): an unset $RUN exported the working directory's run; the
    # others ran without a word, --raw_prompts and --reject_fraction recorded in eval.json as if they had applied
    ("rlvjax.export", ["--workdir", "", "--out", "x"], "--workdir is empty; pass a training run's directory"),
    ("rlvjax.export", ["--workdir", __file__, "--out", "x"],
     f"workdir {__file__} is a file, not a directory; pass the --workdir of a training run"),
    ("rlvjax.evaluate", ["--model_dir", "absent", "--data", "x.jsonl", "--policy", "warm_start"],
     "--policy warm_start picks a policy of a training run; drop it, or pass the run's --workdir instead of "
     "--model_dir"),
    ("rlvjax.evaluate", ["--workdir", "absent", "--raw_prompts"],
     "--raw_prompts applies to the problems of --data; pass --data, or drop it (the run's own eval problems are read "
     "as it rendered them)"),
    ("rlvjax.evaluate", ["--workdir", "absent", "--compilation_cache", __file__],
     f"--compilation_cache {__file__}: {__file__} is a file; pass a writable directory, or '' for no cache"),
    # under a file (or where it cannot be made): passed, and JAX warned and ran with no cache (review)
    ("rlvjax.evaluate", ["--workdir", "absent", "--compilation_cache", f"{__file__}/xla"],
     f"--compilation_cache {__file__}/xla: {__file__} is a file; pass a writable directory, or '' for no cache"),
    ("rlvjax.evaluate", ["--workdir", "absent", "--strategy", "particle", "--reject_fraction", "0.5"],
     "--reject_fraction 0.5 is a setting of --resample reject (now multinomial); pass --resample reject, or drop it"),
]


@pytest.mark.parametrize("module,args,message", [
    pytest.param(*case, id=f"{case[0]}-{case[1][0]}", marks=[pytest.mark.slow] if i >= 2 else [])
    for i, case in enumerate(FLAG_MISTAKES)])
def test_flags_that_do_not_parse_or_would_be_ignored(tmp_path, module, args, message):
    # absl printed two lines and exited 1, the code of a run that stopped itself; a stray word was dropped.
    out = forkserver.run([sys.executable, "-m", module, *args], timeout=300,
                         cwd=tmp_path, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 2 and out.stderr.splitlines() == [f"{module}: error: {message}"], out.stderr
    assert not list(tmp_path.iterdir())


def test_batch_that_does_not_divide_over_the_mesh(tmp_path):
    workdir = tmp_path / "run"
    code, lines = run_cli("rlvjax.train", ["--gin_file", DIGIT, "--gin_param", "RunConfig.batch_size = 3",
                                           "--workdir", str(workdir)],
                          env={"XLA_FLAGS": xla_flags(2)})
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].endswith("batch_size (prompts per step) of 3 rows does not divide over data*fsdp=2 devices; "
                             "pick a size that is a multiple of 2")
    assert not workdir.exists()


@pytest.fixture
def eval_workdir(tmp_path):
    """A run's workdir as evaluate reads it: a checkpoint's stored config and an HF policy in final/."""
    workdir = tmp_path / "run"
    fake_run(workdir, ["TaskSpec.num_eval = 4"])
    gin.clear_config()
    gin.parse_config_files_and_bindings([DIGIT], TINY)
    model, tokenizer = experiment.build_policy(Config.from_gin().model)
    gin.clear_config()
    save_hf(model, tokenizer, workdir / "final")
    return workdir


def test_evaluate_pool_size_not_a_power_of_two(eval_workdir):
    code, lines = run_cli("rlvjax.evaluate", ["--workdir", str(eval_workdir), "--num_samples", "12"])
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].endswith("--num_samples=12: use a power of two >= 2 (votes compare a problem's samples, and "
                             "the curve's largest N is the pool)")
    assert not (eval_workdir / "eval").exists()


def test_evaluate_out_where_an_output_file_is_a_directory(eval_workdir, tmp_path):
    (tmp_path / "out" / "eval.json").mkdir(parents=True)
    code, lines = run_cli("rlvjax.evaluate", ["--workdir", str(eval_workdir), "--out", str(tmp_path / "out")])
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].endswith(f"--out {tmp_path / 'out'}: {tmp_path / 'out' / 'eval.json'} is a directory where "
                             "evaluate writes a file; move it or choose another --out"), lines


def test_curve_n_larger_than_the_pool():
    answers, correct = np.zeros((2, 4), int), np.zeros((2, 4), bool)
    with pytest.raises(ValueError, match=r"every N must be in \[1, 4\], got \[1, 8\]"):
        testtime.scaling_curve(answers, None, correct, [1, 8], "majority", 10, 0)


@pytest.mark.parametrize("k", [0, 1])
def test_evaluate_pool_size_below_two(tmp_path, k):
    code, lines = run_cli("rlvjax.evaluate", ["--workdir", str(tmp_path / "absent"), "--num_samples", str(k)])
    assert code == 2 and len(lines) == 1 and f"--num_samples={k}: use a power of two >= 2" in lines[0], lines


@pytest.mark.parametrize("value, shown", [("0", "0.0"), ("nan", "nan"), ("inf", "inf"), ("1e-9", "1e-09")])
def test_evaluate_temperature_not_positive(tmp_path, value, shown):
    # Checked before the workdir is read, like --num_samples (nan would pass a plain "<= 0" check).
    code, lines = run_cli("rlvjax.evaluate", ["--workdir", str(tmp_path / "absent"), "--temperature", value])
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].endswith(f"--temperature={shown} must be >= 1e-05 and finite: votes need distinct samples; pass a "
                             "positive --temperature or leave it out (the run's training temperature; 1.0 for "
                             "--model_dir)"), lines


STRATEGY_MISTAKES = [  # (id, args, message); the first three run in the fast tier
    ("unknown", ["--strategy", "beam"], "--strategy=beam: use one of fixed, adaptive, length, particle"),
    ("budget_0", ["--strategy", "length", "--budgets", "0,8"],
     "LengthRule.budgets=(0, 8) must be token budgets >= 1 (a budget of 0 generates nothing)"),
    ("threshold", ["--strategy", "length", "--threshold", "1.5"], "LengthRule.threshold=1.5 must be in [0, 1]"),
    ("budget_past_cap", ["--strategy", "length", "--budgets", "8,64", "--max_new_tokens", "32"],
     "LengthRule.budgets end at 64 tokens, past max_new_tokens=32; lower the budgets or raise --max_new_tokens"),
    ("delta_list", ["--strategy", "adaptive", "--delta", "0.1,x"],
     "--delta='0.1,x': give comma-separated numbers, e.g. 0.2,0.1,0.05"),
    ("min_samples_0", ["--strategy", "adaptive", "--min_samples", "0"],
     "AdaptiveRule.min_samples=0 must be >= 1 (a budget of 0 samples answers nothing)"),
    ("particles_0", ["--strategy", "particle", "--particles", "0"],
     "ParticleRule.particles=0 must be >= 1 (a budget of 0 samples answers nothing)"),
    ("budgets_empty", ["--strategy", "length", "--budgets", ""],
     "--budgets='': give comma-separated integers, e.g. 256,512,1024"),
    ("stray", ["--strategy", "adaptive", "--budgets", "8"],
     "--budgets is a flag of --strategy length, not of --strategy adaptive; pass --strategy length or drop it"),
    ("min_samples_past_pool", ["--strategy", "adaptive", "--num_samples", "4", "--min_samples", "8"],
     "--min_samples=8 is more than the pool's --num_samples=4; lower it, or raise --num_samples"),
    ("delimiter_escape", ["--strategy", "particle", "--step_delimiter", "a\\"],
     "--step_delimiter='a\\\\': \\ at end of string at character 1; escape a backslash as \\\\"),
]


@pytest.mark.parametrize("args,message", [
    pytest.param(args, message, id=name, marks=[pytest.mark.slow] if i >= 3 else [])
    for i, (name, args, message) in enumerate(STRATEGY_MISTAKES)])
def test_evaluate_strategy_mistakes(tmp_path, args, message):
    # Checked before the workdir is read: nothing is loaded or written.
    code, lines = run_cli("rlvjax.evaluate", ["--workdir", str(tmp_path / "absent"), *args])
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].endswith(message), lines


def test_evaluate_dtype_with_a_checkpoint(tmp_path):
    code, lines = run_cli("rlvjax.evaluate", ["--workdir", str(tmp_path / "absent"), "--checkpoint", "2", "--dtype",
                                              "bfloat16"])
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].endswith("--dtype=bfloat16 applies to HF directories; a checkpoint computes in its run's "
                             "ModelSpec.compute_dtype: drop --dtype, or evaluate --policy final"), lines


def test_evaluate_workdir_that_does_not_exist(tmp_path):
    workdir = tmp_path / "absent"
    code, lines = run_cli("rlvjax.evaluate", ["--workdir", str(workdir)])
    assert code == 2 and len(lines) == 1 and lines[0].endswith(
        f"--workdir {workdir} is not a training run (no checkpoints/ in it); point it at the --workdir of a run, or "
        "pass an HF directory as --model_dir"), lines
    assert not workdir.exists()
    (tmp_path / "a_file").write_text("x")  # it blamed an --out the user never passed
    code, lines = run_cli("rlvjax.evaluate", ["--workdir", str(tmp_path / "a_file")])
    assert code == 2 and len(lines) == 1 and "is not a training run (no checkpoints/ in it)" in lines[0], lines
    run = tmp_path / "run"  # a run's config.json is not a model's: "unsupported architecture model_type=None"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    code, lines = run_cli("rlvjax.evaluate", ["--model_dir", str(run), "--data", "x.jsonl"])
    assert code == 2 and len(lines) == 1 and lines[0].endswith(
        f"--model_dir {run} is a training run; pass it as --workdir (its exported policy: --model_dir "
        f"{run / 'final'})"), lines


def test_a_default_out_never_replaces_another_models_evaluation(tmp_path):
    """runs/a/final and runs/b/final on one data file share ./eval/final-DATA: the second replaced the first; so
    did one model's evaluation on two data files with one stem, or two splits of one datasets id."""
    from rlvjax import eval_out

    out = tmp_path / "eval" / "final-math500"
    out.mkdir(parents=True)
    (out / "eval.json").write_text(json.dumps({"evaluated": {"model": str(tmp_path / "a" / "final")}}))
    with pytest.raises(ValueError, match=f"^{out} holds the evaluation of another model, {tmp_path / 'a' / 'final'}; "
                                         "pass --out to write this one elsewhere$"):
        eval_out.check_same_model(out, tmp_path / "b" / "final")
    eval_out.check_same_model(out, tmp_path / "a" / "final")  # the same model again: replaced, as before
    # a run moved or copied whole, its evaluations with it: the same model, where it was from the eval folder (its
    # own evaluation was "another model's")
    moved = {**eval_out.evaluated(out, tmp_path / "a" / "final", None), "model": "/elsewhere/a/final"}
    (out / "eval.json").write_text(json.dumps({"evaluated": moved}))
    eval_out.check_same_model(out, tmp_path / "a" / "final")
    with pytest.raises(ValueError, match="^" + re.escape(f"{out} holds the evaluation of another model, "
                                                         "/elsewhere/a/final")):
        eval_out.check_same_model(out, tmp_path / "b" / "final")
    (out / "eval.json").write_text(json.dumps({"reports": {}}))  # written before eval.json named its model
    eval_out.check_same_model(out, tmp_path / "b" / "final")
    eval_out.check_same_model(tmp_path / "none", tmp_path / "b" / "final")

    # one model on a/test.jsonl, then on b/test.jsonl (or another split of one datasets id): one default --out
    model, first, second = tmp_path / "a" / "final", tmp_path / "a" / "test.jsonl", tmp_path / "b" / "test.jsonl"
    (out / "eval.json").write_text(json.dumps({"evaluated": eval_out.evaluated(out, model, str(first), "test")}))
    eval_out.check_same_model(out, model, str(first), "test")  # the same evaluation again: replaced
    with pytest.raises(ValueError, match=f"^{out} holds this model's evaluation on other problems \\(data "
                                         f"'{first}', now '{second}'\\); pass --out to write this one elsewhere$"):
        eval_out.check_same_model(out, model, str(second), "test")
    with pytest.raises(ValueError, match="other problems \\(data_split 'test', now 'validation'\\)"):
        eval_out.check_same_model(out, model, str(first), "validation")
    # a file has no splits: --data_split does not change its problems, and is not recorded (it was refused)
    first.parent.mkdir(parents=True)
    first.write_text('{"prompt": "1+1", "answer": "2"}\n')
    (out / "eval.json").write_text(json.dumps({"evaluated": eval_out.evaluated(out, model, str(first), "test")}))
    eval_out.check_same_model(out, model, str(first), "validation")
    (out / "eval.json").write_text(json.dumps({"evaluated": {  # as written before: --data_split's default recorded
        "model": str(model), "data": str(first), "data_split": "test", "data_subset": None}}))
    eval_out.check_same_model(out, model, str(first), "test")

    # an rlvjax export evaluated, then exported again into the same folder (another step): other weights, whose
    # evaluation replaced the earlier one without a word
    from safetensors.numpy import save_file

    def export(export_id, step):  # what save_hf stamps on the weights
        model.mkdir(parents=True, exist_ok=True)
        save_file({"w": np.zeros(1, np.float32)}, str(model / "model.safetensors"),
                  metadata={"rlvjax_export_id": export_id, "rlvjax_step": str(step)})

    export("a", 2)
    (out / "eval.json").write_text(json.dumps({"evaluated": eval_out.evaluated(out, model, str(first))}))
    eval_out.check_same_model(out, model, str(first), by_export=True)  # the same export again: replaced
    export("b", 3)
    with pytest.raises(ValueError, match="^" + re.escape(
            f"{out} holds the evaluation of an earlier export in {model} (step 2; it holds step 3 now), which this one "
            f"would replace; pass --out to keep both, or remove {out} to replace it") + "$"):
        eval_out.check_same_model(out, model, str(first), by_export=True)
    # a run's own final/ (evaluate --workdir) is its current policy, re-exported as it trains on: replaced
    eval_out.check_same_model(out, model, str(first))


def test_evaluate_a_run_without_eval_problems_and_a_damaged_verifier_file(tmp_path):
    workdir = tmp_path / "run"  # its task has no eval problems: "max() arg is an empty sequence"
    fake_run(workdir, ["TaskSpec.num_eval = 0"])
    gin.parse_config_files_and_bindings([DIGIT], TINY)
    model, tokenizer = experiment.build_policy(Config.from_gin().model)
    gin.clear_config()
    save_hf(model, tokenizer, workdir / "final")
    code, lines = run_cli("rlvjax.evaluate", ["--workdir", str(workdir), "--num_samples", "2"])
    assert code == 2 and len(lines) == 1 and lines[0].endswith(
        f"--workdir {workdir}: the run has no eval problems (TaskSpec.eval_file / num_eval); pass --data FILE"), lines
    assert not (workdir / "eval").exists()
    code, lines = run_cli("rlvjax.evaluate", ["--workdir", str(workdir), "--policy", "lambda0"])
    assert code == 2 and len(lines) == 1 and lines[0].endswith(
        f"--policy lambda0: {workdir} holds no lambda = 0 baseline (baseline_lambda0/: RunConfig.baseline was off, or "
        "it has not started)"), lines
    data = tmp_path / "problems.jsonl"
    data.write_text(json.dumps({"prompt": "1+1", "answer": "2"}) + "\n")
    stored = workdir / "final" / "rlvjax_verifier.json"
    for text, message in (('{"question": "Right?",}', "is not valid JSON (Expecting property name"),
                          ('["Right?"]', "holds a JSON list, not an object of form, label_reward, question, "
                                         "threshold")):
        stored.write_text(text)  # a traceback, or a JSON error naming no file
        code, lines = run_cli("rlvjax.evaluate", ["--model_dir", str(workdir / "final"), "--data", str(data),
                                                  "--raw_prompts", "--out", str(tmp_path / "out")])
        assert code == 2 and len(lines) == 1 and f"{stored} {message}" in lines[0], lines
        assert lines[0].endswith("fix it, or delete it to ask the default verify question"), lines
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_evaluate_model_dir_mistakes(tmp_path):
    """--model_dir that is not an HF directory, without --data, together with --workdir, too short for
    --max_new_tokens, or a --max_new_tokens its positions allow but the device cannot hold (refused by the plan,
    naming the largest that fits): one line each, nothing written."""
    data = tmp_path / "problems.jsonl"
    data.write_text(json.dumps({"prompt": "1+1", "answer": "2"}) + "\n")
    (tmp_path / "not_a_model").mkdir()
    model, tokenizer = experiment.build_policy(experiment.ModelSpec(hidden_size=32, intermediate_size=64,
                                                                    num_layers=1, num_heads=2, num_kv_heads=1))
    save_hf(model, tokenizer, tmp_path / "short")
    save_hf(model, tokenizer, tmp_path / "model")
    edit_config(tmp_path / "short", max_position_embeddings=16)  # 64 new tokens cannot fit
    save_hf(model, tokenizer, tmp_path / "long")
    edit_config(tmp_path / "long", max_position_embeddings=2 ** 30)  # positions for 10**8 new tokens, memory not
    cases = [
        (["--model_dir", str(tmp_path / "not_a_model"), "--data", str(data)],
         f"--model_dir: {tmp_path / 'not_a_model'} is not an HF model directory (no config.json); point at a folder "
         "with config.json and *.safetensors"),
        (["--model_dir", str(tmp_path / "not_a_model")], "needs --data: a .jsonl/.json/.parquet file"),
        (["--model_dir", str(tmp_path), "--workdir", str(tmp_path), "--data", str(data)],
         "give either --workdir (a training run) or --model_dir (an HF directory) to evaluate"),
        (["--model_dir", str(tmp_path / "not_a_model"), "--data", str(data), "--max_new_tokens", "0"],
         "--max_new_tokens=0 must be >= 1"),
        (["--model_dir", str(tmp_path / "model"), "--data", str(data), "--top_p", "1.5"],
         "--top_p=1.5 must be in (0, 1] (1: off)"),
        (["--model_dir", str(tmp_path / "model"), "--data", str(data), "--top_k", "-1"], "--top_k=-1 must be >= 0"),
        (["--model_dir", str(tmp_path / "short"), "--data", str(data), "--raw_prompts", "--max_new_tokens", "64"],
         "prompts of up to 3 tokens + --max_new_tokens=64 + the verify prompt (1) = 68 positions, more than the "
         "model's max_position_embeddings=16; lower --max_new_tokens or evaluate shorter prompts"),
        (["--model_dir", str(tmp_path / "long"), "--data", str(data), "--raw_prompts", "--max_new_tokens", "100000000"],
         "(eval phase), has "),
        # Refused once the tokenizer is loaded, before the pool is sampled (minutes to hours on a real model).
        (["--model_dir", str(tmp_path / "model"), "--data", str(data), "--raw_prompts", "--max_new_tokens", "4",
          "--strategy", "particle", "--step_delimiter", "@@"],
         "ParticleRule.step_delimiter='@@' ends no token of this tokenizer; choose the text that ends a solution step"),
        (["--model_dir", str(tmp_path / "model"), "--data", str(data), "--reward", " , "],
         "--reward is empty; name the reward functions to grade with, e.g. --reward math or --reward "
         "my_rewards:accuracy"),
        (["--model_dir", str(tmp_path / "model"), "--data", str(data), "--reward", "math,no_such_module:f"],
         "--reward: cannot import 'no_such_module:f' (No module named 'no_such_module'); put its module on "
         "PYTHONPATH or fix the name"),
    ]
    for args, message in cases:
        code, lines = run_cli("rlvjax.evaluate", [*args, "--out", str(tmp_path / "out")])
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, lines)
        if "long" in args[1]:  # the largest that fits this host's memory; half precision cannot help a tiny model
            fits = re.search(r"lower --max_new_tokens to (\d+) \(now 100000000\)", lines[0])
            assert fits and 0 < int(fits[1]) < 10 ** 8 and "bfloat16" not in lines[0], lines
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval").exists()
    # 3 + 12 + 1 positions fit in 16: the prompt's padding to the sampler's 16-wide batch takes none (it was refused).
    # A row without an answer is left out, said where and how to mend it (its advice named a flag evaluate lacks),
    # and eval.json records it (it said nothing of the rows it had not evaluated).
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in (("1+1", "2"), ("2+2", ""),
                                                                                         ("1+2", "3"))))
    out = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--model_dir", str(tmp_path / "short"), "--data",
                          str(mixed), "--raw_prompts", "--max_new_tokens", "12", "--num_samples", "2", "--out",
                          str(tmp_path / "fits")], timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (f"{mixed}: skipped 1 of 3 rows with no usable gold answer for schema 'generic' (line 2); give them an "
            "answer in 'gold' or 'answer' (the answer itself, not a sentence or a working; not empty, braces "
            "balanced, at most 1000 characters) or remove them") \
        in out.stderr
    evaluation = json.loads((tmp_path / "fits" / "eval.json").read_text())
    assert evaluation["evaluated"]["data_rows"] == 3 and evaluation["evaluated"]["data_skipped"] == ["line 2"]
    assert [rep["num_problems"] for rep in evaluation["reports"]["1"].values()] == [2]


def test_a_disk_that_fills_up_outside_a_checkpoint_save_is_one_line(tmp_path, capsys, monkeypatch):
    """The logs, the report, a plot: a full disk anywhere ends in one line and exit 2, not tracebacks."""
    import errno

    from rlvjax import metrics

    def full(self, step, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.dir / "samples.jsonl"))

    monkeypatch.setattr(metrics.MetricsWriter, "samples", full)
    code, line = train_error(tmp_path / "run", ["RunConfig.log_every = 1"], capsys=capsys)
    assert code == 2 and line == (
        f"rlvjax.train: error: the disk filled up ([Errno 28] No space left on device: "
        f"'{tmp_path / 'run' / 'samples.jsonl'}'); free some space, then run the command again (a training run: with "
        "--resume; its latest checkpoint is intact)")
    # raised from another error (tensorstore, a plotting library): found through the chain
    def wrapped(argv):
        try:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        except OSError as e:
            raise RuntimeError("could not write scaling.png") from e

    with pytest.raises(SystemExit) as exit_info:
        cli.run_main("rlvjax.evaluate", wrapped)([])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("rlvjax.evaluate: error: the disk filled up (could not write "
                                              "scaling.png)")
    with pytest.raises(RuntimeError, match="not a disk"):  # any other failure keeps its traceback
        cli.run_main("rlvjax.evaluate", lambda argv: (_ for _ in ()).throw(RuntimeError("not a disk")))([])


def test_a_path_through_a_dangling_symlink_is_refused_before_anything_runs(tmp_path, capsys):
    """Creating a path through a link to nothing failed with "[Errno 17] File exists" (evaluate: once the whole pool
    was sampled; export: once the model was written beside it)."""
    dangle, target = tmp_path / "dangle", tmp_path / "missing" / "deeper"
    dangle.symlink_to(target)
    because = (f"{dangle} is a symbolic link to {target}, which does not exist (or loops back); create its target, or "
               "pass another path")
    code, line = train_error(dangle / "run", capsys=capsys)
    assert code == 2 and line == f"rlvjax.train: error: --workdir {dangle / 'run'}: {because}"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # never read: refused first
    code, lines = run_cli("rlvjax.evaluate", ["--model_dir", str(tmp_path / "model"), "--data", "x.jsonl", "--out",
                                              str(dangle / "sub")])
    assert code == 2 and lines == [f"rlvjax.evaluate: error: --out {dangle / 'sub'}: {because}"]
    with pytest.raises(ValueError, match=re.escape(f"--out {dangle}: {because}")):
        export.check_out(dangle, tmp_path / "run", overwrite=True)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ValueError, match=r"loop is a symbolic link to .*loop, which does not exist"):
        export.check_out(tmp_path / "loop" / "x", tmp_path / "run", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangle", "loop", "model"]  # nothing created


def test_an_export_that_could_not_be_moved_into_place_is_refused_up_front(tmp_path, monkeypatch):
    """An export is written beside --out, then renamed into place: on a read-only filesystem, or with --out a mount
    point (a container's volume), that failed with an OSError traceback once the whole model was written."""
    read_only = tmp_path / "ro"
    read_only.mkdir()
    access = os.access
    monkeypatch.setattr(export.os, "access", lambda path, mode: Path(path) != read_only and access(path, mode))
    with pytest.raises(PermissionError, match=re.escape(
            f"--out {read_only / 'new' / 'export'}: {read_only} is not writable (an export is written beside its "
            "folder, then moved in); choose another directory")):
        export.check_out(read_only / "new" / "export", tmp_path / "run", overwrite=False)
    volume = tmp_path / "volume"
    volume.mkdir()
    ismount = os.path.ismount
    monkeypatch.setattr(export.os.path, "ismount", lambda path: Path(path) == volume or ismount(path))
    with pytest.raises(ValueError, match=re.escape(f"--out {volume} is a mount point, which an export cannot "
                                                   f"replace; pass a folder inside it, e.g. {volume / 'model'}")):
        export.check_out(volume, tmp_path / "run", overwrite=True)
    export.check_out(volume / "model", tmp_path / "run", overwrite=False)  # inside it: fine


def test_rows_given_in_memory_that_could_not_be_written_do_not_block_the_rerun(tmp_path, monkeypatch):
    """An API run on in-memory rows writes its config, then the rows to data/. It wrote the rows first: a full disk
    (or a kill) between the two left data/train.jsonl without a config.json, taken for a project's own file, and the
    rerun was refused until data/ was deleted by hand; the partial temporary stayed behind, holding the disk full."""
    rows = ([{"prompt": "p", "gold": "1"}], [{"prompt": "q", "gold": "2"}])
    replace = Path.replace

    def full(self, target):
        if self.name == ".eval.jsonl.tmp":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", full)
    with pytest.raises(OSError, match="No space left on device"):
        train.record_run(tmp_path, Config(), rows)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["train.jsonl"]  # no temporary left
    assert Config.written(tmp_path) == Config()
    outputs.check_unused(tmp_path, given=True)  # the rerun redoes this start
    train.record_run(tmp_path, Config(), rows)
    assert (tmp_path / "data" / "eval.jsonl").read_text() == '{"prompt": "q", "gold": "2"}\n'


def test_a_damaged_config_json_beside_saved_steps_says_how_to_resume(tmp_path):
    """The checkpoints carry the run's config; the advice was to abandon the workdir."""
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    (tmp_path / "config.json").write_text("")
    with pytest.raises(FileExistsError, match=re.escape(
            f"{tmp_path / 'config.json'} is not a training run's config, though {tmp_path / 'checkpoints'} holds "
            "saved steps (each with the run's config): move the file away, then rerun with --resume")):
        Config.check_workdir(tmp_path)
    (tmp_path / "config.json").rename(tmp_path / "config.json.damaged")  # as advised: then the run's config.gin,
    (tmp_path / "config.gin").write_text("# the run's\n")  # without its config.json, was refused in turn
    Config.check_workdir(tmp_path)


def test_weights_that_would_not_train_are_refused_when_a_run_starts_not_when_read_back():
    """Checked in the config's constructor, the refusals made runs trained before them unreadable: evaluate, export
    and a --resume with a higher learning rate all failed on the stored config."""
    for dtype in ("bfloat16", "float16"):
        stored = Config.from_dict({"model": {"dtype": dtype}})  # read back as it was trained
        with pytest.raises(ValueError, match=f"ModelSpec.dtype='{dtype}'"):
            stored.check_precision()
    raised = Config.from_dict({"model": {"dtype": "bfloat16"}, "optim": {"learning_rate": 1e-4}})
    raised.check_precision()  # the resume's --gin_param 'OptimConfig.learning_rate = 1e-4'


def test_a_run_records_its_local_paths_absolute(tmp_path, monkeypatch):
    """A run launched with relative paths (``ModelSpec.hf_dir = "smollm2"``, ``data/...`` as rlv_grpo_math.gin
    names MATH) wrote them as given: its resume, export and evaluate read them from their own directory, and failed
    outside the one it was launched in. A hub id, or a path that is not here, stays as given."""
    (tmp_path / "model").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    launched = []
    monkeypatch.setattr(train, "run_and_report", lambda config, workdir, **kwargs: launched.append(config))
    bindings = ["ModelSpec.hf_dir = 'model'", "ModelSpec.tokenizer_dir = 'Qwen/Qwen2.5-Math-1.5B'",
                "TaskSpec.name = 'file'", "TaskSpec.train_file = 'data/train.jsonl'",
                "TaskSpec.eval_file = 'data/not_yet.jsonl'"]
    try:
        train.launch([str(DIGIT)], bindings, str(tmp_path / "run"))
    finally:
        gin.clear_config()
    (config,) = launched
    assert (config.model.hf_dir, config.model.tokenizer_dir, config.task.train_file, config.task.eval_file) == (
        str(tmp_path / "model"), "Qwen/Qwen2.5-Math-1.5B", str(tmp_path / "data" / "train.jsonl"),
        "data/not_yet.jsonl")


def test_a_resume_names_the_settings_it_changes_and_nothing_else(tmp_path):
    """``resume.changed_settings``: the fields a resume may change that differ from what the run last accepted; not
    the fields a resume keeps (refused at restore), not where the job runs, not the run's own data files where it
    has moved (an API run names them by absolute path), and nothing without a stored config."""
    from rlvjax.config import WRITTEN_IN

    was, now = tmp_path / "was", tmp_path / "now"
    (now / "data").mkdir(parents=True)
    (now / "data" / "train.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    config = Config.from_dict({"task": {"name": "file", "train_file": str(was / "data" / "train.jsonl")}})
    before = {**json.loads(json.dumps(config.to_dict())), WRITTEN_IN: str(was)}
    moved = dataclasses.replace(config, task=dataclasses.replace(config.task, train_file=str(now / "data" /
                                                                                          "train.jsonl")))
    assert resume.changed_settings(before, moved, now) == []
    steps = moved.run.num_steps
    flipped = not moved.run.baseline
    later = dataclasses.replace(moved, run=dataclasses.replace(moved.run, num_steps=steps + 5, baseline=flipped),
                                mesh=dataclasses.replace(moved.mesh, process_id=1),
                                rl=dataclasses.replace(moved.rl, lambda_verify=moved.rl.lambda_verify + 1))
    assert resume.changed_settings(before, later, now) == [f"run.num_steps {steps} -> {steps + 5}",
                                                           f"run.baseline {not flipped!r} -> {flipped!r}"]
    assert resume.changed_settings(None, later, now) == []
