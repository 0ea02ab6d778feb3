"""What a resumed run keeps from the checkpoint it continues, and the config it continues with."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import gin

from rlvjax import cli, experiment, outputs, parallel
from rlvjax.checkpoint import ARCHITECTURE_KEYS, Checkpointer, DamagedCheckpoint
from rlvjax.config import Config, written_values
from rlvjax.model.transformer import ModelConfig

# What a resume may change: how the run is logged, saved, evaluated, reported and laid out over devices, and where
# its base model and data files are (the training data's content is checked by its fingerprint), not what it trains
# (RunConfig.num_steps too, under a constant learning rate). Any other field that differs from the checkpoint's config
# is refused by name.
RESUME_FREE = {"run.log_every", "run.checkpoint_every", "run.max_to_keep", "run.eval_every", "run.eval_samples",
               "run.export_final", "run.final_eval_samples", "run.eval_temperature", "run.baseline",
               "run.compilation_cache_dir", "rl.micro_batch_size", "rl.remat", "rl.logprob_chunk_size",
               "model.hf_dir", "model.tokenizer_dir", "model.config_json", "task.train_file", "task.eval_file",
               "task.train_subset", "task.eval_subset", "task.num_eval", "task.eval_split",  # what is evaluated
               "mesh", "memory", "conventions",
               # what a run that diverged is resumed with (none shapes the optimizer state)
               "optim.learning_rate", "optim.max_grad_norm", "optim.max_consecutive_nonfinite"}


def resume_keys(config: Config) -> list[str]:
    """The config's fields (dotted paths) a resume must keep as the checkpoint has them, and its architecture."""
    free = RESUME_FREE | ({"run.num_steps"} if config.optim.schedule == "constant" else set())
    return [*ARCHITECTURE_KEYS, *(f"{section}.{field}" for section, fields in config.to_dict().items()
                                  if section not in free for field in fields if f"{section}.{field}" not in free)]


def changed_settings(before: dict | None, config: Config, workdir: Path) -> list[str]:
    """``"run.num_steps 6 -> 120"`` for each field a resume may change whose value differs from ``before`` (the
    config the run last accepted: ``config.json``'s values, or its checkpoint's), its data files where the run in
    ``workdir`` keeps them now (``outputs.moved_data``). Where the job runs (``parallel.LAUNCH_FIELDS``) is each
    launch's own, not a change. None (nothing stored to compare with): none."""
    if before is None:
        return []
    as_json = lambda c: json.loads(json.dumps(c.to_dict()))  # as config.json holds it: tuples as lists
    before, now, kept = as_json(outputs.moved_data(Path(workdir), before)), as_json(config), set(resume_keys(config))
    return [f"{section}.{field} {before[section][field]!r} -> {value!r}"
            for section, fields in now.items() if isinstance(fields, dict) for field, value in fields.items()
            if f"{section}.{field}" not in kept and field not in parallel.LAUNCH_FIELDS
            and (before.get(section) or {}).get(field, value) != value]


def check_steps_kept(config: Config, workdir, gin_params) -> None:
    """A ``--resume --gin_file`` continues to the file's ``num_steps`` only where a ``--gin_param`` says so: a command
    repeated without its ``RunConfig.num_steps`` flag trained a finished 6-step run on to the file's 120, its last
    checkpoints deleted by ``max_to_keep`` and its report and export replaced. The run's setting is its
    ``config.json``'s (written as it starts; a run without one is left to the resume's own checks): no checkpoint
    is opened here, before a multi-host job's processes have joined."""
    stored = written_values(workdir) or {}
    kept, wanted = (stored.get("run") or {}).get("num_steps"), config.run.num_steps
    if kept in (None, wanted) or any(re.search(r"(^|[\s./])RunConfig\.num_steps\s*=", b, re.M) for b in gin_params):
        return
    constant = (stored.get("optim") or {}).get("schedule", "constant") == "constant"  # else no other num_steps resumes
    other = f", or --gin_param 'RunConfig.num_steps = {wanted}' to train it to that step" if constant else ""
    raise ValueError(f"--resume: the --gin_file sets RunConfig.num_steps = {wanted}, the run in {workdir} was set to "
                     f"{kept}; pass --gin_param 'RunConfig.num_steps = {kept}' to continue it as it was{other}")


def config_defaults() -> dict:
    """Every config field's default, as stored with a checkpoint: what a field that an older rlvjax did not store
    meant (a new field's default keeps the old behaviour), so that upgrading rlvjax does not strand a run."""
    architecture = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}
    return {**Config.from_dict({}).to_dict(), "architecture": architecture}


def stored_config(workdir: Path, step: int | None) -> Config:
    """The config a run continues with: the one saved with checkpoint ``step``; without a step, the last one the run
    accepted, its ``config.json`` (written once a checkpoint has accepted it, so that a ``--resume --gin_param``
    change holds though no checkpoint was saved after it), else the newest checkpoint's whose config reads back (as
    the resume itself skips damaged steps), else the ``config.gin`` it wrote when it started.

    Where its job ran is left to the launch that continues it (its flags or environment): a run launched with the
    ``MeshConfig`` coordinator bindings, resumed in one process, waited to join its old job and aborted."""
    saved = _saved_config(workdir, step)
    return dataclasses.replace(saved, mesh=dataclasses.replace(saved.mesh, **dict.fromkeys(parallel.LAUNCH_FIELDS)))


def _saved_config(workdir: Path, step: int | None) -> Config:
    if step is None and (accepted := written_values(workdir)) is not None:
        return outputs.moved_data(workdir, accepted)
    if (workdir / "checkpoints").is_dir():
        with Checkpointer(workdir / "checkpoints", read_only=True) as checkpoints:
            saved = checkpoints.all_steps()
            for candidate in [step] if step is not None else sorted(saved, reverse=True):
                try:
                    return outputs.moved_data(workdir, checkpoints.read_config(candidate))
                except DamagedCheckpoint:
                    if step is not None or candidate == min(saved):
                        raise
    if step is None and (workdir / "config.gin").is_file():
        cli.parse_gin([str(workdir / "config.gin")], [], search_paths=(experiment.GIN_SEARCH_PATH,))
        try:
            return Config.from_gin()
        finally:  # parsing locked gin's config: the caller parses this one again, with its own flags on top
            gin.clear_config()
    if step is not None:
        raise FileNotFoundError(f"no checkpoint for step {step}: {workdir} holds no checkpoints; check --workdir")
    raise FileNotFoundError(f"--resume continues a run with its own config, but {workdir} holds no checkpoint or "
                            "config.gin; check --workdir, or pass the run's --gin_file/--gin_param")
