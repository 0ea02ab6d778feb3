"""A run's configuration as one frozen value: :class:`Config`, one section per concern.

Each section is a plain frozen dataclass that lives beside the code it configures and checks its own fields' types
and ranges when built; :class:`Config` adds the rules that span sections. Nothing here runs JAX, so a config can be
built and checked before ``jax.distributed.initialize``. gin builds it at the command line only
(:meth:`Config.from_gin`; the sections are registered with gin here, under their class names); the Python API builds
it directly; ``train(config, workdir)`` takes it. A variant is ``dataclasses.replace``.

Every run writes its config as ``config.json`` (:meth:`Config.to_dict`) and ``config.gin`` (:meth:`Config.to_gin`,
which ``python -m rlvjax.train --gin_file config.gin`` reads back to the same value).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from pathlib import Path

import gin

from rlvjax import atomic
from rlvjax.experiment import ModelSpec, RunConfig, TaskSpec
from rlvjax.budget import MemoryConfig
from rlvjax.data import sources
from rlvjax.rl import advantages as advantages_lib
from rlvjax.parallel import MeshConfig
from rlvjax.rl.config import OptimConfig, RLConfig
from rlvjax.rl.verifier import VerifierConfig
from rlvjax.sft import WarmStartConfig
from rlvjax.testtime import Conventions

# Beside a run's config values (config.json, each checkpoint's): the workdir the run was in when it wrote them.
WRITTEN_IN = "workdir"
# Section name in Config -> its dataclass (also its gin name), in the order config files list them.
SECTIONS: dict[str, type] = {"model": ModelSpec, "task": TaskSpec, "warm_start": WarmStartConfig, "rl": RLConfig,
                             "verifier": VerifierConfig, "optim": OptimConfig, "run": RunConfig, "mesh": MeshConfig,
                             "memory": MemoryConfig, "conventions": Conventions}
for _section in SECTIONS.values():  # gin knows each section by its class name; the classes themselves stay plain
    gin.external_configurable(_section, name=_section.__name__)
# each field's name -> the sections that have it (``cli.parse_gin``'s hints for a misspelt binding)
GIN_FIELDS: dict[str, list[str]] = {}
for _section in SECTIONS.values():
    for _field in dataclasses.fields(_section):
        GIN_FIELDS.setdefault(_field.name, []).append(_section.__name__)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run is made of (docs/config.md lists every field)."""

    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    task: TaskSpec = dataclasses.field(default_factory=TaskSpec)
    warm_start: WarmStartConfig = dataclasses.field(default_factory=WarmStartConfig)
    rl: RLConfig = dataclasses.field(default_factory=RLConfig)
    verifier: VerifierConfig = dataclasses.field(default_factory=VerifierConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    memory: MemoryConfig = dataclasses.field(default_factory=MemoryConfig)
    conventions: Conventions = dataclasses.field(default_factory=Conventions)

    def __post_init__(self):
        for name, section in SECTIONS.items():
            if not isinstance(getattr(self, name), section):
                raise ValueError(f"Config.{name} must be a {section.__name__}, not a "
                                 f"{type(getattr(self, name)).__name__}")
        run, rl = self.run, self.rl
        rows = run.batch_size * rl.group_size
        minibatch = rows // rl.num_minibatches if rows % rl.num_minibatches == 0 else None
        if minibatch is None:
            raise ValueError(f"{rows} rollouts per step (batch_size {run.batch_size} x group_size {rl.group_size}) "
                             f"do not split into RLConfig.num_minibatches={rl.num_minibatches}; pick a divisor")
        minibatch *= rl.update_rows_per_rollout  # each rollout's partial-solution verify rows come along
        if rl.micro_batch_size and minibatch % rl.micro_batch_size:
            raise ValueError(f"minibatch of {minibatch} training rows is not a multiple of RLConfig.micro_batch_size="
                             f"{rl.micro_batch_size}; pick a divisor (0: no accumulation)")
        # VinePPO's, or any estimator registered with step_values=True: the Monte-Carlo values come from the loop
        step_values = advantages_lib.uses_step_values(rl.algorithm)
        if step_values and self.task.rewards != ("math",):
            raise ValueError(f"RLConfig.algorithm={rl.algorithm!r} grades its Monte-Carlo continuations with the "
                             f"built-in math reward; TaskSpec.rewards={self.task.rewards} is not supported with it "
                             "yet; use grpo, dr_grpo or rloo")
        if step_values and self.task.reward_weights not in (None, (1.0,)):
            raise ValueError(f"RLConfig.algorithm={rl.algorithm!r} values step prefixes by the math reward's 0/1 "
                             f"grade, so a rollout's reward must be on that scale; TaskSpec.reward_weights="
                             f"{self.task.reward_weights} would mix scales: leave it None")

    def check_consistent(self) -> None:
        """Refuses a setting that another one makes void, where a run trained or reported on something other than
        its config says, without a word (review, 2026-12-06): data fields under a task that generates its problems
        (it trained on arithmetic), a tokenizer beside an HF model's own, a verifier threshold the math reward's 0
        or 1 never straddles (every rollout labelled Yes: pass@1 1.0 for a policy always wrong), a report without
        the export it evaluates, a lambda = 0 baseline of a lambda = 0 run (the same run twice). Checked when a run
        starts (``train`` before its first checkpoint, ``--dry_run``), not on a resume: an older run stays
        resumable."""
        from rlvjax.data import tasks

        task, run, rl, threshold = self.task, self.run, self.rl, self.verifier.threshold
        if tasks.get(task.name).generated:
            given = [name for name in ("train_file", "eval_file", "train_subset", "eval_subset")
                     if getattr(task, name) is not None]
            if given:
                raise ValueError(f"TaskSpec.{given[0]}={getattr(task, given[0])!r} is not read by the {task.name!r} "
                                 "task, which generates its problems; set TaskSpec.name = 'file' to train on it, or "
                                 "drop it")
            if task.prompt_format == "chat":
                raise ValueError(f"TaskSpec.prompt_format='chat' is not applied by the {task.name!r} task, whose "
                                 "prompts are its own, used verbatim; leave it 'math' (the default), or set "
                                 "TaskSpec.name = 'file'")
        if self.model.hf_dir is not None and self.model.tokenizer_dir is not None:
            raise ValueError("ModelSpec.tokenizer_dir is a random model's; the model in ModelSpec.hf_dir uses its own "
                             "tokenizer: drop tokenizer_dir")
        label = self.verifier.label_reward
        by_math = label == "math" and "math" in task.rewards or \
            label == "" and task.rewards == ("math",) and task.reward_weights in (None, (1.0,))
        if by_math and not 0 < threshold <= 1:
            raise ValueError(f"VerifierConfig.threshold={threshold:g} labels every rollout "
                             f"{'Yes' if threshold <= 0 else 'No'}: the math reward is 0 or 1; use a threshold in "
                             "(0, 1], e.g. 0.5")
        if run.final_eval_samples and not run.export_final:
            raise ValueError(f"RunConfig.final_eval_samples={run.final_eval_samples} asks for the end-of-run report, "
                             "which evaluates the exported final/ that RunConfig.export_final = False does not "
                             "write; set export_final = True, or final_eval_samples = 0 for no report")
        if run.baseline and rl.lambda_verify == 0:
            raise ValueError("RunConfig.baseline trains a lambda = 0 baseline beside this run, whose "
                             "RLConfig.lambda_verify is 0 already: the same run twice; set RunConfig.baseline = False")
        if run.baseline:  # its config differs (no partial-solution rows at lambda = 0): it failed after the main run
            try:
                self.lambda0_baseline("<the warm start's export>" if self.warm_start.num_steps else None
                                      ).check_consistent()
            except ValueError as e:
                raise ValueError(f"the lambda = 0 baseline (RunConfig.baseline = True) would not run: {e}") from None

    def precision_settings(self) -> tuple:
        """What ``check_precision`` reads: a resume that changes any of them is checked again."""
        return (self.model.dtype, self.model.compute_dtype, self.optim.learning_rate, self.optim.schedule,
                self.warm_start.learning_rate, self.warm_start.num_steps)

    def check_precision(self) -> None:
        """Refuses precisions that would not train: float16 weights (AdamW's eps is 0 in float16, so a finite
        gradient gave a NaN update), float16 compute (no loss scaling: the per-token gradients of a loss averaged
        over tens of thousands of tokens fall below float16's range, 40% of them exactly 0 at a million tokens), or
        bfloat16 weights under a learning rate that falls below half bfloat16's spacing around a weight anywhere
        after its warm-up (an AdamW step is about the learning rate: at 1e-6 one update moved 2% of a model's
        weights, 99% in float32; a cosine schedule's 10% floor counts). Checked when a run starts (``train`` before
        its first checkpoint, ``--dry_run``) and on a resume that changes ``precision_settings``, not on one that
        keeps them or when a stored config is read: a run an older rlvjax accepted stays resumable."""
        from rlvjax import sft

        if self.model.dtype == "float16":
            raise ValueError("ModelSpec.dtype='float16' would keep the weights and AdamW's moments in float16, where "
                             "the optimizer's update overflows and the weights turn NaN; use dtype='float32' with "
                             "compute_dtype='bfloat16'")
        if (self.model.compute_dtype or self.model.dtype) == "float16":
            raise ValueError("ModelSpec.compute_dtype='float16' trains without loss scaling, which rlvjax does not do: "
                             "the loss's per-token gradients underflow float16; use compute_dtype='bfloat16', or "
                             "'float32' where the hardware has no bfloat16")
        if self.model.dtype != "bfloat16":
            return
        typical = 0.02  # a pretrained LLM's typical |weight| (and HF's initializer_range)
        spacing = 2.0 ** (math.floor(math.log2(typical)) - 7)  # bfloat16's, between 2**-6 and 2**-5
        rates = [("OptimConfig.learning_rate", self.optim.learning_rate, self.optim.lowest_rate, self.optim.schedule)]
        if self.warm_start.num_steps:
            rate = self.warm_start.learning_rate
            rates.append(("WarmStartConfig.learning_rate", rate, rate * sft.COSINE_FLOOR, "cosine"))
        for name, rate, lowest, schedule in rates:
            if lowest < spacing / 2:
                decays = f" (its {schedule} schedule decays to {lowest:.1e})" if lowest < rate else ""
                raise ValueError(f"ModelSpec.dtype='bfloat16' keeps the weights in bfloat16, whose spacing around a "
                                 f"typical weight ({typical}) is {spacing:.1e}: an update of {name}={rate:g}{decays} "
                                 "rounds away and most weights never change; keep dtype='float32' with compute_dtype="
                                 f"'bfloat16' (float32 weights, bfloat16 matmuls), or raise it so that it stays >= "
                                 f"{spacing / 2:.1e}")

    def absolute_paths(self) -> Config:
        """This config with its local model, tokenizer and data paths made absolute (a hub id, or a path that is not
        here, as given), as a run writes them: its resume, export and evaluate then read them from any directory
        (relative ones were read from the directory of each command, and failed outside the one it was launched in).
        """
        def absolute(section, fields):
            return dataclasses.replace(section, **{name: sources.absolute(getattr(section, name)) for name in fields
                                                   if getattr(section, name) is not None})

        return dataclasses.replace(self, model=absolute(self.model, ("hf_dir", "tokenizer_dir", "config_json")),
                                   task=absolute(self.task, ("train_file", "eval_file")))

    @classmethod
    def from_gin(cls) -> Config:
        """Each section built from the parsed gin bindings (``Section.field = value``); the CLI's only use of
        gin. A field bound without its section (``lambda_verify = 0.0``) is refused: gin reads it as a macro, which
        binds nothing, and the run went on with the old value. (A macro of another name may go unused: a file's
        ``G = 8`` whose one use a ``--gin_param`` overrides.)"""
        text = gin.config_str()  # its "Macros" list them as `name = value`; a use reads `%name`
        used = set(re.findall(r"%(\w+)", text))
        for name in re.findall(r"^(\w+) = ", text, re.M):
            owners = [s.__name__ for s in SECTIONS.values() if name in {f.name for f in dataclasses.fields(s)}]
            if owners and name not in used:
                raise ValueError(f"gin binding `{name} = ...` binds no config field (gin reads it as a macro that "
                                 f"nothing uses); write it as {' or '.join(f'{o}.{name}' for o in owners)}")
        return cls(**{name: section(**gin.get_bindings(section.__name__)) for name, section in SECTIONS.items()})

    def to_dict(self) -> dict:
        """JSON-ready: ``{section: {field: value}}`` (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def settings(self) -> dict:
        """Every field by its gin name, ``{"RunConfig.num_steps": value, ...}`` (JSON-ready)."""
        return {f"{SECTIONS[name].__name__}.{field}": value
                for name, section in self.to_dict().items() for field, value in section.items()}

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """The inverse of :meth:`to_dict`; a section or field missing from ``values`` takes its default (configs
        written before it existed)."""
        return cls(**{name: section_from_dict(section, values.get(name, {})) for name, section in SECTIONS.items()})

    def to_gin(self) -> str:
        """gin bindings of every field: ``--gin_file`` of this text builds this same value."""
        lines = ["# The resolved configuration of a run: python -m rlvjax.train --gin_file config.gin reproduces it."]
        for name, section in SECTIONS.items():
            lines.append("")
            lines += [f"{section.__name__}.{f.name} = {getattr(getattr(self, name), f.name)!r}"
                      for f in dataclasses.fields(section)]
        return "\n".join(lines) + "\n"

    def write(self, workdir) -> None:
        """``config.json`` (:meth:`to_dict`, and ``WRITTEN_IN``: where the run is) and ``config.gin``
        (:meth:`to_gin`) in ``workdir``, each replaced whole."""
        values = {**self.to_dict(), WRITTEN_IN: str(Path(workdir).absolute())}
        for name, text in (("config.json", json.dumps(values, indent=2) + "\n"), ("config.gin", self.to_gin())):
            atomic.write_text(Path(workdir) / name, text)

    @staticmethod
    def written(workdir) -> Config | None:
        """The config a run last wrote to ``workdir/config.json``; None where there is none or the file is not a
        run's (another tool's ``config.json``)."""
        values = written_values(workdir)
        return None if values is None else Config.from_dict(values)

    @staticmethod
    def check_workdir(workdir) -> None:
        """Refuses, before anything is written, a workdir whose ``config.json`` / ``config.gin`` a run would replace
        but did not write: an HF model's config, a project's own files (``--workdir .``)."""
        json_path, gin_path = Path(workdir) / "config.json", Path(workdir) / "config.gin"
        checkpoints = Path(workdir) / "checkpoints"
        saved = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())  # a run's own files
        if json_path.exists():
            if _run_values(json_path) is None:
                raise FileExistsError(f"{json_path} is not a training run's config, " + (
                    f"though {checkpoints} holds saved steps (each with the run's config): move the file away, then "
                    "rerun with --resume" if saved else  # damaged by hand
                    "and a run would replace it; choose a new or empty --workdir"))
        elif gin_path.exists() and not saved:  # a run writes config.json first, then config.gin
            raise FileExistsError(f"{gin_path} is not a training run's (no config.json beside it), and a run would "
                                  "replace it; keep gin files outside the workdir, or choose a new or empty --workdir")

    def lambda0_baseline(self, warm_start_dir: str | None) -> Config:
        """The paper's baseline: the same run with lambda_verify = 0, from the same warm start (its exported
        directory, not a second warm start) when there is one. It has no baseline of its own, so that resuming its
        workdir directly does not train one."""
        config = dataclasses.replace(self, rl=dataclasses.replace(self.rl, lambda_verify=0.0),
                                     run=dataclasses.replace(self.run, baseline=False))
        if warm_start_dir is None:
            return config
        # the export holds its tokenizer: a random model's tokenizer_dir beside it was refused, after the main run
        return dataclasses.replace(config, model=dataclasses.replace(self.model, hf_dir=warm_start_dir,
                                                                     tokenizer_dir=None),
                                   warm_start=dataclasses.replace(self.warm_start, num_steps=0))


def section_from_dict(section: type, values: dict):
    """A section from its JSON form: lists back to tuples where the field is a tuple; keys it no longer has are
    ignored."""
    hints = typing.get_type_hints(section)
    fields = {f.name for f in dataclasses.fields(section)}
    return section(**{k: tuple(v) if isinstance(v, list) and _is_tuple(hints[k]) else v
                      for k, v in values.items() if k in fields})


def _is_tuple(kind) -> bool:
    return typing.get_origin(kind) is tuple or any(typing.get_origin(k) is tuple for k in typing.get_args(kind))


def check_local(workdir, flag: str = "--workdir") -> None:
    """Refuses a URL (Path() made gs://b/run a local ./gs:/b/run, which trained until its first checkpoint save
    failed) and a path through a dangling symbolic link (creating it failed with "File exists": for evaluate's
    --out only once the pool was sampled)."""
    if "://" in str(workdir):
        raise ValueError(f"{flag} {workdir} is a URL; runs are written to a local or mounted filesystem (a bucket: "
                         "mount it, e.g. with gcsfuse, and pass the mount's path)")
    path = Path(os.path.expanduser(workdir)).absolute()
    for link in (path, *path.parents):
        try:
            dangling = link.is_symlink() and not link.exists()  # exists() follows it: a missing target, or a loop
        except OSError:  # a name too long: refused where the path is used
            continue
        if dangling:
            raise ValueError(f"{flag} {workdir}: {link} is a symbolic link to {os.readlink(link)}, which does not "
                             "exist (or loops back); create its target, or pass another path")


def written_values(workdir) -> dict | None:
    """``workdir/config.json``'s values as the run wrote them (:meth:`Config.write`), or None."""
    return _run_values(Path(workdir) / "config.json")


def _run_values(path: Path) -> dict | None:
    """A ``config.json``'s values where they are a training run's (its model, rl and run sections, as every version
    wrote them), else None: unreadable, or another tool's."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(values, dict) and all(isinstance(values.get(k), dict) for k in ("model", "rl", "run")):
        return values
    return None
