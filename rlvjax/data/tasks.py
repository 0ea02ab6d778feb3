"""Tasks by name (``TaskSpec.name``): each builds its (train, eval) records and, where it can generate solutions,
the warm start's examples. ``register`` adds one; nothing else branches on a task's name.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import numpy as np

from rlvjax import importing
from rlvjax.data import arithmetic, prompts, sources

Records = tuple[list[dict], list[dict]]


@dataclasses.dataclass(frozen=True)
class Task:
    # (TaskSpec, tokenizer) -> (train, eval) records, prompts rendered for the policy
    records: Callable[[Any, Any], Records]
    # (TaskSpec, num, mistake_rate, seed) -> [(prompt, completion, correct)]; None: no warm start from this task
    warm_start_pairs: Callable[[Any, int, float, int], list[tuple[str, str, bool]]] | None = None
    # (TaskSpec, tokenizer) -> the eval records alone, where the train split costs to build or may be gone (a file
    # moved since training, a datasets id offline); None: ``records``' second
    eval_records: Callable[[Any, Any], list[dict]] | None = None
    # Writes its own problems and prompts: reads none of TaskSpec's data fields (train_file, eval_file, the subsets)
    # and no prompt_format, which a run then refuses (``Config.check_consistent``)
    generated: bool = False


_TASKS: dict[str, Task] = {}
_OWN: set[str] = set()  # rlvjax's names, filled after its own registrations at the end of this module


def register(name: str, task: Task) -> None:
    """``TaskSpec.name = name`` picks ``task``. A name of your own may be registered again (it is replaced); rlvjax's
    own are kept. A new process (``--resume``, ``evaluate``, ``export``) knows it only once its module is imported:
    ``TaskSpec.name = "module:attribute"`` (a ``Task``) imports it."""
    importing.check_replaceable("task", name, _OWN)
    _TASKS[name] = task


def names() -> list[str]:
    return sorted(_TASKS)


def get(name: str) -> Task:
    """The task registered as ``name``, or the ``Task`` that ``"module:attribute"`` names (its module imported)."""
    task = importing.lookup(_TASKS, name, "TaskSpec.name", f"unknown task {name!r}; use one of {names()} (or "
                            "register your own with rlvjax.data.tasks.register, named 'module:attribute' for every "
                            "process of the run)")
    if not isinstance(task, Task):
        raise ValueError(f"TaskSpec.name: {name!r} is a {type(task).__name__}, not an rlvjax.data.tasks.Task")
    return task


def warm_start_pairs(spec, num: int, mistake_rate: float, seed: int) -> list[tuple[str, str, bool]]:
    """(prompt, completion, correct) examples whose completions are right with a controlled probability."""
    task = get(spec.name)
    if task.warm_start_pairs is None:
        raise ValueError(f"task {spec.name!r} has no generated solutions for a warm start; set "
                         "WarmStartConfig.num_steps = 0 and start from an instruction-tuned checkpoint")
    pairs = task.warm_start_pairs(spec, num, mistake_rate, seed)
    # a task's own generator: fewer examples than asked failed inside the warm start, in numpy's words, with the
    # workdir already written ("Cannot take a larger sample than population")
    shaped = isinstance(pairs, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 3 and isinstance(p[0], str) and isinstance(p[1], str)
        for p in pairs)
    if num and not (shaped and len(pairs) >= num):  # more is fine: the warm start draws from them
        got = f"{len(pairs)} examples" if shaped else f"a {type(pairs).__name__} that is not (prompt, completion, " \
            "correct) tuples"
        raise ValueError(f"task {spec.name!r} generated {got} for a warm start of WarmStartConfig.num_examples={num}; "
                         "its warm_start_pairs must return at least num (prompt, completion, correct) tuples")
    return pairs


def eval_records(spec, tokenizer) -> list[dict]:
    """The task's eval records, prompts rendered for the policy (what an evaluation of a trained run reads)."""
    task = get(spec.name)
    return task.records(spec, tokenizer)[1] if task.eval_records is None else task.eval_records(spec, tokenizer)


def _arithmetic_records(spec, tokenizer) -> Records:
    del tokenizer
    train = arithmetic.generate(spec.seed, spec.num_train, spec.levels, max_value=spec.max_value)
    validation = spec.eval_split == "validation"
    try:
        evals = arithmetic.eval_set(spec.num_eval * (2 if validation else 1), levels=spec.levels,
                                    max_value=spec.max_value)[-spec.num_eval:]
    except ValueError as e:  # "could not find 4 distinct eval problems" where 2 were asked for
        raise ValueError(f"{e}" + (f" (TaskSpec.eval_split='validation' takes the {spec.num_eval} problems after the "
                                   f"{spec.num_eval} test ones)" if validation else "")) from None
    return arithmetic.records(train), arithmetic.records(evals)


def _arithmetic_pairs(spec, num, mistake_rate, seed):
    return arithmetic.sft_examples(seed, num, mistake_rate, spec.levels, spec.max_value)


def _digit_records(spec, tokenizer) -> Records:
    del tokenizer
    return arithmetic.digit_records(spec.seed, spec.num_train), arithmetic.digit_records(spec.seed + 1, spec.num_eval)


def _digit_pairs(spec, num, mistake_rate, seed):
    """The boxed digit is the prompt's with probability 1 - mistake_rate, else another."""
    del spec
    rng = np.random.default_rng(seed)
    pairs = []
    for r in arithmetic.digit_records(seed, num):
        digit = int(r["gold"])
        if rng.random() < mistake_rate:
            digit = (digit + int(rng.integers(1, 10))) % 10
        pairs.append((r["prompt"], arithmetic.format_solution([], digit), str(digit) == r["gold"]))
    return pairs


def _file_records(spec, tokenizer) -> Records:
    if spec.train_file is None:
        raise ValueError("TaskSpec.name='file' needs TaskSpec.train_file (a jsonl/parquet path or datasets id)")
    train = sources.load_records(spec.train_file, name=spec.train_subset, on_bad_gold=spec.on_bad_gold,
                                 require_gold="math" in spec.rewards, name_knob="TaskSpec.train_subset",
                                 split_knob=None)[0]  # its "train" split
    return prompts.format_records(train, tokenizer, spec.prompt_format), _file_eval_records(spec, tokenizer)


def _file_eval_records(spec, tokenizer) -> list[dict]:
    # A datasets source's "train" split is the training data: evals read their own split (a file has none)
    evals = (sources.load_records(spec.eval_file, split=spec.eval_split, name=spec.eval_subset,
                                  on_bad_gold=spec.on_bad_gold, require_gold="math" in spec.rewards,
                                  split_knob="TaskSpec.eval_split", name_knob="TaskSpec.eval_subset")[0]
             if spec.eval_file else [])
    return prompts.format_records(first_eval_rows(evals, spec), tokenizer, spec.prompt_format)


def first_eval_rows(evals: list[dict], spec) -> list[dict]:
    """The first ``TaskSpec.num_eval`` rows of ``spec.eval_file``, said when that is fewer than it holds, so that a
    report on the first 200 of MATH-500 is never read as on all 500."""
    if len(evals) > spec.num_eval:
        logging.getLogger(__name__).warning(
            "%s: evaluating its first %d of %d problems (TaskSpec.num_eval = %d); set TaskSpec.num_eval = %d to "
            "evaluate them all", spec.eval_file, spec.num_eval, len(evals), spec.num_eval, len(evals))
    return evals[: spec.num_eval]


register("arithmetic", Task(_arithmetic_records, _arithmetic_pairs, generated=True))  # procedural, built in
register("digit", Task(_digit_records, _digit_pairs, generated=True))  # trivial, for tests
register("file", Task(_file_records, eval_records=_file_eval_records))  # records from a file or a datasets id
_OWN.update(_TASKS)
