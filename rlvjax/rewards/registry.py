"""Reward functions by name, with TRL's contract: ``f(prompts, completions, **columns) -> list[float]``.

A function that names a ``completions`` parameter is called with keywords, as TRL calls it (TRL's own
``accuracy_reward(completions, solution, **kwargs)`` works unchanged, ``trainer_state`` and ``async def`` ones
too); any other gets ``prompts`` and
``completions`` as its first two positional arguments. Both have one entry per sampled completion (a prompt repeats
for each of its samples). They are texts, except on conversational data (every row's prompt chat messages), where
they take TRL's conversational form: each prompt its messages and each completion
``[{"role": "assistant", "content": text}]`` (the built-in ``math`` reward reads the texts either way). Every
other column of the dataset arrives as a keyword list aligned with them (``gold``, ``level``, ``id`` and whatever
the user's data holds). A function may return None for a completion it does not apply to (TRL's multi-task
convention): it adds nothing to that completion's reward. A config names rewards (``TaskSpec.rewards``): a
registered name (``"math"``) or ``"module:function"``, imported on use, so the config a run writes reproduces it
from the command line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import inspect
import logging
import numbers
from typing import Callable, NamedTuple, Sequence

import numpy as np

from rlvjax import importing
from rlvjax.cli import UserCodeFailed
from rlvjax.rewards.answers import MAX_ANSWER_CHARS, as_answer, extract_answer

MESSAGES = "prompt_messages"  # a record's chat-message prompt, kept beside its rendered text (``format_records``)

RewardFn = Callable[..., Sequence[float]]
_REGISTRY: dict[str, RewardFn] = {}
_OWN: set[str] = set()  # rlvjax's names, filled after its own registrations below


def register(name: str):
    """Decorator: ``@register("name")`` makes ``f`` available as ``TaskSpec.rewards = ("name",)``."""

    def wrap(fn: RewardFn) -> RewardFn:
        importing.check_replaceable("reward", name, _OWN)
        _REGISTRY[name] = fn
        return fn

    return wrap


@register("math")
def math_reward(prompts, completions, gold, **columns) -> list[float]:
    """1.0 when the completion's final answer (its last ``\\boxed{}`` and the boxes listed with it:
    ``answers.extract_answer``) is mathematically equivalent to ``gold``."""
    from rlvjax.rewards.math import grade_completions

    del prompts, columns
    return grade_completions(list(completions), list(gold))[0].astype(float).tolist()


_OWN.update(_REGISTRY)


def name_of(fn: RewardFn) -> str | None:
    """The name a config can hold for ``fn``: its registered name, else ``module:qualname`` when importable from
    another process; None for a lambda, a nested function, a bound method or one defined in ``__main__``."""
    for name, registered in _REGISTRY.items():
        if registered is fn:
            return name
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or not qualname or module == "__main__" or "<" in qualname:  # partials, lambdas, notebooks
        return None
    if inspect.ismethod(fn):  # its name resolves to the unbound function, which lacks ``self``
        return None
    return f"{module}:{qualname}"


def known_only_here(name: str) -> str | None:
    """The module that registered ``name`` when it is not rlvjax's own: a new process (``--resume``, ``evaluate
    --workdir``) knows the name only once that module is imported. None for rlvjax's names and ``module:function``."""
    return importing.registered_by(_OWN, name, _REGISTRY.get(name))


def resolve(name: str, knob: str = "TaskSpec.rewards") -> RewardFn:
    """The reward function a registered name or "module:function" names (``knob``: where it was given)."""
    fn = importing.lookup(_REGISTRY, name, knob, f"{knob}: unknown reward {name!r}; use one of {sorted(_REGISTRY)} "
                          "or 'module:function' (importable from the working directory or PYTHONPATH)")
    if not callable(fn):
        raise ValueError(f"{knob}: {name!r} is not a function")
    return fn


def label_index(names: Sequence[str], label: str) -> int | None:
    """Which of ``names`` (``TaskSpec.rewards``) the reward ``label`` (``VerifierConfig.label_reward``) is: one
    named so, or the one whose "module:function" name ends in it ("accuracy" names "my_rewards:accuracy"); None for
    "" (the weighted sum)."""
    if not label:
        return None
    found = [i for i, n in enumerate(names) if n == label] or \
        [i for i, n in enumerate(names) if n.rpartition(":")[2].rpartition(".")[2] == label]
    if len(found) != 1:
        raise ValueError(f"VerifierConfig.label_reward={label!r} names {'none' if not found else 'several'} of "
                         f"TaskSpec.rewards {tuple(names)}; name the one that says whether an answer is right, or "
                         "leave it empty to label by the weighted sum")
    return found[0]


class Graded(NamedTuple):
    """What grading a batch of completions gives: ``rewards`` float32[n], the weighted sum the advantages are
    computed from; ``correct`` bool[n], the verifier's label (``VerifierConfig``) and what accuracy counts."""

    rewards: np.ndarray
    correct: np.ndarray

    def truncated_as(self, finished: np.ndarray, reward: float | None) -> "Graded":
        """``RLConfig.truncated_reward``: each completion cut off at ``max_new_tokens`` (``finished`` False) gets
        ``reward`` and the label 'No' whatever its text says, as VinePPO scores an unfinished response; None: as
        graded, on its text."""
        if reward is None:
            return self
        finished = np.asarray(finished, bool).reshape(self.correct.shape)
        return Graded(np.where(finished, self.rewards, reward).astype(self.rewards.dtype), self.correct & finished)


SAMPLED = ("prompts", "completions", "completion_ids", "trainer_state")  # what TRL passes a reward by keyword


@dataclasses.dataclass
class TrainerState:
    """What a reward function gets as ``trainer_state`` (TRL passes transformers' ``TrainerState``): the RL steps
    done so far and the run's, for a reward that changes over training (a curriculum, a penalty that ramps up)."""

    global_step: int = 0
    max_steps: int = 0


def _by_keyword(fn: RewardFn) -> bool:
    """Whether ``fn`` is called as TRL calls it, every argument by keyword: it names ``completions`` or
    ``completion_ids``, or takes no positional argument at all (``def f(**kwargs)``); else ``fn(prompts,
    completions, **columns)``."""
    params = inspect.signature(fn).parameters
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                            p.VAR_POSITIONAL)]
    return "completions" in params or "completion_ids" in params or not positional


def required_columns(fn: RewardFn) -> set[str]:
    """The dataset columns ``fn`` cannot run without: its parameters other than prompts, completions and
    completion_ids that have no default (a ``**columns`` catch-all requires nothing)."""
    params = list(inspect.signature(fn).parameters.values())
    params = [p for p in params if p.name not in SAMPLED] if _by_keyword(fn) else params[2:]
    return {p.name for p in params if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _call(fn: RewardFn, prompts: list[str], completions: list[str], columns: dict[str, list], completion_ids,
          state: TrainerState):
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    # every column for a function that takes **kwargs (as TRL passes them all), the ones it names otherwise: one
    # without **kwargs failed on a column rlvjax adds to every row (id, level) that its user never had
    columns = columns if takes_all else {k: v for k, v in columns.items() if k in params}
    if not _by_keyword(fn):
        return _awaited(fn(prompts, completions, **columns))
    given = dict(zip(SAMPLED, (prompts, completions, completion_ids, state)))  # as TRL passes them: every keyword
    return _awaited(fn(**{k: v for k, v in given.items() if (k in params or takes_all) and v is not None}, **columns))


def _awaited(values):
    """An ``async def`` reward's values (TRL awaits them): its coroutine run to the end in a thread of its own, so
    that a caller whose event loop is running (a notebook's) is not asked to run another."""
    if not inspect.iscoroutine(values):
        return values
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, values).result()


class Rewards:
    """The weighted sum of reward functions, checked: one finite number per completion from each, or a one-line
    :class:`rlvjax.cli.UserError` naming the function. A completion is correct where the reward named ``label``
    (``VerifierConfig.label_reward``; "": the weighted sum) is >= ``threshold`` (``VerifierConfig.threshold``)."""

    def __init__(self, names: Sequence[str], weights: Sequence[float] | None = None,
                 functions: Sequence[RewardFn] | None = None, *, label: str = "", threshold: float = 0.5):
        self.names = tuple(names)
        self.label, self.threshold = label_index(self.names, label), threshold
        self.state = TrainerState()  # the run's steps, for the functions that read trainer_state (``of`` sets them)
        self.functions = tuple(functions) if functions is not None else tuple(resolve(n) for n in self.names)
        self.weights = np.ones(len(self.names)) if weights is None else np.asarray(weights, np.float64)
        if not self.names:
            raise ValueError("TaskSpec.rewards is empty; name at least one reward function, e.g. ('math',)")
        if len(self.weights) != len(self.names):
            raise ValueError(f"TaskSpec.reward_weights has {len(self.weights)} weights for {len(self.names)} rewards "
                             f"{self.names}; give one weight per reward")
        if not np.isfinite(self.weights).all():
            raise ValueError(f"TaskSpec.reward_weights={tuple(self.weights.tolist())} must hold finite numbers only")

    @classmethod
    def of(cls, config, functions: Sequence[RewardFn] | None = None) -> "Rewards":
        """The rewards of a run's :class:`rlvjax.config.Config` (``functions``: the API's objects for its names), their
        ``trainer_state`` the run's, trained to its end (training sets each step's; an evaluation of a checkpoint
        or of the warm start sets its own: a reward reading it saw 0 of 0 steps in every evaluation)."""
        rewards = cls(config.task.rewards, config.task.reward_weights, functions, label=config.verifier.label_reward,
                      threshold=config.verifier.threshold)
        rewards.state = TrainerState(config.run.num_steps, config.run.num_steps)
        return rewards

    def warn_about_labels(self) -> None:
        """Warn when the verifier's label, Yes where the weighted sum of rewards is >= the threshold, may not mean
        "correct": several rewards (a format bonus can lift a wrong answer past it) or a weight other than 1 (a
        scaled correctness reward may never reach it). A run that names its ``label`` reward is not warned."""
        if self.label is not None or (len(self.names) == 1 and self.weights[0] == 1):
            return
        terms = " + ".join(f"{w:g} x {n}" for n, w in zip(self.names, self.weights))
        logging.getLogger(__name__).warning(
            "the verifier learns Yes where %s >= VerifierConfig.threshold = %g: a wrong answer whose other rewards "
            "reach it is labelled Yes, and a correct one below it No; name the reward that says whether an answer "
            "is right in VerifierConfig.label_reward, or set the threshold to the sum that means correct", terms,
            self.threshold)

    @property
    def states_math_answers(self) -> bool:
        """Whether the completions state math answers: the math reward is one of the rewards (alone, or with a format
        bonus or a length penalty), so the votes group their boxed answers as the grader compares them."""
        return any(fn is math_reward for fn in self.functions)

    def answer(self, completion: str) -> str | None:
        """What the votes group and best-of-N needs stated: the completion's final answer (its last ``\\boxed{}``);
        under rewards without the math one, where no box is, the whole completion, stripped (one longer than
        ``MAX_ANSWER_CHARS`` by its SHA-256, so that identical completions still vote together). None: no answer,
        as for a box the grader reads as none (``\\boxed{$$}``), which must not win a vote."""
        stated = extract_answer(completion)
        if stated is not None and as_answer(stated, stated=True) is None:
            stated = None
        if stated is not None or self.states_math_answers or not completion.strip():
            return stated
        text = completion.strip()
        return text if len(text) <= MAX_ANSWER_CHARS else "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def grouping(self, asked: str) -> str:
        """The answer grouping to vote with: ``asked`` (``Conventions.grouping``) where the math reward is one of the
        rewards; under others alone, "string" (whole completions are not expressions to compare with math-verify).
        Math grouping with a format bonus summed in too: it voted by exact strings, so "\\frac{1}{2}" and "0.5"
        split a vote (review 2026-12-07)."""
        return asked if self.states_math_answers else "string"

    def check_columns(self, records: list[dict], what: str) -> None:
        """One line naming a reward's required column that a row of ``records`` lacks (the first such row), or a
        column named as an argument every reward is passed (a reward "raised TypeError: got multiple values")."""
        taken = sorted({k for r in records for k in r} & set(SAMPLED))
        if taken:
            raise ValueError(f"the {what} data has column(s) {taken}, the name(s) of what every reward function is "
                             f"passed ({', '.join(SAMPLED)}); rename them")
        chat = [MESSAGES in r for r in records]
        users = [name for name, fn in zip(self.names, self.functions) if fn is not math_reward]
        if any(chat) and not all(chat) and users:  # it got messages in one batch and text in the next, and failed
            raise ValueError(f"the {what} data mixes chat-message prompts ({sum(chat)} of {len(chat)} rows, e.g. row "
                             f"{chat.index(True) + 1}) and text prompts (e.g. row {chat.index(False) + 1}); reward "
                             f"function(s) {', '.join(map(repr, users))} would get each batch's prompts and "
                             "completions as messages or as text, whichever its rows are (TRL decides from a batch's "
                             "first row): give every row one kind")
        for name, fn in zip(self.names, self.functions):
            required = required_columns(fn)
            for row, record in enumerate(records):
                missing = sorted(required - set(record))
                if missing:
                    raise ValueError(f"reward {name!r} needs column(s) {missing} that row {row + 1} of the {what} data "
                                     f"lacks (it has {sorted(record)}); add them to every row or change the reward")

    def probe(self, records: list[dict]) -> None:
        """Calls every function once on ``records`` with empty completions, two per prompt as a group holds them, so
        that a function that fails on every call (raises, wrong length, non-finite; one value per prompt, not per
        completion) is refused before a run writes anything."""
        records = [r for r in records[:2] for _ in range(2)]
        self([r["prompt"] for r in records], [""] * len(records), records, [[] for _ in records])

    def __call__(self, prompts: list[str], completions: list[str], records: list[dict],
                 completion_ids: list[list[int]] | None = None) -> Graded:
        """Each completion's reward and label: ``records[i]`` is completion i's dataset row (its columns go to each
        function as keyword lists); ``completion_ids[i]``, its sampled token ids, the stop token included (TRL's
        ``completion_ids``, for rewards that read tokens: the engine's callers pass them)."""
        keys = dict.fromkeys(k for r in records for k in r if k not in ("prompt", MESSAGES))  # rows differ
        columns = {k: [r.get(k) for r in records] for k in keys}
        if records and all(MESSAGES in r for r in records):  # TRL's conversational form
            chat = ([r[MESSAGES] for r in records], [[{"role": "assistant", "content": c}] for c in completions])
        else:
            chat = None
        total, rewarded = np.zeros(len(completions)), np.zeros(len(completions), bool)
        labelled = None
        for index, (name, fn, weight) in enumerate(zip(self.names, self.functions, self.weights)):
            try:
                values = _call(fn, *(chat if chat and fn is not math_reward else (prompts, completions)), columns,
                               completion_ids, self.state)
            except Exception as e:  # a user's function: its failure is bad input, said in one line
                raise UserCodeFailed(f"reward function {name!r} raised {type(e).__name__}: {e}; fix the function") \
                    from None
            try:
                items = np.asarray(values, dtype=object)
            except (TypeError, ValueError):
                items = np.asarray(None, dtype=object)
            bad = [v for v in items.ravel() if not isinstance(v, (numbers.Real, np.bool_)) and v is not None][:1]
            if items.ndim != 1 or bad:
                got = f"a {type(bad[0]).__name__} ({bad[0]!r:.40}) among its values" if items.ndim == 1 else \
                    f"{type(values).__name__} of shape {items.shape}"
                raise UserCodeFailed(f"reward function {name!r} returned {got}, not a flat list of numbers; return one "
                                "number per completion")
            try:
                values = np.asarray([0.0 if v is None else v for v in items], np.float64)
            except OverflowError:
                raise UserCodeFailed(f"reward function {name!r} returned a number too large for a float; return finite "
                                "numbers") from None
            if len(values) != len(completions):
                raise UserCodeFailed(f"reward function {name!r} returned {len(values)} values for {len(completions)} "
                                "completions; return one number per completion")
            if not np.isfinite(values).all():
                raise UserCodeFailed(f"reward function {name!r} returned a non-finite value "
                                f"({values[~np.isfinite(values)][0]}); return finite numbers (None where the reward "
                                "does not apply to a completion: it then adds nothing, as in TRL)")
            total += weight * values
            given = np.asarray([v is not None for v in items])
            if index == self.label:
                labelled, label_given = values, given
            rewarded |= given
        if not rewarded.all():  # as TRL warns: such a completion's reward is 0
            logging.getLogger(__name__).warning(
                "%d of %d completions got None from every reward function (%s); their reward is 0",
                int((~rewarded).sum()), len(completions), ", ".join(self.names))
        with np.errstate(over="ignore"):
            total = total.astype(np.float32)
        if not np.isfinite(total).all():  # finite rewards whose weighted sum is not a float32
            raise UserCodeFailed(f"the weighted reward is not finite ({total[~np.isfinite(total)][0]}: rewards "
                            f"{', '.join(self.names)} with weights {tuple(self.weights.tolist())}); keep rewards and "
                            "weights small enough that their sum is a float32 (below 3e38)")
        # a completion the label's reward (or every one) gave None is not correct, whatever 0 is to the threshold
        verdict, given = (total, rewarded) if labelled is None else (labelled, label_given)
        return Graded(total, (verdict >= self.threshold) & given)
