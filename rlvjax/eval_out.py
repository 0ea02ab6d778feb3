"""Where an evaluation is written (``evaluate --out``) and what its eval.json says it is about: never a training
run or a folder a run manages, never over another model's evaluation, only where it can be written."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rlvjax import outputs
from rlvjax.data import sources
from rlvjax.reports import REPORT_FILES


def evaluated(out: Path, model: Path, data: str | None, split: str | None = None, subset: str | None = None) -> dict:
    """What the evaluation written to ``out`` is about: the model (its path, also from ``out``, which a run moved
    or copied whole keeps; an exported directory's stamp, ``outputs.exports``: its export id and training step) and
    the problems (None: the run's own eval problems), with the ``split`` and the ``subset`` (config) read from a
    datasets source (a file has neither: they are None for it)."""
    hub = data is not None and not Path(data).expanduser().is_file()
    return {"model": str(model.absolute()), "model_from_out": os.path.relpath(model.absolute(), out.absolute()),
            "export": outputs.exports({"model": model})["model"],
            "data": None if data is None else sources.absolute(data), "data_split": split if hub else None,
            "data_subset": subset if hub else None}


def snapshot(model: Path) -> tuple:
    """What identifies the weights at ``model`` now: its export stamp and the folder itself (a re-export replaces
    ``final/``, a rollback retrains ``checkpoints/N`` in a new folder)."""
    try:
        folder = model.stat().st_ino
    except OSError:
        folder = None
    return outputs.exports({"model": model})["model"], folder


def check_unchanged(model: Path, loaded: tuple) -> None:
    """One line when other weights are at ``model`` than were loaded (``loaded``: its :func:`snapshot` then), or
    none: the report would name weights it did not evaluate. A checkpoint step deleted meanwhile (a step the run
    no longer keeps, ``RunConfig.max_to_keep``) names what was evaluated still; one set aside by a rollback
    (``checkpoints_set_aside/``, the same folder moved there) does not, nor does an export gone (a rollback sets
    ``final/`` aside too, and retrains it)."""
    now = snapshot(model)
    if now == loaded or now[1] is None and model.parent.name == "checkpoints" and not _set_aside(model, loaded[1]):
        return
    raise ValueError(f"{model} was " + ("replaced" if now[1] is not None else "set aside") + " while it was "
                     "evaluated (a training run re-exported it or went back past it); nothing was written: evaluate "
                     "it again")


def _set_aside(step: Path, folder: int | None) -> bool:
    """Whether checkpoint ``step``'s folder (inode ``folder``) was moved to the run's checkpoints_set_aside/."""
    aside = step.parent.parent / "checkpoints_set_aside"
    try:
        return any(entry.stat().st_ino == folder for entry in aside.iterdir())
    except OSError:
        return False


def check_same_model(out: Path, model: Path, data: str | None = None, split: str | None = None,
                     subset: str | None = None, *, by_export: bool = False) -> None:
    """One line when ``out`` holds the evaluation of another model or of other problems (its eval.json's
    ``evaluated``: another ``data`` file, or another ``split`` or ``subset`` of it), which this one would replace: a
    default ``--out`` is named after the model directory and the data file's stem alone. A model at another path is
    the same where it is where it was from ``out`` (a run moved or copied whole, its evaluations with it).
    ``by_export`` (``--model_dir``): an rlvjax export is another model once it was exported again into the same
    folder (another export id); a run's own ``final/`` (``--workdir``) is its current policy, re-exported as it
    trains on, whose earlier evaluation a new one replaces."""
    try:
        previous = json.loads((out / "eval.json").read_text(encoding="utf-8"))["evaluated"]
        model_before = previous["model"]
    except (OSError, ValueError, KeyError, TypeError):  # none there, or written before eval.json named its model
        return
    now = evaluated(out, model, data, split, subset)
    moved_with_it = previous.get("model_from_out") == now["model_from_out"]
    if Path(model_before).resolve() != model.resolve() and not moved_with_it:  # the same directory however spelt
        raise ValueError(f"{out} holds the evaluation of another model, {model_before}; pass --out to write this one "
                         "elsewhere")
    export_before, export_now = previous.get("export"), now["export"]
    if by_export and isinstance(export_before, dict) and export_now is not None and export_before.get(
            "export_id") != export_now["export_id"]:  # saved again since, into the same folder: other weights
        steps = (f" (step {export_before['step']}; it holds step {export_now['step']} now)"
                 if export_before.get("step") is not None and export_now["step"] is not None else "")
        raise ValueError(f"{out} holds the evaluation of an earlier export in {model}{steps}, which this one would "
                         f"replace; pass --out to keep both, or remove {out} to replace it")
    # a data file has no split or subset (an older report recorded --data_split's default for it); a report written
    # before the split was recorded is compared by the keys it has
    keys = ("data", "data_split", "data_subset") if now["data_split"] is not None else ("data",)
    for key in keys:
        if key in previous and previous[key] != now[key]:
            raise ValueError(f"{out} holds this model's evaluation on other problems ({key} {previous[key]!r}, now "
                             f"{now[key]!r}); pass --out to write this one elsewhere")


# evaluate's flags that do not change what is sampled or reported (where it is written, what it reads: compared by
# check_same_model, or named in the default --out), left out of eval.json's ``evaluated.settings``; the
# strategy's own flags are there as the rules they make
NOT_SETTINGS = ("workdir", "model_dir", "policy", "checkpoint", "data", "data_split", "data_subset", "out",
                "compilation_cache", "batch_size")


def eval_settings(*, num_samples: int, temperature: float, top_p: float, top_k: int, max_new_tokens: int, seed: int,
                  conventions, strategy: str, rules: list, reward: str | None = None, raw_prompts: bool = False,
                  dtype: str = "float32") -> dict:
    """eval.json's ``evaluated.settings``, under evaluate's flag names (the API's ``RLVTrainer.evaluate`` records
    the same keys): what changes what is sampled or reported, which a later evaluation into a default output folder
    must match to replace it (:func:`check_same_settings`). ``conventions``: the votes' ``testtime.Conventions``;
    ``rules``: the strategy's, as it runs them; ``dtype``: the precision it samples in (:func:`precision`)."""
    return {"raw_prompts": raw_prompts, "reward": reward, "num_samples": num_samples, "max_new_tokens": max_new_tokens,
            "dtype": dtype, "seed": seed, "temperature": temperature, "top_p": top_p, "top_k": top_k,
            "score": conventions.score,
            "grouping": conventions.grouping, "bon_unparseable": conventions.unparseable, "bon_ties": conventions.ties,
            "strategy": strategy, "rules": [repr(rule) for rule in rules]}


def precision(dtype: str, compute_dtype: str | None = None) -> str:
    """``evaluated.settings``' dtype: the weights' dtype, and the compute's where it differs (a run's ModelSpec)."""
    return dtype if compute_dtype in (None, dtype) else f"{dtype}, compute {compute_dtype}"


# What an evaluation ran with where its eval.json recorded settings but not these (an older rlvjax could run no
# other way); the strategy's rules only where it ran the fixed strategy (an older one recorded the flags instead);
# top-p and top-k an export's (a run's own evaluations: the run's, ``check_same_settings(ran_with=)``).
UNRECORDED = {"reward": None, "raw_prompts": False, "dtype": None, "rules": [], "top_p": 1.0, "top_k": 0}


def check_same_settings(out: Path, settings: dict, knob: str = "--out", ran_with: dict | None = None) -> None:
    """One line when ``out`` holds an evaluation with other ``settings`` (eval.json's ``evaluated.settings``: what
    changes what is sampled or reported, :func:`eval_settings`), which this one would replace (at K = 64 over
    MATH-500, hours of sampling): a default ``--out`` (``knob``) is named after the model and the data alone. The
    same settings again (a rerun) replace it. A setting the earlier eval.json did not record is compared with what it
    ran with (``UNRECORDED``, updated by ``ran_with``: a run's evaluations sampled at its own top-p and top-k before
    they were recorded), or, unknown, refused; one it recorded that is no longer a setting is passed over. An
    eval.json written before settings were recorded at all is compared by temperature and K."""
    try:
        previous = json.loads((out / "eval.json").read_text(encoding="utf-8"))
        recorded = previous["evaluated"].get("settings")
        before = recorded or {
            "temperature": float(previous["headline_temperature"]),
            "num_samples": max(rep["num_samples"] for reps in previous["reports"].values() for rep in reps.values())}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none there, or not an evaluation's
        return
    assumed = {k: v for k, v in {**UNRECORDED, **(ran_with or {})}.items()
               if k != "rules" or before.get("strategy", "fixed") == "fixed"}
    unknown = object()
    then = {key: before.get(key, assumed.get(key, unknown)) for key in (settings if recorded else before)}
    if then.get("dtype", unknown) is None:  # recorded as the flag before 2026-12-07: None was the default precision
        then["dtype"] = assumed.get("dtype")
    changed = [key for key, value in then.items() if value != settings.get(key)]
    if changed:
        said = {key: "not recorded" if then[key] is unknown else repr(then[key]) for key in changed}
        raise ValueError(f"{out} holds an evaluation with " + ", ".join(f"{k}={said[k]}" for k in changed)
                         + " (this one: " + ", ".join(f"{k}={settings.get(k)!r}" for k in changed) + "), which it "
                         f"would replace; pass {knob} to keep both, or remove {out} to replace it")


def check_out(out: Path, knob: str = "--out") -> None:
    """One line when ``--out`` (``knob``) is a training run (its ``eval.json`` is the run's end-of-run report, which
    ``launch/collect.py`` tabulates) or inside a folder a run manages other than its ``eval/``."""
    target = out.resolve()
    if outputs.is_run(target):
        raise ValueError(f"{knob} {out} is a training run: its eval.json is the run's own end-of-run report; write "
                         f"elsewhere, e.g. {out / 'eval' / 'custom'}")
    for root in filter(outputs.is_run, target.parents):
        inside = target.relative_to(root).parts[0]
        own_run = outputs.is_run(root / inside)  # the lambda = 0 baseline's: checked as a root of its own
        if inside in outputs.MANAGED and inside != "eval" and not own_run:
            where = "is" if target == root / inside else "is inside"  # "RUN/final is inside RUN/final"
            raise ValueError(f"{knob} {out} {where} {root / inside}, which the run in {root} manages; write "
                             f"elsewhere, e.g. {root / 'eval' / 'custom'}")


def check_writable(out: Path, knob: str = "--out") -> None:
    """Raises a one-line error when ``out`` (``knob``) could not be created or written (its nearest existing
    ancestor is a file or not writable, or a file evaluate writes is a directory there); creates nothing."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{knob} {out}: {existing} is a file, not a directory; choose another {knob}")
    if not os.access(existing, os.W_OK):
        raise PermissionError(f"{knob} {out}: {existing} is not writable; choose another {knob}")
    for name in REPORT_FILES:
        if (out / name).is_dir():
            raise IsADirectoryError(f"{knob} {out}: {out / name} is a directory where evaluate writes a file; move "
                                    f"it or choose another {knob}")
