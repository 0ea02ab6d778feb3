"""The flags of ``python -m rlvjax.evaluate``: ``define`` declares them, ``check`` refuses what is wrong in them
alone (one line each, before anything is loaded or written)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from rlvjax import testtime
from rlvjax.reports import check_pool_size
from rlvjax.sampling.choice import MIN_TEMPERATURE
from rlvjax.strategies.flags import strategy_rules

BASELINE_POLICY = "lambda0"  # --policy: the lambda = 0 baseline's final policy (the name the run's report gives it)


def define() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "a training run's workdir (or give --model_dir)")
    flags.DEFINE_string("model_dir", None, "an HF model directory to evaluate (with --data)")
    flags.DEFINE_string("policy", "final", "an HF directory inside the workdir: final or warm_start; or lambda0, the "
                        "lambda = 0 baseline's final policy (with --checkpoint N: its step N)")
    flags.DEFINE_integer("checkpoint", None, "evaluate this Orbax checkpoint step instead of an HF directory")
    flags.DEFINE_string("data", None, "problems to evaluate on (jsonl/parquet/datasets id); default: the run's task")
    flags.DEFINE_string("data_split", "test", "the split of a --data datasets id or directory (a file has none)")
    flags.DEFINE_string("data_subset", None, "the config of a --data datasets id that has several (e.g. 'main' for "
                        "openai/gsm8k)")
    flags.DEFINE_bool("raw_prompts", False, "use --data prompts as given (already in the model's format; chat "
                      "messages still go through its chat template) instead of rendering each in the run's "
                      "prompt format (an rlvjax export's, from its rlvjax_sampling.json; any other --model_dir: the "
                      "chat template and the Qwen2.5-Math instruction)")
    flags.DEFINE_string("reward", None, "reward functions to grade with, comma-separated: registered names or "
                        "module:function (importable from the working directory or PYTHONPATH), summed; a completion "
                        "is correct where the sum is >= 0.5 (default: --workdir: the run's own; --model_dir: math, "
                        "which needs an answer in each --data row)")
    flags.DEFINE_integer("num_samples", 16, "K: samples per problem (a power of two)")
    flags.DEFINE_integer("max_new_tokens", None, "tokens per completion (default: the run's, an rlvjax export's too; "
                         "1024 for any other --model_dir)")
    flags.DEFINE_integer("batch_size", 256, "R: completions decoded at once; the rest queue behind them")
    flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "weights and compute of an HF directory (default: "
                      "--workdir: the run's ModelSpec dtype and compute_dtype; --model_dir: float32)")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.DEFINE_float("temperature", None, "sampling temperature (default: the run's training temperature, the "
                       "headline, an rlvjax export's too; 1.0 for any other --model_dir)")
    flags.DEFINE_float("top_p", None, "nucleus sampling (default: the run's, an rlvjax export's too; 1, off, for any "
                       "other --model_dir)")
    flags.DEFINE_integer("top_k", None, "top-k sampling (default: the run's, an rlvjax export's too; 0, off, for any "
                         "other --model_dir)")
    flags.DEFINE_string("out", None, "output directory (default: WORKDIR/eval/NAME, or WORKDIR/eval/NAME-DATA with "
                        "--data; NAME: the policy, step_N with --checkpoint N; --policy lambda0 in "
                        "WORKDIR/baseline_lambda0/eval/, as lambda0 or lambda0_step_N; --model_dir: "
                        "./eval/MODEL_DIR_NAME-DATA; DATA: the --data file's stem)")
    flags.DEFINE_string("compilation_cache", None, "XLA's persistent compilation cache directory, '' for none "
                        "(default: the run's RunConfig.compilation_cache_dir, ~/.cache/rlvjax/jax unless changed)")
    conventions = testtime.Conventions  # each flag's default is the class's (see its docstring)
    flags.DEFINE_enum("score", conventions.score, ["normalized", "raw"], "verifier score: p(Yes) normalised over "
                      "{Yes, No}, or raw p(Yes)")
    flags.DEFINE_enum("grouping", conventions.grouping, ["math", "string"], "answers grouped by math equivalence or "
                      "by identical strings")
    flags.DEFINE_enum("bon_unparseable", conventions.unparseable, ["last", "rank"], "best-of-N: unparseable answers "
                      "rank last, or by their score like any other")
    flags.DEFINE_enum("bon_ties", conventions.ties, ["random", "first"], "best-of-N: score ties broken at random "
                      "(expected accuracy) or by pool order")
    flags.DEFINE_string("strategy", "fixed", "fixed, adaptive, length or particle: the test-time strategy priced "
                      "against fixed-N voting in eval.json's `strategy` and compute.png: adaptive and length are "
                      "replayed on the K-pool, particle runs live (rlvjax.strategies)")
    flags.DEFINE_string("delta", None, "adaptive: stopping deltas to sweep, comma-separated (default "
                        "0.2,0.1,0.05,0.02)")
    flags.DEFINE_integer("min_samples", None, "adaptive: samples before the first check (default 4)")
    flags.DEFINE_integer("round_size", None, "adaptive: samples per round (default 2)")
    flags.DEFINE_float("mean_samples", None, "adaptive: overall cap, samples per problem on average (default none)")
    flags.DEFINE_string("budgets", None, "length: increasing token budgets, comma-separated (default 1/4, 1/2 and "
                        "all of max_new_tokens)")
    flags.DEFINE_string("threshold", None, "length: confidence thresholds to sweep (default 0.1,0.3,0.5,0.7)")
    flags.DEFINE_string("particles", None, "particle: particle counts to run, comma-separated (default 4)")
    flags.DEFINE_string("step_delimiter", None, "particle: text that ends a step, escapes allowed (default \\n\\n)")
    flags.DEFINE_integer("max_steps", None, "particle: resampling rounds before the rows run to the end (default 32)")
    flags.DEFINE_string("resample", None, "particle: multinomial or reject (default multinomial)")
    flags.DEFINE_float("reject_fraction", None, "particle, reject: share of rows replaced per step (default 0.25)")
    flags.DEFINE_float("weight_temperature", None, "particle: weights are score ** (1 / this), the --score's score "
                       "(default 1)")


def check(f) -> None:
    """Refuse flags that are wrong by themselves or together (``~`` in a path is expanded in place)."""
    for name in ("workdir", "model_dir", "out", "data"):  # "" read as not given by some checks, as "." by others
        value = getattr(f, name)
        if value is not None and not value.strip():
            raise ValueError(f"--{name} is empty; pass a {'file or datasets id' if name == 'data' else 'directory'}"
                             ", or leave the flag out")
        if value is not None and value.startswith("~"):  # "~/run" was a ./~/run
            setattr(f, name, os.path.expanduser(value))
    if not 0 <= f.seed < 2**32:  # jax.random.key keeps 32 bits: 2**32 drew seed 0's samples
        raise ValueError(f"--seed={f.seed} must be in [0, 2**32)")
    if f.data and Path(f.data).is_file() and (f["data_split"].present or f["data_subset"].present):
        raise ValueError(f"--data {f.data} is a file: --data_split and --data_subset pick a split or config of a "
                         "datasets id or directory; drop them")
    if bool(f.workdir) == bool(f.model_dir):  # everything here is checked before anything is loaded
        raise ValueError("give either --workdir (a training run) or --model_dir (an HF directory) to evaluate")
    if f.model_dir and not f.data:
        raise ValueError(f"--model_dir {f.model_dir} needs --data: a .jsonl/.json/.parquet file (or datasets id) of "
                         "problems with their answers")
    check_pool_size(f.num_samples)
    if f.temperature is not None and not MIN_TEMPERATURE <= f.temperature < math.inf:
        raise ValueError(f"--temperature={f.temperature} must be >= {MIN_TEMPERATURE} and finite: votes need distinct "
                         "samples; pass a positive --temperature or leave it out (the run's training temperature; 1.0 "
                         "for --model_dir)")
    if f.model_dir and f.checkpoint is not None:
        raise ValueError(f"--checkpoint {f.checkpoint} picks a step of a training run; drop it, or pass the run's "
                         "--workdir instead of --model_dir")
    if f.model_dir and f["policy"].present:  # was ignored: the directory evaluated, the policy named nowhere
        raise ValueError(f"--policy {f.policy} picks a policy of a training run; drop it, or pass the run's --workdir "
                         "instead of --model_dir")
    data_flags = [name for name in ("raw_prompts", "data_split", "data_subset") if f[name].value != f[name].default]
    if data_flags and not f.data:  # were ignored (raw_prompts recorded in eval.json as if it had applied)
        raise ValueError(f"--{data_flags[0]} applies to the problems of --data; pass --data, or drop it (the run's "
                         "own eval problems are read as it rendered them)")
    if f.compilation_cache:  # else JAX's warning, and the cache off (under a file, or where it cannot be made)
        cache = Path(f.compilation_cache).expanduser()
        existing = next(p for p in (cache, *cache.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise ValueError(f"--compilation_cache {f.compilation_cache}: {existing} is "
                             f"{'not writable' if existing.is_dir() else 'a file'}; pass a writable directory, or '' "
                             "for no cache")
    if f.checkpoint is not None and f.policy not in ("final", BASELINE_POLICY):  # was ignored: step N evaluated
        raise ValueError(f"--policy {f.policy} names an exported policy, --checkpoint {f.checkpoint} a step of the "
                         f"run's training (or of its baseline, with --policy {BASELINE_POLICY}); drop one")
    if f.checkpoint is not None and f.dtype is not None:
        raise ValueError(f"--dtype={f.dtype} applies to HF directories; a checkpoint computes in its run's "
                         "ModelSpec.compute_dtype: drop --dtype, or evaluate --policy final")
    for name in ("max_new_tokens", "batch_size"):
        if getattr(f, name) is not None and getattr(f, name) < 1:
            raise ValueError(f"--{name}={getattr(f, name)} must be >= 1")
    if f.top_p is not None and not 0 < f.top_p <= 1:
        raise ValueError(f"--top_p={f.top_p} must be in (0, 1] (1: off)")
    if f.top_k is not None and f.top_k < 0:
        raise ValueError(f"--top_k={f.top_k} must be >= 0 (0: off)")
    # The strategy's flags are checked here (the length budgets against max_new_tokens again once it is known).
    strategy_rules(f, f.num_samples, f.max_new_tokens or 1 << 30)
