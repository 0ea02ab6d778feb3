"""``python -m rlvjax.train [--gin_file F ...] [--gin_param 'k=v' ...] [--workdir D] [--resume [--checkpoint N]]
[--dry_run]``

The RL^V iteration, top to bottom: sample -> grade -> advantages -> update (L_RL + lambda * L_V) -> log ->
checkpoint -> periodic eval; then (``RunConfig.baseline``) the same for lambda = 0 from the same warm start; then the
report: warm start, RL^V and its baseline at the training temperature (and ``RunConfig.eval_temperature``).
Everything configurable is one :class:`rlvjax.config.Config` value, built here from gin (docs/config.md lists every
field); with no flags this runs ``configs/default.gin`` on the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import flags, logging
from flax import nnx

from rlvjax import (cli, evaluate, experiment, outputs, parallel, policy_tokens, preemption, preflight, run_sampling,
                    sampling, sft, testtime)
from rlvjax.config import GIN_FIELDS, WRITTEN_IN, Config, check_local, written_values
from rlvjax.checkpoint import Checkpointer
from rlvjax.data import sources
from rlvjax.data.encoding import encode_prompts
from rlvjax.lock import workdir_lock
from rlvjax.metrics import MetricsWriter
from rlvjax.model.hf import save_hf
from rlvjax.pool import PoolSampler, quick_eval
from rlvjax.resume import changed_settings, check_steps_kept, config_defaults, resume_keys, stored_config
from rlvjax.rewards.math import grading_counts
from rlvjax.rewards.registry import Rewards
from rlvjax.rl import advantages as advantages_lib
from rlvjax.rl import diagnostics, steps, vineppo

CONFIGS = experiment.CONFIGS
GIN_SEARCH_PATH = experiment.GIN_SEARCH_PATH
cli.add_gin_search_path(GIN_SEARCH_PATH)  # `--gin_file configs/...` (and users' includes) from any directory
FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", None, "gin config files (default: configs/default.gin)")
flags.DEFINE_multi_string("gin_param", [], "gin bindings 'Section.field = value', e.g. 'RLConfig.lambda_verify = "
                          "0.5'; docs/config.md lists every field with its default and meaning, --print_config the "
                          "resolved values")
flags.DEFINE_string("workdir", "runs/default", "where checkpoints, metrics.jsonl, TensorBoard logs and reports go")
flags.DEFINE_bool("resume", False, "continue from the newest intact checkpoint in --workdir, with the run's own "
                  "config and any --gin_param on top (or --gin_file's instead); a change to what it trains is "
                  "refused")
flags.DEFINE_integer("checkpoint", None, "with --resume: continue from this step (later steps are set aside)")
flags.DEFINE_bool("print_config", False, "print the resolved configuration (a gin file that reproduces the run; "
                  "every run also writes it to WORKDIR/config.gin, with config.json) and exit; writes nothing")
flags.DEFINE_bool("dry_run", False, "plan and compile the run's steps for its mesh without weights or data (fakes the "
                  "devices on a CPU host), print the memory plan beside XLA's compiled memory, and exit non-zero if "
                  "the plan exceeds the device budget, or the compiled memory does where it is exact (float32 "
                  "compute on a CPU, or the target's devices; else a warning); writes nothing to the workdir "
                  "(compiled programs go to RunConfig.compilation_cache_dir)")


# What a SIGTERM while a run starts says (launch/sweep.py reads both as "stopped").
STARTING = "while the run was starting, before anything was written; rerun with the same command"
BASELINE_STARTING = ("while the lambda = 0 baseline was starting; the run itself is trained and saved: rerun with "
                     "--resume to go on with the baseline")


def train(config: Config, workdir: str, *, resume: bool = False, resume_step: int | None = None,
          reward: Rewards | None = None, records: tuple[list[dict], list[dict]] | None = None,
          hold: contextlib.ExitStack | None = None, command: bool = False, baseline: bool = False) -> list[dict]:
    """Run RL^V training as ``config`` says; returns the logged metrics of the steps it ran.

    ``reward``: reward functions given as objects (the Python API), else ``config.task.rewards`` by name. ``records``:
    ``(train, eval)`` records given in memory instead of ``config.task``'s; they are written to ``WORKDIR/data/`` and
    the run's config.gin names them there, so the CLI reproduces the run.

    Everything that can be wrong with the config, the model or the data fails before anything is written. A run
    killed at any point and restarted with ``resume=True`` continues from its latest complete checkpoint and logs
    exactly what the uninterrupted run would have (``metrics.jsonl`` is rewound to that step first). SIGTERM and
    Ctrl-C save at the next step boundary and raise :class:`cli.Preempted` (a SIGTERM while the run starts, before
    anything is written, raises it at once; given ``command``, the CLI's, it ends the process at once, exit 0);
    ``OptimConfig.max_consecutive_nonfinite``
    non-finite updates in a row raise :class:`cli.RunFailed` without saving the step that tripped it. The workdir's
    lock is held until this returns, or, given ``hold``, until that stack closes (the baseline and the report).
    """
    # Until the workdir is locked and the notice handlers are in (the model's load, the checks, the plan: minutes at
    # scale) nothing is written, so a SIGTERM ends the command at once, exit 0 (it was 143, with no word); in a
    # Python API script it raises Preempted where the script is, as a Ctrl-C there raises KeyboardInterrupt (the
    # process's exit 0 skipped the script's own cleanup and read as success)
    starting = BASELINE_STARTING if baseline else STARTING
    with preemption.stop_at_once(starting) if command else preemption.interrupt_on_sigterm(
            cli.Preempted(f"SIGTERM {starting}")):
        return _train(config, workdir, resume=resume, resume_step=resume_step, reward=reward, records=records,
                      hold=hold, baseline=baseline)


def _train(config: Config, workdir: str, *, resume: bool, resume_step: int | None, reward: Rewards | None,
           records: tuple[list[dict], list[dict]] | None, hold: contextlib.ExitStack | None,
           baseline: bool = False) -> list[dict]:
    setup, params = preflight.prepare(config, workdir, resume=resume, resume_step=resume_step, reward=reward,
                                      records=records, baseline=baseline)
    config, workdir, resume_step, mesh = setup.config, setup.workdir, setup.resume_step, setup.mesh
    run, rl, optim, warm = config.run, config.rl, config.optim, config.warm_start
    given, data = setup.records is not None, setup.data
    with contextlib.ExitStack() as scope, preemption.notice() as notice:
        (hold or scope).enter_context(workdir_lock(workdir, enabled=jax.process_index() == 0))
        checkpoints = Checkpointer(workdir / "checkpoints", max_to_keep=run.max_to_keep)
        if given:  # the written config names the data where this run keeps it
            config = dataclasses.replace(config, task=outputs.written_task(config.task, workdir, setup.records))
        rendered = run_sampling.rendered_as(config.task, setup.train_records + setup.eval_records)  # its exports'
        stored = {**config.to_dict(), "architecture": json.loads(json.dumps(dataclasses.asdict(setup.architecture))),
                  run_sampling.KEY: rendered, WRITTEN_IN: str(workdir)}
        latest = checkpoints.latest_step()
        outputs.check_fresh(workdir, resume, latest)
        if resume_step is not None and resume_step not in checkpoints.all_steps():
            raise FileNotFoundError(f"no checkpoint for step {resume_step} in {checkpoints.directory} to resume from; "
                                    f"saved steps: {checkpoints.all_steps()}")
        if latest is None and jax.process_index() == 0:  # before the warm start: stopped in it, --resume alone
            record_run(workdir, config, setup.records)  # continues with this config
        if warm.num_steps and latest is None and not setup.warming:
            # stopped after its warm start was exported (while the RL steps compiled): not redone
            print(f"rlvjax.train: resuming from the warm start in {workdir / 'warm_start'}", file=sys.stderr)
            del params  # one copy at a time
            params = _exported_warm_start(config, workdir, mesh)
        elif setup.warming:
            params = _warm_start(setup, params, config, rendered, stop=notice.check)
        setup.warm_examples = []  # not kept for the whole run
        tx = optim.make(run.num_steps * rl.updates_per_step)
        learning_rates = optim.learning_rates(run.num_steps * rl.updates_per_step)
        step_setup = policy_tokens.step_setup(setup.graphdef, tx, rl, setup.tokenizer, config.verifier)
        # Born in its layout: built whole on one device, the AdamW moments (and the reference) took 3-4x the
        # weights there before being split. The params are donated into the state.
        init = functools.partial(steps.init_state, tx=tx, seed=run.seed, keep_reference=rl.beta > 0)
        state = jax.jit(init, out_shardings=parallel.shardings(jax.eval_shape(init, params), mesh),
                        donate_argnums=0)(params)
        if latest is not None:
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
            state, data_state, saved, restored, skipped = checkpoints.restore_intact(abstract, resume_step,
                                                                                 config=stored,
                                                                                 keys=resume_keys(config),
                                                                                 defaults=config_defaults())
            data.set_state(data_state)  # a pipeline that differs is refused before anything moves
            if restored > run.num_steps:  # the written config would not describe the run
                earlier = [s for s in checkpoints.all_steps() if s <= run.num_steps]
                raise ValueError(f"RunConfig.num_steps={run.num_steps} is below step {restored}, which this resume "
                                 f"restores; keep num_steps >= {restored}" + (
                                     f", or go back with --checkpoint {earlier[-1]} (API: resume_step)"
                                     if earlier else ""))
            # said once, for the run (not again for its baseline), before the progress bar starts
            changed = [] if baseline else changed_settings(written_values(workdir) or saved, config, workdir)
            if changed and jax.process_index() == 0:
                print(f"rlvjax.train: resuming with changed settings: {', '.join(changed)}", file=sys.stderr)
        start = int(state.step)
        aside, newer = outputs.set_aside_after(workdir, checkpoints, start)
        if newer and jax.process_index() == 0:
            print(f"rlvjax.train: resuming from step {start}; moved the later steps {newer} to {aside}"
                  + (f" ({'; '.join(skipped)})" if skipped else ""), file=sys.stderr)
        if resume_step is not None:  # the baseline too, now: a resume of an interrupted retraining would not
            outputs.roll_back_baseline(workdir, start)
        jitted = steps.jit_steps(step_setup, mesh, state)
        eval_sampler = PoolSampler.build(step_setup, mesh, state.params, num_samples=run.eval_samples,
                                         temperature=run.eval_temperature) if setup.eval_records else None
        value_sampler = PoolSampler.build(step_setup, mesh, state.params, num_samples=rl.vineppo_samples,
                                          score=False) if advantages_lib.uses_step_values(rl.algorithm) else None
        writer = MetricsWriter(workdir, total_steps=run.num_steps, initial_step=start,
                               enabled=jax.process_index() == 0)
        if latest is not None and jax.process_index() == 0:  # now that the checkpoint has accepted the config
            record_run(workdir, config, setup.records)
        notice.defer()  # from here a SIGTERM is honoured at the next step boundary, with a checkpoint
        history = []
        # the steps in ``state`` and the data's place after them, where metrics.jsonl holds them too (None between a
        # step's update and its metrics row: nothing consistent to save there)
        done, data_at_done = start, data.get_state()
        setup.reward.state.global_step = start  # what a reward reading trainer_state sees until the next grading
        try:
            for step in range(start, run.num_steps):
                state, metrics, logged = _iterate(state, step, setup, jitted, value_sampler, learning_rates)
                done = None
                stopping = metrics["consecutive_nonfinite"] >= optim.max_consecutive_nonfinite  # no eval of those
                if setup.eval_records and not stopping and ((run.eval_every and (step + 1) % run.eval_every == 0)
                                                            or step + 1 == run.num_steps):
                    metrics.update(quick_eval(eval_sampler, state.params, setup.tokenizer, setup.eval_records,
                                              setup.reward, seed=run.seed, conventions=config.conventions))
                history.append(writer.write(step + 1, metrics))
                done, data_at_done = step + 1, data.get_state()
                if (step + 1) % run.log_every == 0:
                    writer.samples(step + 1, logged)
                if stopping:
                    checkpoints.wait()
                    raise cli.RunFailed(_nonfinite_stop(metrics["consecutive_nonfinite"], step, optim, checkpoints,
                                                        workdir))
                checkpoints.check_errors()  # an earlier save that failed stops the run now
                preempted = notice.agreed()
                if (step + 1) % run.checkpoint_every == 0 or step + 1 == run.num_steps or preempted:
                    checkpoints.save(step + 1, state, data_state=data.get_state(), config=stored, force=preempted)
                if preempted:
                    checkpoints.wait()
                    raise cli.Preempted(f"{notice.name}: saved the checkpoint of step {step + 1} in "
                                        f"{checkpoints.directory} and stopped; rerun with --resume to continue")
            checkpoints.wait()  # the last step is on disk before its export, which is then the newer of the two
            # every process sends its shards; process 0 writes; none goes on before it has
            if run.export_final and not outputs.exported(workdir, checkpoints, start):
                params = jax.tree.map(parallel.to_host, state.params)
                if jax.process_index() == 0:
                    save_hf(nnx.merge(setup.graphdef, params), setup.tokenizer, workdir / "final", overwrite=True,
                            files=policy_tokens.export_files(setup.tokenizer, config.verifier, config, rendered),
                            step=run.num_steps)  # overwrite: as the warm start's
                parallel.barrier("final policy exported")
            if notice.agreed():  # a notice during the export: it finished, and the rest waits
                done_now = ("the lambda = 0 baseline is trained and saved; stopped before the report" if baseline else
                            "training is complete and saved; stopped before what follows it (the baseline, the report)")
                raise cli.Preempted(f"{notice.name}: {done_now}; rerun with --resume to do it")
        except cli.UserCodeFailed as e:  # a user's reward raised (an LLM judge timed out): the steps done are kept
            kept = keep_steps_done(checkpoints, done, state, stored, data_at_done,
                                   whose="the lambda = 0 baseline's " if baseline else "")
            raise cli.UserCodeFailed(f"{e}{kept}") from None
        finally:  # on every exit: pending saves complete (a kill -9 is the only way to leave a half-written one)
            checkpoints.wait()
            checkpoints.close()
            writer.close()
    return history


def _iterate(state, step: int, setup: preflight.RunSetup, jitted: steps.JittedSteps, value_sampler: PoolSampler | None,
             learning_rates) -> tuple[steps.TrainState, dict, list[dict]]:
    """One RL^V iteration on the data's next batch: G rollouts per prompt (the verifier's score fused on their live
    caches), their grades, advantages (VinePPO: Monte-Carlo values of every step prefix), and the update L_RL +
    lambda * L_V. Returns the new state, the step's metrics, and its first rollouts as the log shows them."""
    rl, seed, tokenizer, reward = setup.config.rl, setup.config.run.seed, setup.tokenizer, setup.reward
    mesh = setup.mesh
    by_rows = parallel.batch_sharding(mesh, 2)
    t0 = time.perf_counter()
    # Each process reads its own shard; the indices are gathered so that every host sees the global batch (prompts
    # to pad alike, golds to grade all rows; grading is cheap next to sampling).
    batch = [setup.train_records[i] for i in parallel.to_host(np.asarray([r["index"] for r in next(setup.data)]))]
    prompts = encode_prompts(tokenizer, [r["prompt"] for r in batch])
    ids, mask = sampling.left_pad(prompts, pad_id=setup.special.pad_id)  # bucket_width: a bounded set of shapes
    roll = jitted.rollout(state.params, parallel.to_global(ids, by_rows), parallel.to_global(mask, by_rows),
                          jax.random.fold_in(jax.random.key(seed), step), None)
    tokens, lengths, finished, verify_lp = map(parallel.to_host, (roll.tokens, roll.lengths, roll.finished,
                                                                  roll.verify_logprobs))
    t1 = time.perf_counter()
    b, g, n = tokens.shape
    texts = policy_tokens.decode_completions(tokenizer, tokens.reshape(b * g, n), lengths.ravel(), finished.ravel())
    rows = [batch[i // g] for i in range(b * g)]
    before = grading_counts() if reward.states_math_answers else {}
    reward.state.global_step = step  # the steps done, as TRL's trainer_state says
    rewards, correct = (x.reshape(b, g) for x in reward(
        [r["prompt"] for r in rows], texts, rows, policy_tokens.completion_ids(tokens.reshape(b * g, n),
                                                                             lengths.ravel())
    ).truncated_as(finished, rl.reward_if_cut))
    # rollouts graded wrong for want of an answer, an unparseable one, a grader timeout or error
    grading = {f"grade/{k}": v - before[k] for k, v in grading_counts().items()
               if k in ("no_answer", "unparsed", "timeouts", "errors")} if before else {}
    t2 = time.perf_counter()
    if value_sampler is not None:  # VinePPO: Monte-Carlo values of every step prefix, then per-token advantages
        value_fn = vineppo.value_sampler(value_sampler, state.params, tokenizer, seed=seed + 7919 * step,
                                         truncated_reward=rl.reward_if_cut)
        token_adv, value_stats = vineppo.token_advantages(
            value_fn, tokenizer, [prompts[i // g] for i in range(b * g)], [r["gold"] for r in rows],
            tokens.reshape(b * g, n), lengths.ravel(), texts, rewards.ravel(),
            max_steps=rl.vineppo_max_steps, whiten=rl.whiten_advantages, estimator=rl.algorithm)
        token_adv = token_adv.reshape(b, g, n).astype(np.float32)
        update_batch = jitted.build(roll, parallel.to_global(token_adv, parallel.batch_sharding(mesh, 3)),
                                    parallel.to_global(correct, by_rows))
        adv = token_adv.sum(-1) / np.maximum(lengths, 1)
        value_stats["time/value_s"] = time.perf_counter() - t2  # VinePPO's main cost, not the update's
        t_update = time.perf_counter()
    else:
        t_update, value_stats = t2, {}
        update_batch, adv = jitted.prepare(roll, parallel.to_global(rewards, by_rows),
                                           parallel.to_global(correct, by_rows))
        adv = parallel.to_host(adv)
    # a user's estimator (rlvjax's give finite advantages for the finite rewards Rewards lets through)
    if not advantages_lib.is_own(rl.algorithm) and not np.isfinite(adv).all():
        raise cli.UserCodeFailed(f"advantage estimator {rl.algorithm!r} returned non-finite advantages at "
                                 f"step {step + 1} (e.g. 0 / 0 for a group whose rewards are all equal); "
                                 "make it return finite values")
    # the schedule's step at this update's first optimizer step: optax skips non-finite updates
    applied = step * rl.updates_per_step - int(jax.device_get(state.opt_state.total_notfinite))
    state, update_metrics = jitted.update(state, update_batch)
    reward.state.global_step = step + 1  # the eval after it, and the report after training, grade this policy
    update_metrics = jax.device_get(update_metrics)
    t3 = time.perf_counter()
    metrics = {**diagnostics.rollout_stats(rewards, correct, adv, lengths, finished, verify_lp), **update_metrics,
               # skipped (non-finite) updates in a row; optax applies the next one whatever it holds
               "consecutive_nonfinite": int(jax.device_get(state.opt_state.notfinite_count)),
               **grading, **value_stats,
               "learning_rate": float(learning_rates(applied) if callable(learning_rates) else learning_rates),
               "time/rollout_s": t1 - t0, "time/grade_s": t2 - t1, "time/update_s": t3 - t_update,
               "rollout_tokens_per_s": float(lengths.sum()) / (t1 - t0),
               "update_tokens_per_s": float(update_batch.input_ids.size) * rl.num_ppo_epochs / (t3 - t_update)}
    # as eval_samples.jsonl writes it (a rollout the verifier could not score: 0, not NaN)
    p_yes = testtime.Conventions(score="normalized").scores(verify_lp[..., 0], verify_lp[..., 1])
    logged = [{"prompt": batch[i // g]["prompt"], "completion": texts[i], "gold": batch[i // g].get("gold"),
               "reward": float(rewards.flat[i]), "correct": bool(correct.flat[i]), "p_yes": float(p_yes.flat[i])}
              for i in range(min(4, b * g))]
    return state, metrics, logged


def _exported_warm_start(config: Config, workdir: Path, mesh) -> dict:
    """The parameters of the warm start a stopped run had exported to WORKDIR/warm_start, sharded over the mesh."""
    warmed, _ = experiment.build_policy(dataclasses.replace(config.model, hf_dir=str(workdir / "warm_start")))
    params = nnx.to_pure_dict(nnx.state(warmed, nnx.Param))
    del warmed
    return jax.device_put(params, parallel.shardings(params, mesh))


def _warm_start(setup: preflight.RunSetup, params: dict, config: Config, rendered, *, stop) -> dict:
    """The warm start (``WarmStartConfig``: supervised steps on solutions and verdicts) from ``params`` (donated),
    exported to WORKDIR/warm_start; returns its parameters."""
    tokenizer, special, verifier_tokens = setup.tokenizer, setup.special, setup.verifier_tokens
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else special.stop_ids[0]  # the model's
    params = sft.warm_start(setup.graphdef, params, setup.warm_examples, config.warm_start, eos_id=eos,
                            pad_id=special.pad_id, verify_suffix=verifier_tokens.suffix,
                            verdict_ids=(verifier_tokens.yes_id, verifier_tokens.no_id),
                            progress=jax.process_index() == 0, mesh=setup.mesh, remat=config.rl.remat,
                            chunk_size=config.rl.logprob_chunk_size, donate=True, stop=stop)
    gathered = jax.tree.map(parallel.to_host, params)  # every process sends its shards
    if jax.process_index() == 0:
        # overwrite: the run's own folder, replaced whatever made it (an rlvjax before 2026-12-03 did not stamp its
        # exports; check_unused keeps a fresh run off another's)
        save_hf(nnx.merge(setup.graphdef, gathered), tokenizer, setup.workdir / "warm_start", overwrite=True,
                files=policy_tokens.export_files(tokenizer, config.verifier, config, rendered), step=0,
                stamp={"rlvjax_warm_start": outputs.warm_start_id(config)})
    return params


def _nonfinite_stop(nonfinite_run: int, step: int, optim, checkpoints: Checkpointer, workdir: Path) -> str:
    """What a run stopped by non-finite updates says."""
    latest = checkpoints.latest_step()
    return ((f"{nonfinite_run} optimizer updates in a row" if nonfinite_run > 1 else "an optimizer update")
            + f" had a non-finite loss or gradient (the last at step {step + 1}; "
            f"OptimConfig.max_consecutive_nonfinite={optim.max_consecutive_nonfinite}); stopped before saving step "
            f"{step + 1}" + (f", the latest checkpoint (step {latest}) holds finite parameters" if latest is not None
                             else " (no checkpoint saved yet)")
            + f". Find the cause in {workdir / 'metrics.jsonl'} (rewards? a learning rate too high?), then rerun with "
            f"--resume, e.g. with --gin_param 'OptimConfig.learning_rate = {optim.learning_rate / 2:g}'")


def keep_steps_done(checkpoints, done: int | None, state, stored: dict, data_state: dict, *, whose: str = "") -> str:
    """Saves the ``done`` steps in ``state`` (``data_state``: the data's place after them) where no checkpoint holds
    them yet; returns what to tell the user. Nothing is saved where ``done`` is None (the failure came between a
    step's update and its metrics row: a resume from there would lack that row) or on a multi-host job (its other
    hosts may not be at this point to save with it). ``whose``: the run the line names ("the lambda = 0 baseline's
    "), where the run itself is not the one that failed."""
    latest = checkpoints.latest_step() or 0
    if done is None or done <= latest or jax.process_count() > 1:
        return f" ({whose or 'the '}latest checkpoint is step {latest})" if latest else ""
    checkpoints.save(done, state, data_state=data_state, config=stored, force=True)
    checkpoints.wait()
    steps = "1 step done is" if done == 1 else f"{done} steps done are"
    return f"; {whose or 'the '}{steps} saved (checkpoint of step {done}): rerun with --resume once it is fixed"


def record_run(workdir: Path, config: Config, records: tuple[list[dict], list[dict]] | None) -> None:
    """What an invocation runs, once every check has passed: the config, then the records given in memory (as
    given, before their prompts were rendered) in ``WORKDIR/data/``, where the config's task reads them back. The
    config first: rows without it were taken for another project's files, which a rerun refused to replace."""
    config.write(workdir)
    if records is not None:
        (workdir / "data").mkdir(exist_ok=True)
        for name, split in (("train", records[0]), ("eval", records[1])):
            if split:
                sources.write_jsonl(workdir / "data" / f"{name}.jsonl", split)


def train_with_baseline(config: Config, workdir, *, resume: bool = False, resume_step: int | None = None,
                        reward: Rewards | None = None, records: tuple[list[dict], list[dict]] | None = None,
                        hold: contextlib.ExitStack | None = None, command: bool = False
                        ) -> tuple[list[dict], dict[str, Path]]:
    """Train; with ``RunConfig.baseline`` also train the lambda = 0 baseline from the same warm start, in
    ``WORKDIR/baseline_lambda0``. Returns the run's logged metrics and the exported policies by name. Given
    ``hold``, both workdirs stay locked until that stack closes. ``command``: :func:`train`'s."""
    check_local(workdir)  # before Path() makes gs://b/run a gs:/b/run
    workdir = Path(workdir).absolute()  # the baseline's config names the warm start by this path
    history = train(config, str(workdir), resume=resume, resume_step=resume_step, reward=reward, records=records,
                    hold=hold, command=command)
    policies = {name: workdir / name for name in ("warm_start", "final") if (workdir / name).exists()}
    if config.run.baseline:
        baseline = workdir / outputs.BASELINE  # taken back by the run's --checkpoint N (outputs.roll_back_baseline)
        warm = str(policies["warm_start"]) if "warm_start" in policies else None
        train(config.lambda0_baseline(warm), str(baseline), resume=resume, reward=reward, records=records, hold=hold,
              command=command, baseline=True)
        policies["lambda0"] = baseline / "final"
    return history, policies


def run_and_report(config: Config, workdir, *, resume: bool = False, resume_step: int | None = None,
                   command: bool = False) -> dict | None:
    """:func:`train_with_baseline`, then the end-of-run report (``RunConfig.final_eval_samples``), all under the
    workdir's lock: no second process can resume the run while its baseline starts or its report reads it.
    ``command`` (the CLI's): a SIGTERM while a run starts ends the process (:func:`train`), and a Ctrl-C in the
    report ends it as a SIGTERM there does (elsewhere it raises ``KeyboardInterrupt``: a notebook's interrupt must
    not end its kernel)."""
    with contextlib.ExitStack() as hold:
        _, policies = train_with_baseline(config, workdir, resume=resume, resume_step=resume_step, hold=hold,
                                          command=command)
        with preemption.stop_at_once("during the end-of-run report: training is complete and saved; stopped "
                                     "without it; rerun with --resume to do it", ctrl_c=command):
            return report_run(config, workdir, policies)


def report_run(config: Config, workdir, policies: dict[str, Path], *, reward: Rewards | None = None,
               records: tuple[list[dict], list[dict]] | None = None) -> dict | None:
    """The end-of-run report of a trained run (``RunConfig.final_eval_samples``; None when it asks for none),
    unless ``eval.json`` already reports these policies with these settings. ``reward`` and ``records``: the API's
    reward objects and in-memory rows (None: the config's)."""
    if not (config.run.final_eval_samples and config.run.export_final):
        if jax.process_index() == 0 and config.run.export_final:
            outputs.set_aside_stale_report(workdir, policies)
        return None
    reward = reward or Rewards.of(config)  # a reward other than the math one groups answers as strings
    # The eval problems by the file they were written to: the same id when the CLI resumes the API's run, or back
    written = config.task if records is None else outputs.written_task(config.task, workdir, records)
    eval_data = outputs.eval_data_id(written)
    current = outputs.current_report(config, workdir, policies, eval_data,
                                     grouping=reward.grouping(config.conventions.grouping))
    if parallel.primary_says(current is not None):  # a finished run resumed again: hours of sampling, for nothing
        print(f"rlvjax.train: {Path(workdir) / 'eval.json'} already reports these policies with these settings; "
              "not evaluated again (delete it to redo)", file=sys.stderr)
        return current
    try:
        return evaluate.final_report(config, workdir, policies, reward=reward, records=records, eval_data=eval_data)
    except cli.UserCodeFailed as e:  # it said "fix the function" alone, not that the training is kept
        raise cli.UserCodeFailed(f"{e} (in the end-of-run report: training is complete and saved; once it is fixed, a "
                                 "resume does only the report)") from None


def launch(gin_files, gin_params, workdir, *, resume: bool = False, resume_step: int | None = None,
           dry_run: bool = False, print_config: bool = False):
    """What the CLI does once its flags are parsed (tests call it in-process, wrapped in ``cli.run_main``)."""
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; the progress bar says enough
    check_local(workdir)  # before Path() makes gs://b/run a gs:/b/run
    base = None
    if resume and not gin_files:  # the run's own config, with any --gin_param on top (checked at restore)
        try:
            base = stored_config(Path(workdir), resume_step).to_gin()
        except FileNotFoundError:
            # Nothing stored yet: with --gin_param it is a first launch (a sweep's, or one rerun after a SIGTERM at
            # its start), the default config and those flags; with no flags at all, a mistyped --workdir.
            if resume_step is not None or not gin_params:
                raise
    if base is not None:
        cli.parse_gin([], gin_params, search_paths=(GIN_SEARCH_PATH,), base=base, fields=GIN_FIELDS)
    else:
        cli.parse_gin(gin_files or [str(CONFIGS / "default.gin")], gin_params, search_paths=(GIN_SEARCH_PATH,),
                      fields=GIN_FIELDS)
    config = Config.from_gin()
    if resume and gin_files:
        check_steps_kept(config, workdir, gin_params)
    if print_config:
        print(config.to_gin(), end="")
        return None
    if dry_run:
        from rlvjax import dry_run as dry_run_lib

        return dry_run_lib.run(config, echo=True)
    return run_and_report(config.absolute_paths(), workdir, resume=resume, resume_step=resume_step, command=True)


def main(argv):
    del argv  # cli.run refuses positional arguments
    if not FLAGS.workdir.strip():
        raise ValueError("--workdir is empty; pass the run's directory, e.g. --workdir runs/default")
    if FLAGS.dry_run and FLAGS.print_config:
        raise ValueError("--dry_run and --print_config do one thing each; pass one of them")
    if FLAGS.checkpoint is not None and (FLAGS.dry_run or FLAGS.print_config):
        raise ValueError(f"--checkpoint {FLAGS.checkpoint} picks the step a --resume continues from; --dry_run and "
                         "--print_config read the config alone: drop --checkpoint")
    workdir = FLAGS.workdir if FLAGS.workdir.startswith("gs://") else os.path.expanduser(FLAGS.workdir)  # "~/run"
    launch(FLAGS.gin_file, FLAGS.gin_param, workdir, resume=FLAGS.resume, resume_step=FLAGS.checkpoint,
           dry_run=FLAGS.dry_run, print_config=FLAGS.print_config)


if __name__ == "__main__":
    cli.run("rlvjax.train", main)
