"""The model, task and run sections of a config (frozen dataclasses; ``rlvjax.config.Config`` holds them all), and
the builders that turn them into objects: the policy (HF checkpoint, hub id or a fresh random model), its tokenizer,
and the task's records (the sampler's token ids: ``policy_tokens``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging
import numpy as np
from flax import nnx

from rlvjax.data import arithmetic, prompts, tasks
from rlvjax.data.encoding import encode_prompts
from rlvjax.data.tokenizer import build_tokenizer
from rlvjax.fieldtypes import check_field_types
from rlvjax.model.hf import check_tokenizer, load_hf, load_tokenizer, not_a_model_dir, resolve_model_dir
from rlvjax.model.hf_config import config_from_hf
from rlvjax.model.transformer import ModelConfig, Transformer
from rlvjax.rewards.registry import MESSAGES
from rlvjax.rl import verifier
from rlvjax.sampling.choice import MIN_TEMPERATURE

# Moved to ``policy_tokens``; still importable from here for scripts written against it (the README named them here)
from rlvjax.policy_tokens import (SamplingTokens, completion_ids, decode_completions, export_files,  # noqa: F401
                                  pad_id, sampling_tokens, step_setup, stop_ids)

CONFIGS = Path(__file__).resolve().parent / "configs"  # shipped in the package (the repository links configs/ here)
GIN_SEARCH_PATH = str(CONFIGS.parent)  # where `--gin_file configs/...` and gin includes are found
DTYPES = ("float32", "bfloat16", "float16")  # float16: read back from older runs; a run starting refuses it


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """An HF directory (Qwen2 / Qwen3 / Llama / Mistral, safetensors), or a random Qwen2-architecture model of the
    sizes below.

    ``dtype`` is the weights' (and AdamW's moments'); ``compute_dtype`` the matmuls', activations' and KV cache's
    (None: ``dtype``). Accelerator configs use float32 weights with bfloat16 compute: log-softmax, losses, the
    sampler's probabilities and the optimizer update stay float32 either way. ``config_json`` is the architecture
    where ``hf_dir`` is not on this machine (``--dry_run`` plans and compiles without weights).
    """

    # HF directory or hub id of the policy (Qwen2 / Qwen3 / Llama / Mistral, safetensors); None: a random model of
    # the sizes below
    hf_dir: str | None = None
    # weights' and AdamW moments' dtype: float32, or bfloat16 where the learning rate stays >= 6.1e-5 (a cosine
    # schedule's floor included)
    dtype: str = "float32"
    # matmuls', activations' and KV cache's dtype (None: dtype); training takes bfloat16 or float32 (float16 would
    # need loss scaling)
    compute_dtype: str | None = None
    # an HF config.json giving the architecture where hf_dir is not on this machine (--dry_run)
    config_json: str | None = None
    tokenizer_dir: str | None = None  # random models: None means the built-in arithmetic tokenizer
    hidden_size: int = 128  # random model: width
    intermediate_size: int = 384  # random model: MLP width
    num_layers: int = 2  # random model: decoder layers
    num_heads: int = 4  # random model: attention heads
    num_kv_heads: int = 2  # random model: key/value heads (grouped-query attention)
    init_seed: int = 0  # random model: initialisation seed

    def __post_init__(self):
        check_field_types(self)
        for name in ("dtype", "compute_dtype"):
            value = getattr(self, name)
            if not (value in DTYPES or value is None and name == "compute_dtype"):
                raise ValueError(f"ModelSpec.{name}={value!r} is not a dtype rlvjax trains in; use 'float32' or "
                                 "'bfloat16'")
        # the random model's sizes (an HF model's come from its config.json, checked there): 0 trained a step and
        # failed saving it, a negative size was an MLIR traceback
        sizes = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads")
        bad = [f"{name}={getattr(self, name)}" for name in sizes if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"ModelSpec.{', '.join(bad)}: each of the random model's sizes must be >= 1")
        if self.num_heads % self.num_kv_heads or self.hidden_size % self.num_heads:
            raise ValueError(f"ModelSpec: hidden_size={self.hidden_size} must split into num_heads={self.num_heads} "
                             f"heads, and num_heads into num_kv_heads={self.num_kv_heads} groups; choose sizes that "
                             "divide")
        if (self.hidden_size // self.num_heads) % 2:  # a broadcasting TypeError inside the warm start's first step
            raise ValueError(f"ModelSpec: hidden_size={self.hidden_size} / num_heads={self.num_heads} = "
                             f"{self.hidden_size // self.num_heads}, the head dimension, must be even (rotary position "
                             "embeddings turn its halves as pairs); choose sizes that give an even one")
        check_seed(self.init_seed, "ModelSpec.init_seed")


def check_seed(seed: int, name: str) -> None:
    """A seed ``jax.random.key`` and numpy both take as itself: in [0, 2**32) (2**32 drew seed 0's samples)."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"{name}={seed} must be in [0, 2**32)")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """``arithmetic`` (procedural, built in), ``digit`` (trivial, for tests) or ``file`` (records from a file or a
    datasets id: MATH-style, or any rows with a prompt for a reward of your own), and the reward that grades them."""

    name: str = "arithmetic"  # a task of rlvjax/data/tasks.py: "arithmetic", "digit" or "file"
    train_file: str | None = None  # file task: .jsonl/.json/.parquet path or datasets id of the training problems
    eval_file: str | None = None  # file task: the held-out problems (None: no evals)
    # file task: the config of a datasets train_file that has several ("main" for openai/gsm8k, a subject for
    # EleutherAI/hendrycks_math); None: its only one
    train_subset: str | None = None
    eval_subset: str | None = None  # file task: the same for a datasets eval_file
    levels: tuple[int, ...] = (1, 2, 3, 4)  # arithmetic: difficulty levels (steps per problem) to sample from
    max_value: int = 99  # arithmetic: operands and every intermediate value in 0..max_value (2..99)
    num_train: int = 20000  # arithmetic / digit: training problems generated
    num_eval: int = 200  # held-out problems evaluated (file task: the first num_eval)
    seed: int = 0  # arithmetic / digit: generation seed
    on_bad_gold: str = "skip"  # file rows whose gold answer cannot be determined: "skip" (counted, logged) or "error"
    # Longest prompt in tokens: longer ones are dropped (counted, logged), as verl's filter_overlong_prompts does.
    # It bounds the compiled prompt widths and is the prompt width of the memory plan and of --dry_run without data.
    max_prompt_tokens: int | None = None
    # Which held-out problems the evals use: "test" (the report's) or "validation" (arithmetic: the next num_eval
    # held-out problems after the test ones, disjoint from the test problems of any run with num_eval no larger;
    # choose settings here, report on "test" with the same num_eval). File task: the split of a datasets eval_file
    # (a hub id or dataset directory; any split name; a file has none), train_file's is "train".
    eval_split: str = "test"
    # How a record's prompt becomes the policy's input: "math" — the problem plus the Qwen2.5-Math instruction, in
    # the chat template when the tokenizer has one; "as_is" — a string is used verbatim (TRL's convention; what
    # RLVTrainer uses); "chat" — a string is the user's message in the tokenizer's chat template, no instruction
    # added. Under each, a list of chat messages is rendered with the tokenizer's template.
    prompt_format: str = "math"
    # Reward functions (rewards/registry.py): registered names or "module:function", summed with reward_weights
    # (None: 1 each). "math" grades the last \boxed{} against the gold answer; others read any data column.
    rewards: tuple[str, ...] = ("math",)
    reward_weights: tuple[float, ...] | None = None  # one weight per reward (None: 1 each)

    def __post_init__(self):
        check_field_types(self)
        tasks.get(self.name)  # an unknown name fails here, listing the known ones
        if self.prompt_format not in prompts.PROMPT_FORMATS:
            raise ValueError(f"TaskSpec.prompt_format={self.prompt_format!r}: use one of {prompts.PROMPT_FORMATS}")
        if self.name == "file":
            if not self.eval_split:
                raise ValueError("TaskSpec.eval_split is empty; name the eval_file dataset's split, e.g. 'test'")
            if self.eval_split != "test" and self.eval_file and Path(self.eval_file).expanduser().is_file():
                # a file has no splits: "validation" evaluated the same rows as "test", silently
                raise ValueError(f"TaskSpec.eval_split={self.eval_split!r} picks a split of a datasets id or "
                                 f"directory; eval_file {self.eval_file} is a file: point eval_file at the "
                                 "validation file instead, and leave eval_split 'test'")
        elif self.eval_split not in ("test", "validation"):
            raise ValueError(f"TaskSpec.eval_split={self.eval_split!r}: use 'test' or 'validation'")
        elif self.eval_split == "validation" and self.name != "arithmetic":
            raise ValueError(f"TaskSpec.eval_split='validation' is built for the arithmetic and file tasks; for "
                             f"{self.name!r} use 'test'")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"TaskSpec.max_prompt_tokens={self.max_prompt_tokens!r} must be a whole number >= 1 "
                             "(or None: no limit)")
        if self.num_train < 1 or self.num_eval < 0:  # -1 evaluated all but the last problem
            raise ValueError(f"TaskSpec.num_train={self.num_train} must be >= 1 and TaskSpec.num_eval="
                             f"{self.num_eval} >= 0 (problems)")
        check_seed(self.seed, "TaskSpec.seed")
        if self.on_bad_gold not in ("skip", "error"):
            raise ValueError(f"TaskSpec.on_bad_gold={self.on_bad_gold!r}: use 'skip' or 'error'")
        for name in ("train_file", "eval_file"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ValueError(f"TaskSpec.{name} is empty; name a .jsonl/.json/.parquet file or a datasets id, or "
                                 "None")
        if not 2 <= self.max_value <= arithmetic.MAX_VALUE:  # was refused only when problems were generated: the
            # dry run accepted it
            raise ValueError(f"TaskSpec.max_value={self.max_value} must be in 2..{arithmetic.MAX_VALUE}")
        if not self.levels or min(self.levels) < 1:  # () was a ZeroDivisionError traceback in the problem generator
            raise ValueError(f"TaskSpec.levels={self.levels!r} must name at least one level, each >= 1 (steps per "
                             "problem), e.g. (1, 2, 3, 4)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    num_steps: int = 100  # RL iterations (each: sample, grade, update)
    batch_size: int = 8  # prompts per step, all processes together; each gets group_size samples
    seed: int = 0  # sampling and data-order seed
    # steps between sample logs (samples.jsonl: the step's first 4 rollouts, the first problem's group first, with
    # their rewards and p(Yes)); metrics are logged every step
    log_every: int = 1
    checkpoint_every: int = 10  # steps between checkpoints (the last step is always saved)
    max_to_keep: int | None = 3  # None: keep every checkpoint
    eval_every: int = 0  # 0: only at the end
    eval_samples: int = 4  # samples per eval problem for the periodic eval (>= 2)
    export_final: bool = True  # write the trained policy as an HF directory (workdir/final) at the end
    # K: the CLI's end-of-run report samples warm start and trained policy K times per problem (eval.json, PNG);
    # a power of two >= 2, or 0 for no report
    final_eval_samples: int = 0
    # The end-of-run report samples at the training temperature (the headline: the distribution RL and the verifier
    # were trained on, fixed before any result is seen) and, if set and different, at this one too, side by side.
    # The periodic eval uses this one (None: RLConfig.temperature).
    eval_temperature: float | None = None
    # Also train lambda_verify = 0 from the same warm start, seed and number of steps (WORKDIR/baseline_lambda0), and
    # report RL^V against it as the paper does: pass@1 of both, and the samples RL^V's weighted vote needs to match
    # the baseline's majority vote.
    baseline: bool = False
    compilation_cache_dir: str | None = "~/.cache/rlvjax/jax"  # XLA's persistent compilation cache (None: off)

    def __post_init__(self):
        check_field_types(self)
        checks = [
            (self.num_steps >= 1, f"RunConfig.num_steps={self.num_steps} must be >= 1"),
            (self.batch_size >= 1, f"RunConfig.batch_size={self.batch_size} must be >= 1"),
            (self.checkpoint_every >= 1, f"RunConfig.checkpoint_every={self.checkpoint_every} must be >= 1 (steps "
                                         "between checkpoints)"),
            (self.log_every >= 1, f"RunConfig.log_every={self.log_every} must be >= 1"),
            (self.eval_every >= 0, f"RunConfig.eval_every={self.eval_every} must be >= 0 (0: only at the end)"),
            (self.eval_samples >= 2, f"RunConfig.eval_samples={self.eval_samples} must be >= 2 (best-of-K compares "
                                     "a problem's samples)"),
            (self.final_eval_samples == 0 or (self.final_eval_samples >= 2
                                              and not self.final_eval_samples & (self.final_eval_samples - 1)),
             f"RunConfig.final_eval_samples={self.final_eval_samples}: use 0 (no final report) or a power of two "
             ">= 2 (the report's curve doubles N up to the pool)"),
            (self.eval_temperature is None or self.eval_temperature >= MIN_TEMPERATURE,
             f"RunConfig.eval_temperature={self.eval_temperature} must be >= {MIN_TEMPERATURE} (votes need distinct "
             "samples) or None (the RL sampling temperature)"),
            (self.max_to_keep is None or self.max_to_keep >= 1,
             f"RunConfig.max_to_keep={self.max_to_keep} must be >= 1 (or None to keep all)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_seed(self.seed, "RunConfig.seed")  # checked at the data pipeline alone: a launched run failed there


def use_compilation_cache(directory: str | None) -> None:
    """XLA's compiled programs persist in ``directory`` (``RunConfig.compilation_cache_dir``; None or '': off), so
    a resumed or repeated run, or another evaluation of a model of the same shapes, skips the minutes a 28-layer
    model takes to compile. ``JAX_COMPILATION_CACHE_DIR`` in the environment wins, as JAX's own setting. A later
    run in the same process with another directory (or None) switches the cache (JAX opens it once otherwise).
    Every program is kept, not only those over JAX's default 1 s of compiling: a run's dozens of small ones add up
    (1.6 of the 19.6 s a cached 8-step digit-task run takes); ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` wins."""
    from jax.experimental.compilation_cache import compilation_cache

    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    target = os.path.expanduser(directory) if directory else None
    if jax.config.jax_compilation_cache_dir != target:
        jax.config.update("jax_compilation_cache_dir", target)
        compilation_cache.reset_cache()


def build_policy(spec: ModelSpec, question: str = verifier.VERIFY_QUESTION) -> tuple[Transformer, Any]:
    """The policy and its tokenizer; the built-in tokenizer's one-token verify prompt asks ``question``."""
    if spec.hf_dir is not None:
        return load_hf(spec.hf_dir, dtype=jnp.dtype(spec.dtype), compute_dtype=spec.compute_dtype)
    if spec.config_json is not None:  # it trained the built-in model's sizes while --dry_run planned this one
        raise ValueError(f"ModelSpec.config_json={spec.config_json!r} names an architecture for --dry_run only; "
                         "training needs its weights: set ModelSpec.hf_dir to the model's directory (or clear "
                         "config_json to train the built-in random model)")
    tokenizer = _random_model_tokenizer(spec, question)
    return Transformer(_random_model_config(spec, len(tokenizer)), nnx.Rngs(spec.init_seed)), tokenizer


def _random_model_tokenizer(spec: ModelSpec, question: str):
    if spec.tokenizer_dir is None:
        return build_tokenizer(verifier.base_verify_prompt(question))
    return load_tokenizer(spec.tokenizer_dir)


def _random_model_config(spec: ModelSpec, vocab_size: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
                       num_layers=spec.num_layers, num_heads=spec.num_heads, num_kv_heads=spec.num_kv_heads,
                       qkv_bias=True, tie_word_embeddings=True, max_position_embeddings=4096, dtype=spec.dtype,
                       compute_dtype=spec.compute_dtype)


def config_path(path: str) -> Path:
    """A file named in a config: as given (absolute or from the working directory), else under the repository, as
    gin's ``include`` resolves ``configs/...``."""
    given = Path(path)
    return given if given.is_absolute() or given.exists() else CONFIGS.parent / given


def abstract_policy(spec: ModelSpec, question: str = verifier.VERIFY_QUESTION, *,
                    dry_run: bool = False) -> tuple[ModelConfig, Any]:
    """``(architecture, tokenizer or None)`` without loading weights: ``hf_dir``'s config.json where it exists,
    else ``config_json``, else the random model's sizes. The tokenizer is None when none is on this machine.
    ``dry_run``: a missing ``hf_dir`` names ``config_json`` (else: a run's base model, read by export and
    evaluate)."""
    if spec.hf_dir is not None and (spec.config_json is None or Path(spec.hf_dir).exists()):
        spec = dataclasses.replace(spec, hf_dir=str(resolve_model_dir(spec.hf_dir)))  # a hub id: its cached files
    if spec.hf_dir is not None and (Path(spec.hf_dir) / "config.json").exists():
        hf, tokenizer = json.loads((Path(spec.hf_dir) / "config.json").read_text()), None
        cfg = config_from_hf(hf, spec.dtype, spec.compute_dtype)
        try:
            tokenizer = load_tokenizer(spec.hf_dir)
        except ValueError:
            return cfg, None
        check_tokenizer(tokenizer, cfg, spec.hf_dir)
        return cfg, tokenizer
    if spec.config_json is not None:
        path = config_path(spec.config_json)
        if not path.is_file():
            raise FileNotFoundError(f"ModelSpec.config_json: no such file {spec.config_json}; point it at an HF "
                                    "config.json (configs/models/ ships Qwen2.5-Math-1.5B and R1-Distill-Qwen-1.5B)")
        try:
            hf = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a JSON config.json ({e}); point ModelSpec.config_json at an HF "
                             "config.json") from None
        tokenizer = load_tokenizer(path.parent) if (path.parent / "tokenizer.json").exists() else None
        return config_from_hf(hf, spec.dtype, spec.compute_dtype), tokenizer
    if spec.hf_dir is not None and dry_run:  # --dry_run plans from config_json where the weights are elsewhere
        raise FileNotFoundError(f"ModelSpec.hf_dir: {not_a_model_dir(spec.hf_dir)} (--dry_run without the weights: "
                                "set ModelSpec.config_json to its config.json, e.g. "
                                "configs/models/qwen2_5_math_1_5b/config.json)")
    if spec.hf_dir is not None:
        raise FileNotFoundError(f"the run's base model, ModelSpec.hf_dir: "
                                f"{not_a_model_dir(spec.hf_dir, fix='run the command from where the run was started')}"
                                "; its config.json and tokenizer are read back from there")
    tokenizer = _random_model_tokenizer(spec, question)
    return _random_model_config(spec, len(tokenizer)), tokenizer


def build_records(task: TaskSpec, tokenizer, given: tuple[list[dict], list[dict]] | None = None
                  ) -> tuple[list[dict], list[dict]]:
    """(train, eval) records ``{prompt, gold, level, id, ...}`` with prompts in the policy's format, without those
    longer than ``task.max_prompt_tokens``: the task's, or the ``given`` raw records (the Python API's datasets)."""
    if given is None:
        train, evals = tasks.get(task.name).records(task, tokenizer)
    else:
        train, evals = (prompts.format_records(records, tokenizer, task.prompt_format) for records in given)
    if given is not None or task.name == "file":  # generated tasks hold their splits apart themselves
        shared = len({r["prompt"] for r in evals} & {r["prompt"] for r in train})
        if shared:
            logging.warning("%d of %d eval prompts are train prompts too: the evals partly measure memorised problems; "
                            "give disjoint train and eval data", shared, len(evals))
    kept = _fitting(task, tokenizer, train, "train")
    if train and not kept:
        raise ValueError(f"every train prompt is longer than TaskSpec.max_prompt_tokens={task.max_prompt_tokens}; "
                         "raise it")
    return kept, _fitting(task, tokenizer, evals, "eval")


def build_eval_records(task: TaskSpec, tokenizer, given: list[dict] | None = None) -> list[dict]:
    """The eval records alone, as :func:`build_records` gives them (the task's, or the ``given`` raw eval rows):
    what an evaluation of a trained run reads (its training file may have moved since, or be a datasets id out of
    reach offline)."""
    records = tasks.eval_records(task, tokenizer) if given is None else \
        prompts.format_records(given, tokenizer, task.prompt_format)
    return _fitting(task, tokenizer, records, "eval")


def _fitting(task: TaskSpec, tokenizer, records: list[dict], name: str) -> list[dict]:
    """``records`` without the prompts longer than ``task.max_prompt_tokens``, saying how many were dropped."""
    if task.max_prompt_tokens is None:
        return records
    lengths = [len(ids) for ids in encode_prompts(tokenizer, [r["prompt"] for r in records])]
    fits = [r for r, n in zip(records, lengths) if n <= task.max_prompt_tokens]
    if len(fits) < len(records):
        logging.warning("dropped %d of %d %s prompts longer than TaskSpec.max_prompt_tokens=%d", len(records) -
                        len(fits), len(records), name, task.max_prompt_tokens)
    return fits


def check_encodable(tokenizer, records: list[dict], name: str = "",
                    fix: str = "use a model whose tokenizer covers them (ModelSpec.hf_dir / ModelSpec.tokenizer_dir) "
                               "or remove those records") -> None:
    """Raises a one-line ValueError (ending in ``fix``) when a prompt holds characters that ``tokenizer`` drops (a
    BPE without byte fallback, like the built-in arithmetic tokenizer) or encodes as its unknown token: the model
    would silently see another problem."""
    if not records:
        return
    encoded = tokenizer([r["prompt"] for r in records], add_special_tokens=False, return_offsets_mapping=True)
    bad = []
    for record, ids, offsets in zip(records, encoded["input_ids"], encoded["offset_mapping"]):
        covered = np.zeros(len(record["prompt"]) + 1, bool)
        for i, (start, end) in zip(ids, offsets):
            covered[start:end] |= i != tokenizer.unk_token_id
        lost = "".join(dict.fromkeys(c for c, ok in zip(record["prompt"], covered) if not ok and not c.isspace()))
        if lost:
            bad.append((record.get("id", "?"), lost))
    if bad:
        (first, lost), more = bad[0], len(bad) - 1
        raise ValueError(f"{len(bad)} {name + ' ' if name else ''}prompt(s) hold characters the tokenizer cannot "
                         f"encode (record {first}: {', '.join(map(repr, lost[:5]))}{', ...' if len(lost) > 5 else ''}"
                         f"{f'; and {more} more record(s)' if more else ''}); {fix}")


def check_verify_form(task: TaskSpec, tokenizer, verify: verifier.VerifierConfig, records: list[dict]) -> None:
    """A warning where text prompts are read as they are (``prompt_format = "as_is"``) by a tokenizer with a chat
    template, and the verify question is asked as a chat turn after them (``VerifierConfig.form = "auto"``): the
    verify prompt closes a turn no prompt opened."""
    # records are rendered: a chat prompt's text is its template's rendering, its messages kept beside it (it warned
    # on every chat dataset, advising the plain form that would break it)
    if verify.form == "auto" and task.prompt_format == "as_is" and getattr(tokenizer, "chat_template", None) \
            and any(MESSAGES not in r for r in records):
        logging.warning("the prompts are read as plain text (TaskSpec.prompt_format = 'as_is'), and the tokenizer's "
                        "chat template asks the verify question as a chat turn after them; set VerifierConfig.form "
                        "= 'plain' to ask it in text, or 'chat' to keep this")


def check_report(run: RunConfig, eval_problems: int, *, periodic: bool = True) -> None:
    """One line when the end-of-run report (``final_eval_samples`` with ``export_final``) or the periodic eval
    (``eval_every``; not ``periodic``: a resume keeping a setting an older rlvjax accepted) is asked for and the task
    has no eval problems (the report failed after training); the run and its dry run refuse alike."""
    if run.final_eval_samples and run.export_final and not eval_problems:
        raise ValueError(f"RunConfig.final_eval_samples={run.final_eval_samples} asks for an end-of-run report, but "
                         "the task has no eval problems; give some (TaskSpec.eval_file / num_eval, or eval_dataset) "
                         "or set RunConfig.final_eval_samples = 0")
    if periodic and run.eval_every and not eval_problems:  # the run went on with no eval/* metric and no word
        raise ValueError(f"RunConfig.eval_every={run.eval_every} evaluates the policy during training, but the task "
                         "has no eval problems; give some (TaskSpec.eval_file / num_eval, or eval_dataset) or set "
                         "RunConfig.eval_every = 0")


def check_positions(config: ModelConfig, prompt_tokens: int, new_tokens: int, verify_tokens: int, *, knob: str,
                    fix: str) -> None:
    """Raises a one-line ValueError (ending in ``fix``) when a prompt of ``prompt_tokens``, ``new_tokens`` sampled
    after it (set by ``knob``) and the verify prompt need more positions than the model has."""
    longest = prompt_tokens + new_tokens + verify_tokens
    if longest > config.max_position_embeddings:
        raise ValueError(f"prompts of up to {prompt_tokens} tokens + {knob}={new_tokens} + the verify prompt "
                         f"({verify_tokens}) = {longest} positions, more than the model's max_position_embeddings="
                         f"{config.max_position_embeddings}; {fix}")
