"""A run's outputs and whether they are current: the exports (``warm_start/``, ``final/``) carry a stamp in their
weights' metadata (``save_hf``: the step, an id new with every export, what made a warm start), and the end-of-run
``eval.json`` names the exports and eval problems it covers. A resume reuses what is current, redoes the rest, and
moves aside what a ``--checkpoint`` rollback left behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import jax

from rlvjax import parallel
from rlvjax.checkpoint import Checkpointer, step_folders
from rlvjax.config import WRITTEN_IN, Config
from rlvjax.data import pipeline, sources
from rlvjax.metrics import rewind_logs
from rlvjax.model.hf import export_stamp
from rlvjax.reports import temperature_key

if TYPE_CHECKING:
    from rlvjax.experiment import RunConfig
    from rlvjax.rl.config import RLConfig
    from rlvjax.sft import WarmStartConfig


def exported(workdir: Path, checkpoints: Checkpointer, start: int) -> bool:
    """Whether ``WORKDIR/final`` already holds this run's last step: nothing was trained in this invocation (it
    started at the latest checkpoint) and the export is stamped with that step."""
    latest = checkpoints.latest_step()
    done = (latest is not None and start >= latest
            and export_stamp(workdir / "final").get("rlvjax_step") == str(latest))
    return parallel.primary_says(done)


BASELINE = "baseline_lambda0"  # the lambda = 0 baseline's own run, inside the workdir (RunConfig.baseline)
# What a run writes and reads back in its workdir: an export never goes into (or replaces) one of them.
MANAGED = ("checkpoints", "checkpoints_set_aside", "tensorboard", "warm_start", "final", BASELINE, "data", "eval")
RUN_MARKS = ("checkpoints", "config.gin", ".lock")  # a directory holding one of these is a training run
# Where a run keeps the Python API's datasets (TaskSpec field -> path in its workdir), written when it starts.
GIVEN_DATA = {"train_file": "data/train.jsonl", "eval_file": "data/eval.jsonl"}


def moved_base(workdir: Path, config: Config) -> Config:
    """``config`` of the run in ``workdir`` with the base model found where a moved workdir has it: a lambda = 0
    baseline trains from its run's ``warm_start/``, which its config names by an absolute path (the old one once the
    workdir is moved or copied elsewhere) or, before 2026-12-03, relative to the launch directory."""
    stored = config.model.hf_dir
    sibling = workdir.absolute().parent / "warm_start"
    if workdir.name != BASELINE or stored is None or Path(stored).name != "warm_start" or not sibling.is_dir():
        return config
    if Path(stored).is_absolute() and Path(stored).is_dir():  # where it was trained: still there
        return config
    return dataclasses.replace(config, model=dataclasses.replace(config.model, hf_dir=str(sibling)))


def written_task(task, workdir: Path, records: tuple[list[dict], list[dict]]):
    """The task a run on in-memory ``records`` writes in its config: it reads them back from ``WORKDIR/data/``
    (``GIVEN_DATA``, written by ``train.record_run``), all the eval rows as given."""
    return dataclasses.replace(
        task, name="file", train_file=str(Path(workdir) / GIVEN_DATA["train_file"]),
        eval_file=str(Path(workdir) / GIVEN_DATA["eval_file"]) if records[1] else None,
        num_eval=len(records[1]) if records[1] else task.num_eval)


def moved_data(workdir: Path, values: dict) -> Config:
    """The :class:`Config` of ``values`` (the run in ``workdir``'s config.json or a checkpoint's stored config)
    reading the Python API's datasets from the run's own copies where it is now (a lambda = 0 baseline keeps its
    own): it names them (``GIVEN_DATA``) by absolute path, and a moved run failed with "no such data file" (a copied
    one read the original's). Only a path that was the run's own copy where it wrote ``values`` (their
    ``WRITTEN_IN``, recorded from 2026-12-06) is moved: a file the run was pointed at since is read as named, gone or
    not."""
    config = Config.from_dict(values)
    if WRITTEN_IN not in values:
        return config
    was, now = Path(values[WRITTEN_IN]), workdir.absolute()
    moved = {field: str(now / name) for field, name in GIVEN_DATA.items()
             if getattr(config.task, field) == str(was / name) and was != now and (now / name).is_file()}
    return dataclasses.replace(config, task=dataclasses.replace(config.task, **moved)) if moved else config


def is_run(path: Path) -> bool:
    return any((path / mark).exists() for mark in RUN_MARKS)


def run_under(path: Path) -> Path | None:
    """The first training run found at ``path`` or anywhere below it (a sweep's root holds runs two levels down)."""
    for root, _, _ in os.walk(path):
        if is_run(Path(root)):
            return Path(root)
    return None


OUTPUTS = ("final", "eval.json", "scaling.png")  # the final policy and the end-of-run report
# What a run writes into its workdir beside its checkpoints and config.
WRITES = ("warm_start", *OUTPUTS, BASELINE, "tensorboard", "metrics.jsonl", "samples.jsonl")


def check_fresh(workdir: Path, resume: bool, latest: int | None) -> None:
    """A run without ``resume`` into a workdir with checkpoints (``latest``: its newest step) is refused."""
    if latest is not None and not resume:
        raise FileExistsError(f"{workdir} already holds checkpoints (latest step {latest}); pass --resume to continue "
                              "that run (the API: train(resume=True)), or choose a fresh --workdir (output_dir)")


def check_unused(workdir: Path, *, given: bool, warm_starts: bool = False) -> None:
    """Refuses a run that would start from step 0 (``workdir`` holds no saved step) where it would replace files: a
    project's own (``tensorboard/``, with ``given`` records ``data/train.jsonl``), or a finished run's final policy
    and report whose checkpoints are gone. An earlier start of a run that stopped before its first checkpoint (its
    ``config.json``, written before anything else, vetted by ``Config.check_workdir``) is simply redone; but not over
    that start's ``warm_start/`` when this run does not warm-start (``warm_starts``): its lambda = 0 baseline and
    report would start from another run's warm start."""
    found = []
    if not step_folders(workdir / "checkpoints"):
        writes = (*WRITES, *GIVEN_DATA.values()) if given else WRITES
        found = [n for n in (OUTPUTS if (workdir / "config.json").exists() else writes) if (workdir / n).exists()]
        if (workdir / "config.json").exists() and (workdir / "warm_start").exists() and not warm_starts:
            raise FileExistsError(f"{workdir} holds warm_start/ from an earlier start that warm-started, which this "
                                  "run (WarmStartConfig.num_steps = 0) does not: its lambda = 0 baseline and report "
                                  "would start from it; move warm_start/ away, or keep the warm start")
    # the first process's view: another may look while the first writes this run's data/ (before its config.json)
    if parallel.primary_says(bool(found)):
        raise FileExistsError(f"{workdir} holds {', '.join(found) or 'files'}, which this run would replace, and no "
                              "checkpoint to resume; choose a new or empty --workdir (output_dir)")


def set_aside_outputs(workdir: Path, aside: Path, restored: int) -> None:
    """After a resume went back to step ``restored`` (``--checkpoint``), the final policy and report of a later step,
    and the evaluations (``evaluate --workdir``, in ``eval/``) of that policy or of a later checkpoint, follow its
    checkpoints to ``aside`` (``outputs_of_step_<N>``; ``evaluations_after_step_<restored>`` when only evaluations
    move), so that none passes for this run's."""
    step = export_stamp(workdir / "final").get("rlvjax_step")
    present = [workdir / name for name in OUTPUTS if (workdir / name).exists()] if step != str(restored) else []
    stale = [path for path in sorted((workdir / "eval").glob("*"))
             if _evaluates(path, workdir, restored, final_moves=bool(present))]
    if not present and not stale:
        return
    name = f"outputs_of_step_{step or 'unknown'}" if present else f"evaluations_after_step_{restored}"
    target = _free_name(aside, name)
    (target / "eval" if stale else target).mkdir(parents=True)
    for path in present:
        os.replace(path, target / path.name)
    for path in stale:
        os.replace(path, target / "eval" / path.name)
    moved = (["the final policy and report of step " + (step or "?")] if present else []) + (
        [f"the evaluations ({', '.join(p.name for p in stale)}) of steps after {restored}"] if stale else [])
    print(f"rlvjax.train: moved {' and '.join(moved)} to {target}", file=sys.stderr)


def roll_back_baseline(workdir: Path, step: int) -> None:
    """``--checkpoint N`` takes the lambda = 0 baseline in ``WORKDIR/baseline_lambda0`` back to its newest step at
    or before N, in the invocation that takes the run back (under its lock, after its own set-aside): the baseline
    trains only after the run, and a rerun that finishes an interrupted retraining (plain ``--resume``) would have
    continued it from its later steps. Its later checkpoints, log rows and outputs go to its own
    ``checkpoints_set_aside/``, as the run's do."""
    baseline = workdir / BASELINE
    if not any(s > step for s in step_folders(baseline / "checkpoints")):
        return
    with Checkpointer(baseline / "checkpoints") as checkpoints:
        kept = max((s for s in checkpoints.all_steps() if s <= step), default=0)
        aside, newer = set_aside_after(baseline, checkpoints, kept)
    if jax.process_index() == 0:
        print(f"rlvjax.train: the lambda = 0 baseline goes back to step {kept} too; moved its later steps {newer} "
              f"to {aside}", file=sys.stderr)


ROLLBACK = ".rollback_to"  # in checkpoints_set_aside/: the step a rollback is taking the run back to, until done


def pending_rollback(workdir: Path) -> int | None:
    """The step of a ``--resume --checkpoint N`` killed before its checkpoints moved (its log rows and outputs may
    have gone already: a plain ``--resume`` from the later steps would leave their rows missing), None when none."""
    try:
        return int((workdir / "checkpoints_set_aside" / ROLLBACK).read_text())
    except (OSError, ValueError):
        return None


def set_aside_after(workdir: Path, checkpoints: Checkpointer, step: int) -> tuple[Path | None, list[int]]:
    """Moves what a run has after ``step`` out of it, to ``WORKDIR/checkpoints_set_aside``: first (process 0) the
    log rows of later steps and the outputs of a later step (``rewind_logs``, ``set_aside_outputs``), then
    the later checkpoints, so that a kill between the moves loses nothing (a rerun finds those checkpoints still
    there and moves what is left). Returns where they went and the steps moved (None, [] when there were none;
    the rows of steps after ``step`` are dropped all the same, as a restart logs them again)."""
    newer = [s for s in checkpoints.all_steps() if s > step]
    aside = workdir / "checkpoints_set_aside" if newer else None
    if jax.process_index() == 0:
        if aside is not None:
            aside.mkdir(parents=True, exist_ok=True)
            (aside / ROLLBACK).write_text(str(step))  # until the checkpoints have moved: ``pending_rollback``
        rewind_logs(workdir, step, aside)
        if aside is not None:
            set_aside_outputs(workdir, aside, step)
    if newer:
        checkpoints.set_aside(newer)
    if jax.process_index() == 0:  # done; also one killed after its checkpoints moved, whose rerun moved nothing
        (workdir / "checkpoints_set_aside" / ROLLBACK).unlink(missing_ok=True)
    return aside, newer


def _free_name(directory: Path, name: str) -> Path:
    """``directory / name``, or ``name.1``, ``name.2``, ... when taken: what a set-aside moves is never merged."""
    target, suffix = directory / name, 1
    while target.exists():
        target, suffix = directory / f"{name}.{suffix}", suffix + 1
    return target


def _evaluates(path: Path, workdir: Path, restored: int, *, final_moves: bool) -> bool:
    """Whether ``eval/<name>`` (``path``) evaluated ``workdir``'s final policy (when it moves aside) or one of its
    checkpoints after ``restored``: its eval.json's ``evaluated.model`` or, in one written before it named its model
    (2026-12-05), the folder's name as ``evaluate`` gave it (``final``, ``step_N``, each ``-DATA`` with --data)."""
    try:
        report = json.loads((path / "eval.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not an evaluation
        return False
    try:
        model = Path(report["evaluated"]["model"]).resolve()
    except (KeyError, TypeError):
        name = path.name.split("-")[0]
        if name == "final":
            return final_moves
        step = name.removeprefix("step_")
        return name.startswith("step_") and step.isdigit() and int(step) > restored
    if model == (workdir / "final").resolve():
        return final_moves
    return model.parent == (workdir / "checkpoints").resolve() and model.name.isdigit() and int(model.name) > restored


def warm_start_id(config: Config) -> str:
    """What a warm start's weights follow from (the model, the task, the warm start's settings, the verify
    question), as 16 hex digits: its export is reused by a resume only when they are the same."""
    settings = config.to_dict()
    del settings["verifier"]["label_reward"]  # it labels RL rollouts only (and runs from before it keep their id)
    settings["task"] = _task_settings(config.task)
    return pipeline.fingerprint([{section: settings[section] for section in ("model", "task", "warm_start",
                                                                            "verifier")}])


def _task_settings(task) -> dict:
    """The task's settings as its fingerprints take them: ``TaskSpec.train_subset`` / ``eval_subset`` only where set
    (runs from before they existed keep their ids)."""
    settings = dataclasses.asdict(task)
    return {k: v for k, v in settings.items() if not (k in ("train_subset", "eval_subset") and v is None)}


def warm_start_runs(config: Config, workdir: Path, resume: bool) -> bool:
    """Whether this run warm-starts: one is asked for (``WarmStartConfig.num_steps``) and, with ``resume``, the
    workdir holds neither a checkpoint nor the export of the same warm start to go on from. Process 0's answer, on
    every process."""
    if not config.warm_start.num_steps:
        return False
    if not resume:
        return True  # a fresh run (one over a workdir with checkpoints is refused)
    checkpoints = workdir / "checkpoints"
    if checkpoints.is_dir():
        with Checkpointer(checkpoints, read_only=True) as saved:
            past_it = saved.latest_step() is not None
    else:
        past_it = False
    past_it |= export_stamp(workdir / "warm_start").get("rlvjax_warm_start") == warm_start_id(config)
    return not parallel.primary_says(past_it)


def current_report(config: Config, workdir, policies: dict[str, Path], eval_data: str | None = None, *,
                   grouping: str | None = None) -> dict | None:
    """``WORKDIR/eval.json`` when ``rlvjax.evaluate.final_report`` would write the same report again: over exactly
    these exports of ``policies`` (each export's id, :func:`exports`) and the same eval problems
    (``eval_data``, :func:`eval_data_id`; None: the config's task's), with the pool size, temperatures and
    conventions of ``config`` (``grouping``: the answer grouping the report records, ``Rewards.grouping``'s: "string"
    under a reward other than the math one; None: the config's). None otherwise (a finished run resumed once more
    re-evaluates nothing; one with a new policy, new problems or a new setting does)."""
    try:
        evaluation = json.loads((Path(workdir) / "eval.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rl, run = config.rl, config.run
    temperatures = {temperature_key(t) for t in (rl.temperature, run.eval_temperature or rl.temperature)}
    reports = evaluation.get("reports") if isinstance(evaluation, dict) else None
    ids = exports(policies)
    conventions = dataclasses.asdict(config.conventions) | ({} if grouping is None else {"grouping": grouping})
    same = (isinstance(reports, dict) and set(reports) == temperatures and None not in ids.values()
            and evaluation.get("policies") == ids
            and evaluation.get("eval_data") == (eval_data or eval_data_id(config.task))
            and all(isinstance(r, dict) and set(r) == set(policies) for r in reports.values())
            and all(rep.get("num_samples") == run.final_eval_samples
                    and rep.get("conventions") == conventions
                    for r in reports.values() for rep in r.values()))
    return evaluation if same else None


def set_aside_stale_report(workdir: Path, policies: dict[str, Path]) -> None:
    """A resume that writes no report (``final_eval_samples = 0``) but exported new policies moves the earlier
    report, which is about the exports it replaced, to ``checkpoints_set_aside/report_of_step_<N>``, so that it
    does not pass for this run's (``launch/collect.py`` and ``launch/seeds.py`` read ``WORKDIR/eval.json``)."""
    workdir = Path(workdir)
    try:
        evaluation = json.loads((workdir / "eval.json").read_text(encoding="utf-8"))
        about = evaluation["policies"]
    except (OSError, ValueError, KeyError, TypeError):  # none, or not rlvjax's: nothing to judge it by
        return
    if isinstance(about, dict) and set(about) <= set(policies) and about == exports({n: policies[n] for n in about}):
        return
    final = about.get("final") if isinstance(about, dict) else None
    step = final.get("step") if isinstance(final, dict) else None
    target = _free_name(workdir / "checkpoints_set_aside", f"report_of_step_{step or 'unknown'}")
    target.mkdir(parents=True)
    for name in ("eval.json", "scaling.png", "compute.png"):
        if (workdir / name).exists():
            os.replace(workdir / name, target / name)
    print(f"rlvjax.train: moved the end-of-run report of the earlier exports to {target} (this run writes none: "
          "RunConfig.final_eval_samples = 0)", file=sys.stderr)


def stale_report(workdir: Path, evaluation: dict) -> str | None:
    """Why ``evaluation``, a report of the run in ``workdir`` (its end-of-run ``eval.json``, or ``rlvjax.evaluate``'s
    ``eval/final/eval.json``), is about other exports than the run holds now (a resume that exported again was
    stopped before its report): e.g. "final is step 6 in the report, step 8 in the run"; None when current, or when
    the report names no stamped export (an older rlvjax's)."""
    about = evaluation.get("policies")
    if not isinstance(about, dict):  # evaluate's report names the one model it evaluated: the run's final/
        evaluated = evaluation.get("evaluated")
        about = {"final": evaluated.get("export")} if isinstance(evaluated, dict) else {}
    paths = {"warm_start": workdir / "warm_start", "final": workdir / "final", "lambda0": workdir / BASELINE / "final"}
    for name, was in about.items():
        if name not in paths or not isinstance(was, dict) or (now := exports({name: paths[name]})[name]) == was:
            continue
        if now is None:
            return f"the report is about {name} of step {was.get('step')}, which the run no longer holds"
        if now["step"] != was.get("step"):
            return f"{name} is step {was.get('step')} in the report, step {now['step']} in the run"
        return f"{name} was exported again since the report (step {now['step']})"
    return None


def exports(policies: dict[str, Path]) -> dict[str, dict | None]:
    """``{name: {"export_id", "step"}}`` of exported policy directories, from the stamp ``save_hf`` put on their
    weights (None for one without it): which exports, of which training step, a report is about."""
    stamps = {name: export_stamp(path) for name, path in policies.items()}
    return {name: {"export_id": stamp["rlvjax_export_id"],
                   "step": int(stamp["rlvjax_step"]) if "rlvjax_step" in stamp else None}
            if "rlvjax_export_id" in stamp else None for name, stamp in stamps.items()}


def eval_data_id(task) -> str:
    """What a report's problems are drawn from, as 16 hex digits: the task's settings (the files' paths aside) and
    the eval data (a file's bytes, the problems of a dataset directory's eval split: a "~/" path or a re-saved
    directory was known by its name alone, and a resume on other problems kept the old report), so a resume on other
    problems is evaluated again; a hub id by its name. A run on the API's in-memory rows is identified by the task
    it writes (:func:`written_task`): the CLI, resuming it from its config, and the API give the same id (each took
    the other's report for another's and sampled it again)."""
    settings = {k: v for k, v in _task_settings(task).items() if k not in ("train_file", "eval_file")}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    source = Path(task.eval_file).expanduser() if task.eval_file else None
    if source is not None and source.is_file():
        _hash_file(digest, source)
    elif source is not None and source.is_dir():  # the problems it gives, not its files: they hold the caches
        # `datasets` writes there, a .git, the other splits (a finished run evaluated again after any of them changed)
        records = sources.load_records(source, split=task.eval_split, name=task.eval_subset, require_gold=False)[0]
        digest.update(pipeline.fingerprint(records).encode())
    else:
        digest.update(str(task.eval_file).encode())
    return digest.hexdigest()[:16]


def _hash_file(digest, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)


def disk_need(params, rl: RLConfig, run: RunConfig, warm: WarmStartConfig,
              workdir: Path, resume_step: int | None = None) -> tuple[int, str]:
    """``(bytes, account)``: the disk a run still needs at its peak, ``max_to_keep`` checkpoints plus the one being
    saved (Orbax deletes the oldest only after it), less those already saved, and the models it exports; and what
    that is, for the caller to put in parentheses after the run it names. A checkpoint holds the params, AdamW's two
    moments and, with a KL term, the reference. A finished run resumed again (for its baseline or report) saves
    nothing, and exports only a final policy it lacks."""
    model = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))  # sharded: not gathered to count
    checkpoint = model * (3 + int(rl.beta > 0))
    steps = step_folders(workdir / "checkpoints")
    saved = len(steps)
    if steps and (max(steps) if resume_step is None else resume_step) >= run.num_steps:
        exports = int(run.export_final and export_stamp(workdir / "final").get("rlvjax_step") != str(max(steps)))
        return exports * model, f"finished: {exports} exported model(s)"
    keep = run.max_to_keep or -(-run.num_steps // run.checkpoint_every)
    checkpoints = max(keep + 1 - saved, 0)
    exports = int(run.export_final) + int(bool(warm.num_steps) and not (workdir / "warm_start").exists())
    account = (f"{checkpoints} more checkpoint(s): RunConfig.max_to_keep={run.max_to_keep} and the one being saved"
               + (f"; {exports} exported model(s)" if exports else ""))
    return checkpoints * checkpoint + exports * model, account
