"""``RLVConfig``: the Python API's training arguments (``RLVTrainer``'s ``args``), as TRL keeps ``GRPOConfig`` beside
its trainer: the fields a run is usually tuned by, each mapped onto the one :class:`rlvjax.config.Config`, and TRL's
names for them refused in one line naming rlvjax's."""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Sequence

from rlvjax.config import Config, check_local
from rlvjax.fieldtypes import check_field_types

# RLVConfig field -> (Config section, field); None on an RLVConfig field keeps the base config's value.
FIELDS = {"algorithm": ("rl", "algorithm"), "lambda_verify": ("rl", "lambda_verify"),
          "group_size": ("rl", "group_size"), "max_new_tokens": ("rl", "max_new_tokens"),
          "temperature": ("rl", "temperature"), "num_steps": ("run", "num_steps"), "batch_size": ("run", "batch_size"),
          "seed": ("run", "seed"), "learning_rate": ("optim", "learning_rate"),
          "verify_question": ("verifier", "question"), "verify_threshold": ("verifier", "threshold"),
          "verify_label_reward": ("verifier", "label_reward"),
          "reward_weights": ("task", "reward_weights"), "prompt_format": ("task", "prompt_format")}
# TRL's GRPOConfig arguments a user brings along, and where rlvjax keeps each (a bare TypeError named neither).
TRL_NAMES = {
    "num_generations": "group_size",
    "max_completion_length": "max_new_tokens",
    "max_steps": "num_steps (RL steps)", "num_train_epochs": "num_steps (RL steps)",
    "per_device_train_batch_size": "batch_size (prompts per step, not completions: TRL's per-device completions x "
                                   "devices / num_generations)",
    "beta": "config=Config(rl=RLConfig(beta=...)) (added per token; TRL's too)",
    "num_iterations": "config=Config(rl=RLConfig(num_ppo_epochs=...))",
    "epsilon": "config=Config(rl=RLConfig(eps_low=..., eps_high=...))",
    "epsilon_high": "config=Config(rl=RLConfig(eps_high=...))",
    "loss_type": "config=Config(rl=RLConfig(algorithm='dr_grpo' or aggregation=...))",
    "top_p": "config=Config(rl=RLConfig(top_p=...))", "top_k": "config=Config(rl=RLConfig(top_k=...))",
    "gradient_accumulation_steps": "config=Config(rl=RLConfig(micro_batch_size=...)) (rows per accumulation step)",
    "max_prompt_length": "config=Config(task=TaskSpec(max_prompt_tokens=...))",
    "logging_steps": "config=Config(run=RunConfig(log_every=...))",
    "save_steps": "config=Config(run=RunConfig(checkpoint_every=...))",
    "warmup_steps": "config=Config(optim=OptimConfig(warmup_steps=...))",
    "weight_decay": "config=Config(optim=OptimConfig(weight_decay=...))",
    "max_grad_norm": "config=Config(optim=OptimConfig(max_grad_norm=...))",
    "bf16": "config=Config(model=ModelSpec(compute_dtype='bfloat16'))",
}
# The fields an evaluation of a trained run follows: set on another trainer's args, they must agree with the run's.
EVAL_FIELDS = ("max_new_tokens", "temperature", "verify_question", "verify_threshold", "verify_label_reward",
               "reward_weights")


@dataclasses.dataclass(frozen=True)
class RLVConfig:
    """Training arguments. Each field left None keeps ``config``'s value (``Config()``'s defaults unless given);
    ``config`` holds every other knob (docs/config.md). ``prompt_format`` is never None: the API renders prompts
    TRL's way ("as_is") unless it says "math" or "chat", whatever ``config.task.prompt_format`` holds."""

    output_dir: str
    algorithm: str | None = None  # "grpo", "dr_grpo", "rloo", "vineppo"
    lambda_verify: float | None = None  # weight of the verification loss; 0 is plain RL
    group_size: int | None = None  # samples per prompt
    num_steps: int | None = None
    batch_size: int | None = None  # prompts per step
    learning_rate: float | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    verify_question: str | None = None  # asked after each solution; the model answers Yes or No
    verify_threshold: float | None = None  # a rollout is labelled Yes when its reward is >= this
    verify_label_reward: str | None = None  # the reward that labels rollouts (VerifierConfig.label_reward)
    reward_weights: tuple[float, ...] | None = None  # one per reward function (None: 1 each)
    prompt_format: str = "as_is"  # TRL's: a string prompt verbatim, chat messages through the chat template
    config: Config = dataclasses.field(default_factory=Config)

    def __new__(cls, *args, **kwargs):
        trl = [name for name in kwargs if name in TRL_NAMES]
        if trl:
            raise TypeError("RLVConfig has no " + "; no ".join(f"{name}: use {TRL_NAMES[name]}" for name in trl)
                            + " (docs/config.md lists every knob)")
        return super().__new__(cls)

    def __post_init__(self):
        if isinstance(self.output_dir, os.PathLike):  # a Path, as save_model and the datasets take
            object.__setattr__(self, "output_dir", os.fspath(self.output_dir))
        if isinstance(self.reward_weights, list):  # as TRL's GRPOConfig takes them
            object.__setattr__(self, "reward_weights", tuple(self.reward_weights))
        check_field_types(self)
        if not str(self.output_dir).strip():  # "" would train into the working directory
            raise ValueError("RLVConfig.output_dir is empty; name the run's directory, e.g. output_dir='runs/mine'")
        check_local(self.output_dir, "RLVConfig.output_dir")
        if not isinstance(self.config, Config):
            raise ValueError(f"RLVConfig.config must be an rlvjax.config.Config, not a {type(self.config).__name__}")

    def to_config(self, model: str | None, reward_names: Sequence[str]) -> Config:
        """The run's :class:`Config`: ``config`` with this object's fields, the model and the rewards."""
        changes = {"model": {} if model is None else {"hf_dir": model}, "task": {"rewards": tuple(reward_names)}}
        for field, (section, key) in FIELDS.items():
            if getattr(self, field) is not None:
                changes.setdefault(section, {})[key] = getattr(self, field)
        # one replace a section, checked as a whole: grpo with group_size=4 over a base of vineppo with 1 is valid
        return dataclasses.replace(self.config, **{section: dataclasses.replace(getattr(self.config, section), **kw)
                                                   for section, kw in changes.items()})


# help(), IDEs and notebook tooltips read a class's signature from a __new__ of its own: the fields', not (*args, **kw)
_FIELDS_SIGNATURE = inspect.signature(RLVConfig.__init__)
RLVConfig.__signature__ = _FIELDS_SIGNATURE.replace(parameters=list(_FIELDS_SIGNATURE.parameters.values())[1:])
