"""What a run is made of, as gin-bound frozen dataclasses, and the builders that turn them into objects:
the policy (HF checkpoint or a fresh random model), its tokenizer, the task's records and the verifier tokens.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import gin
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvjax.data import arithmetic, sources
from rlvjax.data.tokenizer import build_tokenizer
from rlvjax.model.hf import load_hf, load_tokenizer
from rlvjax.model.transformer import ModelConfig, Transformer
from rlvjax.parallel import MeshConfig
from rlvjax.rl import verifier
from rlvjax.rl.steps import OptimConfig, RLConfig, Statics
from rlvjax.sft import WarmStartConfig


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """An HF directory (Qwen2 / Llama, safetensors), or a random Qwen2-architecture model of the sizes below."""

    hf_dir: str | None = None
    dtype: str = "float32"
    tokenizer_dir: str | None = None  # random models: None means the built-in arithmetic tokenizer
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    init_seed: int = 0


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """``arithmetic`` (procedural, built in), ``digit`` (trivial, for tests) or ``file`` (MATH-style records)."""

    name: str = "arithmetic"
    train_file: str | None = None
    eval_file: str | None = None
    levels: tuple[int, ...] = (1, 2, 3, 4)
    max_value: int = 99  # arithmetic: operands and every intermediate value in 0..max_value (2..99)
    num_train: int = 20000
    num_eval: int = 200
    seed: int = 0
    on_bad_gold: str = "skip"  # file rows whose gold answer cannot be determined: "skip" (counted, logged) or "error"


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RunConfig:
    num_steps: int = 100
    batch_size: int = 8  # prompts per step, all processes together; each gets group_size samples
    seed: int = 0
    log_every: int = 1
    checkpoint_every: int = 10
    max_to_keep: int = 3
    eval_every: int = 0  # 0: only at the end
    eval_samples: int = 4  # samples per eval problem for the periodic eval
    export_final: bool = True  # write the trained policy as an HF directory (workdir/final) at the end
    final_eval_samples: int = 0  # K > 0: the CLI evaluates warm start and trained policy at the end (eval.json, PNG)
    eval_temperature: float | None = None  # test-time sampling temperature of every eval (None: RLConfig.temperature)


def build_policy(spec: ModelSpec) -> tuple[Transformer, Any]:
    if spec.hf_dir is not None:
        return load_hf(spec.hf_dir, dtype=jnp.dtype(spec.dtype))
    if spec.tokenizer_dir is not None:
        tokenizer = load_tokenizer(spec.tokenizer_dir)
    else:
        tokenizer = build_tokenizer()
    cfg = ModelConfig(vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
                      intermediate_size=spec.intermediate_size, num_layers=spec.num_layers,
                      num_heads=spec.num_heads, num_kv_heads=spec.num_kv_heads, qkv_bias=True,
                      tie_word_embeddings=True, max_position_embeddings=4096, dtype=spec.dtype)
    return Transformer(cfg, nnx.Rngs(spec.init_seed)), tokenizer


def build_records(task: TaskSpec, tokenizer) -> tuple[list[dict], list[dict]]:
    """(train, eval) records ``{prompt, gold, level, id}`` with prompts already in the policy's format."""
    if task.name == "arithmetic":
        train = arithmetic.generate(task.seed, task.num_train, task.levels, max_value=task.max_value)
        evals = arithmetic.eval_set(task.num_eval, levels=task.levels, max_value=task.max_value)
        return arithmetic.records(train), arithmetic.records(evals)
    if task.name == "digit":
        return (arithmetic.digit_records(task.seed, task.num_train),
                arithmetic.digit_records(task.seed + 1, task.num_eval))
    if task.name == "file":
        if task.train_file is None:
            raise ValueError("TaskSpec.name='file' needs TaskSpec.train_file (a jsonl/parquet path or datasets id)")
        train = sources.load_records(task.train_file, on_bad_gold=task.on_bad_gold)[0]
        evals = (sources.load_records(task.eval_file, on_bad_gold=task.on_bad_gold)[0][: task.num_eval]
                 if task.eval_file else [])
        fmt = lambda rs: [{**r, "prompt": sources.format_prompt(r["prompt"], tokenizer)} for r in rs]
        return fmt(train), fmt(evals)
    raise ValueError(f"unknown task {task.name!r}; use 'arithmetic', 'digit' or 'file'")


def warm_start_pairs(task: TaskSpec, num: int, mistake_rate: float, seed: int) -> list[tuple[str, str, bool]]:
    """(prompt, completion, correct) examples whose completions are right with a controlled probability."""
    if task.name == "arithmetic":
        return arithmetic.sft_examples(seed, num, mistake_rate, task.levels, task.max_value)
    if task.name == "digit":  # the boxed digit is the prompt's with probability 1 - mistake_rate, else another
        rng = np.random.default_rng(seed)
        pairs = []
        for r in arithmetic.digit_records(seed, num):
            digit = int(r["gold"])
            if rng.random() < mistake_rate:
                digit = (digit + int(rng.integers(1, 10))) % 10
            pairs.append((r["prompt"], arithmetic.format_solution([], digit), str(digit) == r["gold"]))
        return pairs
    raise ValueError(f"task {task.name!r} has no generated solutions for a warm start; set WarmStartConfig.num_steps"
                     " = 0 and start from an instruction-tuned checkpoint")


@dataclasses.dataclass(frozen=True)
class VerifierTokens:
    suffix: tuple[int, ...]  # appended after prompt + completion (without its stop token)
    yes_id: int
    no_id: int
    stop_ids: tuple[int, ...]
    pad_id: int
    suppress_ids: tuple[int, ...]  # never sampled: special tokens other than the stops, verifier-only tokens


def verifier_tokens(tokenizer) -> VerifierTokens:
    """Verify prompt, Yes/No ids, stop ids and the ids the policy must never sample.

    The suffix starts with the end-of-turn token for chat models: the sampler drops the stop token from the cache,
    so one suffix serves finished and truncated completions alike. Suppressed: special tokens that are not stops
    (padding, <bos>, <|im_start|>), and verifier tokens that exist only as added tokens (the arithmetic
    tokenizer's one-token verify prompt and verdicts) — text the policy never writes, whose only effect when
    sampled would be out-of-distribution solutions for the verifier to score.
    """
    stop = {tokenizer.eos_token_id, verifier.end_of_turn_id(tokenizer)} - {None}
    yes_id, no_id = verifier.yes_no_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    suffix = tuple(verifier.verify_prompt_ids(tokenizer))
    added = set(tokenizer.get_added_vocab().values())
    suppress = (set(tokenizer.all_special_ids) | (added & {*suffix, yes_id, no_id})) - stop
    return VerifierTokens(suffix, yes_id, no_id, tuple(sorted(stop)), pad, tuple(sorted(suppress)))


def statics(graphdef, tx, rl: RLConfig, tokenizer) -> Statics:
    """What the jitted RL steps close over, for this policy's tokenizer."""
    vt = verifier_tokens(tokenizer)
    return Statics(graphdef, tx, rl, vt.suffix, vt.yes_id, vt.no_id, vt.stop_ids, vt.pad_id, vt.suppress_ids)


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    return [tokenizer.encode(p, add_special_tokens=False) for p in prompts]


def decode_completions(tokenizer, tokens, lengths, finished) -> list[str]:
    """Completion texts without the stop token, from ``[R, N]`` host arrays."""
    return [tokenizer.decode(row[: n - int(f)], skip_special_tokens=False)
            for row, n, f in zip(tokens.tolist(), lengths.tolist(), finished.tolist())]


def config_dict() -> dict:
    """The run's resolved settings, stored with each checkpoint; ``model`` is compared on resume."""
    asdict = lambda c: json.loads(json.dumps(dataclasses.asdict(c)))  # tuples -> lists, as JSON restores them
    return {"model": asdict(ModelSpec()), "warm_start": asdict(WarmStartConfig()), "task": asdict(TaskSpec()),
            "run": asdict(RunConfig()), "rl": asdict(RLConfig()), "optim": asdict(OptimConfig()),
            "mesh": asdict(MeshConfig())}
