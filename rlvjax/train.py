"""``python -m rlvjax.train [--gin_file F ...] [--gin_param 'k=v' ...] [--workdir D] [--resume] [--compare_baseline]``

The RL^V iteration, top to bottom: sample -> grade -> advantages -> update (L_RL + lambda * L_V) -> log ->
checkpoint -> periodic eval; then the warm-start-vs-trained report. Everything configurable is a gin-bound
dataclass (see ``experiment.py``, ``rl/steps.py``, ``parallel.py``); with no flags this runs
``configs/default.gin`` on the CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import gin
import jax
import numpy as np
from absl import app, flags, logging
from flax import nnx
from jax.experimental import multihost_utils

from rlvjax import cli, evaluate, experiment, parallel, sampling, sft
from rlvjax.checkpoint import Checkpointer
from rlvjax.data import pipeline
from rlvjax.metrics import MetricsWriter
from rlvjax.model.hf import load_hf, save_hf
from rlvjax.rewards.math import grade_completions
from rlvjax.rl import advantages as advantages_lib
from rlvjax.rl import diagnostics, steps, vineppo

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the repository's configs/ (editable install)
gin.add_config_file_search_path(str(CONFIGS.parent))  # `include 'configs/base.gin'` from any working directory
FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", None, "gin config files (default: configs/default.gin)")
flags.DEFINE_multi_string("gin_param", [], "gin bindings, e.g. 'RLConfig.lambda_verify = 0.5'")
flags.DEFINE_string("workdir", "runs/default", "where checkpoints, metrics.jsonl, TensorBoard logs and reports go")
flags.DEFINE_bool("resume", False, "continue from the latest checkpoint in --workdir")
flags.DEFINE_bool("compare_baseline", False, "also train lambda_verify = 0 from the same warm start and report it")


def to_global(x: np.ndarray, sharding) -> jax.Array:
    """A host array that every process holds whole -> one global array laid out by ``sharding``."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(x: jax.Array) -> np.ndarray:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def train(workdir: str, *, resume: bool = False) -> list[dict]:
    """Run the configured RL^V training; returns the logged metrics of the steps it ran."""
    run, rl, optim, mesh_cfg = experiment.RunConfig(), steps.RLConfig(), steps.OptimConfig(), parallel.MeshConfig()
    parallel.initialize_distributed(mesh_cfg)
    mesh = parallel.make_mesh(mesh_cfg)
    parallel.check_batch(run.batch_size, mesh, "batch_size (prompts per step)")
    model, tokenizer = experiment.build_policy(experiment.ModelSpec())
    train_records, eval_records = experiment.build_records(experiment.TaskSpec(), tokenizer)
    vt = experiment.verifier_tokens(tokenizer)
    checkpoints = Checkpointer(Path(workdir).absolute() / "checkpoints", max_to_keep=run.max_to_keep)
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    warm = sft.WarmStartConfig()
    resuming = resume and checkpoints.latest_step() is not None
    if warm.num_steps and not resuming:
        pairs = experiment.warm_start_pairs(experiment.TaskSpec(), warm.num_examples, warm.mistake_rate, warm.seed)
        params = sft.warm_start(graphdef, params, tokenizer, pairs, warm, eos_id=tokenizer.eos_token_id,
                                pad_id=vt.pad_id, verify_suffix=vt.suffix, verdict_ids=(vt.yes_id, vt.no_id),
                                progress=jax.process_index() == 0)
        if jax.process_index() == 0:
            save_hf(nnx.merge(graphdef, params), tokenizer, Path(workdir) / "warm_start")
    tx = optim.make(run.num_steps * rl.num_ppo_epochs * rl.num_minibatches)
    statics = experiment.statics(graphdef, tx, rl, tokenizer)
    state = steps.init_state(params, tx, seed=run.seed, keep_reference=rl.beta > 0)
    state = jax.device_put(state, parallel.shardings(state, mesh))
    indexed = [{**r, "index": i} for i, r in enumerate(train_records)]
    data = pipeline.make_iterator(indexed, batch_size=run.batch_size // jax.process_count(), seed=run.seed,
                                  shard_index=jax.process_index(), shard_count=jax.process_count())
    config = experiment.config_dict()
    if resuming:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        state, data_state, _ = checkpoints.restore(abstract, config=config)
        data.set_state(data_state)
    jitted = steps.jit_steps(statics, mesh, state)
    step_values = advantages_lib.uses_step_values(rl.algorithm)
    start = int(state.step)
    writer = MetricsWriter(workdir, total_steps=run.num_steps, initial_step=start, enabled=jax.process_index() == 0)
    rows2 = parallel.batch_sharding(mesh, 2)
    history = []
    for step in range(start, run.num_steps):
        t0 = time.perf_counter()
        # Each process reads its own shard; the indices are gathered so that every host sees the global batch
        # (prompts to pad alike, golds to grade all rows; grading is cheap next to sampling).
        batch = [train_records[i] for i in to_host(np.asarray([r["index"] for r in next(data)]))]
        prompts = experiment.encode_prompts(tokenizer, [r["prompt"] for r in batch])
        ids, mask = sampling.left_pad(prompts, pad_id=vt.pad_id)
        roll = jitted.rollout(state.params, to_global(ids, rows2), to_global(mask, rows2),
                              jax.random.fold_in(jax.random.key(run.seed), step))
        tokens, lengths, finished, verify_lp = map(to_host, (roll.tokens, roll.lengths, roll.finished,
                                                             roll.verify_logprobs))
        t1 = time.perf_counter()
        b, g, n = tokens.shape
        texts = experiment.decode_completions(tokenizer, tokens.reshape(b * g, n), lengths.ravel(), finished.ravel())
        golds = [r["gold"] for r in batch for _ in range(g)]
        rewards = grade_completions(texts, golds)[0].astype(np.float32).reshape(b, g)
        t2 = time.perf_counter()
        if step_values:  # VinePPO: Monte-Carlo values of every step prefix, then per-token advantages
            value_fn = vineppo.value_sampler(nnx.merge(graphdef, state.params), tokenizer, rl, vt,
                                             seed=run.seed + 7919 * step)
            token_adv, _ = vineppo.token_advantages(
                value_fn, tokenizer, [prompts[i // g] for i in range(b * g)], golds, tokens.reshape(b * g, n),
                lengths.ravel(), texts, rewards.ravel(), max_steps=rl.vineppo_max_steps)
            token_adv = token_adv.reshape(b, g, n).astype(np.float32)
            update_batch = jitted.build(roll, to_global(token_adv, parallel.batch_sharding(mesh, 3)),
                                        to_global(rewards, rows2))
            adv = token_adv.sum(-1) / np.maximum(lengths, 1)
        else:
            update_batch, adv = jitted.prepare(roll, to_global(rewards, rows2))
            adv = to_host(adv)
        state, update_metrics = jitted.update(state, update_batch)
        update_metrics = jax.device_get(update_metrics)
        t3 = time.perf_counter()
        metrics = {**diagnostics.rollout_stats(rewards, adv, lengths, finished, verify_lp), **update_metrics,
                   "time/rollout_s": t1 - t0, "time/grade_s": t2 - t1, "time/update_s": t3 - t2,
                   "rollout_tokens_per_s": float(lengths.sum()) / (t1 - t0),
                   "update_tokens_per_s": float(update_batch.input_ids.size) * rl.num_ppo_epochs / (t3 - t2)}
        if eval_records and ((run.eval_every and (step + 1) % run.eval_every == 0) or step + 1 == run.num_steps):
            metrics.update(evaluate.quick_eval(statics, state.params, tokenizer, eval_records, mesh,
                                               num_samples=run.eval_samples, seed=run.seed))
        history.append(writer.write(step + 1, metrics))
        if (step + 1) % run.log_every == 0:
            p_yes = 1.0 / (1.0 + np.exp(verify_lp[..., 1] - verify_lp[..., 0]))
            writer.samples(step + 1, [{"prompt": batch[i // g]["prompt"], "completion": texts[i],
                                       "gold": batch[i // g]["gold"], "reward": float(rewards.flat[i]),
                                       "p_yes": float(p_yes.flat[i])} for i in range(min(4, b * g))])
        if (step + 1) % run.checkpoint_every == 0 or step + 1 == run.num_steps:
            checkpoints.save(step + 1, state, data_state=data.get_state(), config=config)
    if run.export_final and jax.process_index() == 0:
        save_hf(nnx.merge(graphdef, jax.device_get(state.params)), tokenizer, Path(workdir) / "final")
    checkpoints.wait()
    checkpoints.close()
    writer.close()
    return history


def final_report(workdir, policies: dict[str, Path], *, num_samples: int, seed: int) -> dict:
    """Evaluate HF policy directories on the configured task's eval set; write eval.json + scaling.png, print."""
    rl, mesh = steps.RLConfig(), parallel.make_mesh(parallel.MeshConfig())
    reports = {}
    for name, path in policies.items():
        model, tokenizer = load_hf(path)
        records = experiment.build_records(experiment.TaskSpec(), tokenizer)[1]
        reports[name] = evaluate.evaluate_policy(model, tokenizer, records, rl, mesh, num_samples=num_samples,
                                                 seed=seed)[0]
    if jax.process_index() == 0:
        json_path, png_path = evaluate.write_report(reports, workdir)
        print(evaluate.summary_table(reports))
        print(f"report: {json_path}\nplot:   {png_path}")
    return reports


def run_and_report(workdir, *, resume: bool = False, compare_baseline: bool = False) -> dict | None:
    """Train; optionally train the lambda = 0 baseline from the same warm start; then the end-of-run report."""
    workdir = Path(workdir)
    train(str(workdir), resume=resume)
    run = experiment.RunConfig()
    policies = {name: workdir / name for name in ("warm_start", "final") if (workdir / name).exists()}
    if compare_baseline:
        baseline = workdir / "baseline_lambda0"
        with gin.unlock_config():
            gin.bind_parameter("RLConfig.lambda_verify", 0.0)
            if "warm_start" in policies:  # the same starting point, not a second warm start
                gin.bind_parameter("ModelSpec.hf_dir", str(policies["warm_start"]))
                gin.bind_parameter("WarmStartConfig.num_steps", 0)
        train(str(baseline), resume=resume)
        policies["lambda0"] = baseline / "final"
    if not (run.final_eval_samples and run.export_final):
        return None
    return final_report(workdir, policies, num_samples=run.final_eval_samples, seed=run.seed)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; the progress bar says enough
    gin.parse_config_files_and_bindings(FLAGS.gin_file or [str(CONFIGS / "default.gin")], FLAGS.gin_param)
    run_and_report(FLAGS.workdir, resume=FLAGS.resume, compare_baseline=FLAGS.compare_baseline)


if __name__ == "__main__":
    app.run(cli.run_main("rlvjax.train", main))
