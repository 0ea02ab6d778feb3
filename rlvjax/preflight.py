"""What a training run checks and loads before it writes anything: the job's hosts agree, the config and the data
are sound, the policy and its tokenizer load, the memory plan fits the devices, the workdir has room; then the
parameters are laid out over the mesh. Any failure here leaves the workdir as it was (``train.py`` locks and writes
it only after :func:`prepare` returns).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import jax
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from rlvjax import budget, experiment, memory, outputs, parallel, policy_tokens, sampling, sft
from rlvjax.checkpoint import check_free_space, ensure_writable, step_folders
from rlvjax.config import Config, check_local
from rlvjax.data import pipeline, sources, tasks
from rlvjax.model.transformer import ModelConfig
from rlvjax.resume import stored_config
from rlvjax.rewards.registry import Rewards
from rlvjax.rl import verifier


@dataclasses.dataclass
class RunSetup:
    """A checked run, ready to lock its workdir and train (its parameters are returned beside it, so that whoever
    replaces them holds the only reference)."""
    config: Config
    workdir: Path  # absolute
    resume_step: int | None  # --checkpoint N, or the step an interrupted one was going back to
    reward: Rewards
    mesh: Mesh
    tokenizer: Any
    verifier_tokens: verifier.VerifierTokens
    special: policy_tokens.SamplingTokens
    graphdef: nnx.GraphDef
    architecture: ModelConfig
    train_records: list[dict]
    eval_records: list[dict]
    records: tuple[list[dict], list[dict]] | None  # given in memory (the API), as written to WORKDIR/data/
    warming: bool  # the warm start runs now
    warm_examples: list  # its tokenized examples ([] where it does not run)
    data: pipeline.DataIterator  # this process's shard of the training problems, with their "index"


def prepare(config: Config, workdir: str, *, resume: bool, resume_step: int | None, reward: Rewards | None,
            records: tuple[list[dict], list[dict]] | None, baseline: bool = False) -> tuple[RunSetup, dict]:
    """Checks and loads everything :func:`rlvjax.train.train` needs before it writes; returns the setup and the
    policy's parameters, sharded over the mesh."""
    # First the job (before anything touches a device), then its hosts' settings: a host stopping on an error here
    # stops them all (before the join, the others waited for it until the join's timeout, then aborted)
    parallel.initialize_distributed(config.mesh)
    launch_fields = {f"MeshConfig.{name}" for name in parallel.LAUNCH_FIELDS}  # each host's own
    parallel.check_same_settings({**{k: v for k, v in config.settings().items() if k not in launch_fields},
                                  "--resume": resume, "--checkpoint": resume_step,
                                  "--workdir": str(Path(workdir).absolute())})  # a typo: a save hung for 1,000 s
    check_local(workdir)
    if resume_step is not None and not resume:
        raise ValueError(f"--checkpoint {resume_step} chooses the step to resume from; pass it with --resume")
    if resume and resume_step is None and (pending := outputs.pending_rollback(Path(workdir))) is not None:
        print(f"rlvjax.train: finishing the interrupted --checkpoint {pending} of {workdir}", file=sys.stderr)
        resume_step = pending
    # before minutes of loading and the memory plan; checked again under the workdir's lock
    saved = step_folders(Path(workdir) / "checkpoints")
    # A run that starts is checked (a --resume with nothing saved is a first launch), not a lambda = 0 baseline (its
    # run's checks covered its config, or an older rlvjax accepted them). A resume is checked where it changes the
    # precision settings (a lower learning rate), and where the run's own config passes the start's combination
    # checks, on what it may change (the report, the baseline, the files: `--resume --gin_param
    # RunConfig.final_eval_samples=2` beside export_final = False went on without the report and without a word).
    # A run an older rlvjax accepted stays resumable.
    # Rows given in memory are read as the "file" task reads them (written_task, in train.py), not as the task the
    # config names (the generated default): RLVConfig(prompt_format="chat") was refused as the arithmetic task's.
    checked = config if records is None else dataclasses.replace(config, task=dataclasses.replace(config.task,
                                                                                                  name="file"))
    stored = stored_config(Path(workdir), resume_step) if saved and resume else None
    if not saved and not baseline:
        config.check_precision()
        checked.check_consistent()
    elif stored is not None:
        if config.precision_settings() != stored.precision_settings():
            config.check_precision()
        if not baseline:
            try:
                stored.check_consistent()
            except ValueError:
                pass
            else:
                checked.check_consistent()
    outputs.check_fresh(Path(workdir).absolute(), resume, max(saved, default=None))
    Config.check_workdir(workdir)  # a model's or a project's own config.json / config.gin (again before the lock)
    run, rl, optim, warm, task = config.run, config.rl, config.optim, config.warm_start, config.task
    experiment.use_compilation_cache(run.compilation_cache_dir)
    mesh = parallel.make_mesh(config.mesh)
    parallel.check_batch(run.batch_size, mesh, "batch_size (prompts per step)")
    if warm.num_steps:
        parallel.check_batch(warm.batch_size, mesh, "WarmStartConfig.batch_size", per_process=False)  # each builds all
    if rl.micro_batch_size:  # rows a micro-batch splits over the data axes: others are replicated whole
        parallel.check_batch(rl.micro_batch_size, mesh, "RLConfig.micro_batch_size", per_process=False)
    updates = run.num_steps * rl.updates_per_step
    if optim.warmup_steps >= updates and jax.process_index() == 0:  # a smoke run of a long config: said, not refused
        print(f"warning: OptimConfig.warmup_steps={optim.warmup_steps} is not below the run's {updates} optimizer "
              f"updates: the learning rate never reaches OptimConfig.learning_rate={optim.learning_rate:g} (the last "
              f"update's is {float(optim.learning_rates(updates)(updates - 1)):.2g})", file=sys.stderr)
    reward = reward or Rewards.of(config)
    reward.warn_about_labels()
    reward.state.max_steps = run.num_steps
    reward.state.global_step = (resume_step or max(saved, default=0)) if resume else 0  # for the probe below
    model, tokenizer = experiment.build_policy(config.model, config.verifier.question)
    given = records is not None
    if given:  # as written to WORKDIR/data/ and read back by a resume
        records = (sources.json_rows(records[0], "train_dataset"), sources.json_rows(records[1], "eval_dataset"))
    train_records, eval_records = experiment.build_records(task, tokenizer, records)
    parallel.check_same_settings({"the training problems": pipeline.fingerprint(train_records),
                                  "the eval problems": pipeline.fingerprint(eval_records)})
    for name, split in (("train", train_records), ("eval", eval_records)):
        if split:
            reward.check_columns(split, name)
    # (a resume keeping the periodic eval an older rlvjax accepted without eval problems stays resumable)
    experiment.check_report(run, len(eval_records), periodic=stored is None or run.eval_every != stored.run.eval_every)
    reward.probe(train_records)
    verifier_tokens = verifier.tokens(tokenizer, config.verifier.question, chat=config.verifier.chat)
    experiment.check_verify_form(task, tokenizer, config.verifier, train_records)
    special = policy_tokens.sampling_tokens(tokenizer, verifier_tokens)
    # What each device will hold, printed; a run that cannot fit is refused here, before anything is compiled.
    longest = memory.longest_prompt(tokenizer, [r["prompt"] for r in train_records + eval_records])
    prompt_tokens = sampling.bucket_width(longest)
    verify_width = len(verifier_tokens.suffix)
    experiment.check_positions(model.config, longest, rl.max_new_tokens, verify_width,
                               knob="RLConfig.max_new_tokens",
                               fix="lower RLConfig.max_new_tokens or TaskSpec.max_prompt_tokens")
    if warm.num_steps and given:  # the warm start's solutions come from a task's generator, not from given rows
        raise ValueError("a warm start (WarmStartConfig.num_steps > 0) needs a task that generates solutions; "
                         "in-memory datasets have none: set WarmStartConfig.num_steps = 0 and start from an "
                         "instruction-tuned model, or warm-start first on the task and pass its warm_start/ as model")
    workdir = Path(workdir).absolute()
    # The warm start's examples, tokenized once, when it will run; their width is in the plan (a task without
    # generated solutions fails here, before the workdir exists).
    warming = outputs.warm_start_runs(config, workdir, resume)
    warm_examples = sft.tokenize(tokenizer, tasks.warm_start_pairs(task, warm.num_examples, warm.mistake_rate,
                                                                   warm.seed)) if warming else []
    budget.enforce(memory.plan(model.config, rl, run, mesh, prompt_tokens=prompt_tokens, verify_tokens=verify_width,
                               optim=optim, eval_problems=len(eval_records),
                               warm_start_rows=warm.batch_size if warming else 0,
                               warm_start_width=sft.row_width(warm_examples, verify_width) if warming else 0),
                   config.memory, echo=jax.process_index() == 0)
    indexed = [{**r, "index": i} for i, r in enumerate(train_records)]
    data = pipeline.make_iterator(indexed, batch_size=run.batch_size // jax.process_count(), seed=run.seed,
                                  shard_index=jax.process_index(), shard_count=jax.process_count())
    for name, split in (("train", train_records), ("eval", eval_records)):
        experiment.check_encodable(tokenizer, split, name)  # else the model would see another problem
    graphdef, params = nnx.split(model)
    # Laid out over the mesh now, and the loaded copy dropped: whole on the first device, it stayed there all run.
    params = nnx.to_pure_dict(params)
    params = jax.device_put(params, parallel.shardings(params, mesh))
    architecture = model.config
    del model
    if resume_step is not None and not (workdir / "checkpoints").is_dir():
        raise FileNotFoundError(f"no checkpoint for step {resume_step}: {workdir} holds no checkpoints; check "
                                "--workdir")
    Config.check_workdir(workdir)
    outputs.check_unused(workdir, given=given, warm_starts=warm.num_steps > 0)
    need, account = outputs.disk_need(params, rl, run, warm, workdir, resume_step)
    what = f"the run ({account})"
    if run.baseline:  # trained after this run, in its own folder: a disk with room for the run alone was refused
        # only once the run was trained, in a line that read as if the run had not started
        more, account = outputs.disk_need(params, rl, dataclasses.replace(run, baseline=False),
                                          dataclasses.replace(warm, num_steps=0), workdir / outputs.BASELINE)
        need, what = need + more, f"{what}, then its lambda = 0 baseline ({account})"
    check_free_space(workdir, need, what)
    ensure_writable(epath.Path(workdir), "workdir")
    return RunSetup(config=config, workdir=workdir, resume_step=resume_step, reward=reward, mesh=mesh,
                    tokenizer=tokenizer, verifier_tokens=verifier_tokens, special=special, graphdef=graphdef,
                    architecture=architecture, train_records=train_records, eval_records=eval_records,
                    records=records, warming=warming, warm_examples=warm_examples, data=data), params
