"""``python -m rlvjax.evaluate (--workdir W [--policy final|warm_start|lambda0] [--checkpoint N] |
--model_dir D --data F) [--num_samples K] [--max_new_tokens N] [--batch_size R] [--temperature T] [--dtype bfloat16]
[--strategy fixed|adaptive|length|particle ...]``

Samples a K-pool per problem with the fused verifier score (at the run's training temperature unless
``--temperature`` is given), grades it, and writes ``eval.json`` (pass@k, majority / best-of-N / weighted accuracy at
N = 1, 2, 4, ..., K, verifier accuracy / AUROC / calibration, compute-efficiency of weighted over majority voting,
accuracy by level, the temperature and the scoring conventions: ``--score``, ``--grouping``, ``--bon_unparseable``,
``--bon_ties``, see ``testtime.Conventions``), ``scaling.png`` and ``eval_samples.jsonl`` (every completion with its
answer, correctness and p(Yes)). ``--model_dir`` evaluates any HF directory (its own verify question: the built-in
one, asked of whatever model it is). R rows decode at once, the K samples of each prompt queued behind them (one
prefill per prompt, continuous refill); the memory plan is printed and a pool that cannot fit is refused before
anything is compiled.

``--strategy`` prices a test-time strategy (``rlvjax.strategies``) against fixed-N voting on the same pool:
eval.json's report gains ``strategy`` (one point per rule of the sweep: accuracy, tokens and samples per problem, and
fixed-N weighted and majority voting at equal tokens; the tokens needed to reach fixed-N weighted voting at N = K)
and ``compute.png`` plots accuracy against tokens and samples. ``adaptive`` (``--delta``, ``--min_samples``,
``--round_size``, ``--mean_samples``) and ``length`` (``--budgets``, ``--threshold``, over N = 1, 2, ..., K samples)
are replayed on the pool, which gives their live runs' results for these samples exactly; ``particle``
(``--particles``, ``--step_delimiter``, ``--max_steps``, ``--resample``, ``--reject_fraction``,
``--weight_temperature``) runs live.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from rlvjax import (
    eval_flags,
    eval_out,
    experiment,
    outputs,
    parallel,
    preemption,
    run_sampling,
    sampling,
    testtime,
)
from rlvjax.config import Config, check_local
from rlvjax.data import pipeline, sources
from rlvjax.data.prompts import format_records
from rlvjax.eval_flags import BASELINE_POLICY
from rlvjax.model.hf import load_hf, not_a_model_dir
from rlvjax.pool import EVAL_PROMPTS, PoolSampler, sample_pool
from rlvjax.reports import assemble, report, summary, temperature_key, write_report
from rlvjax.rewards.math import grading_counts
from rlvjax.rewards.registry import Rewards
from rlvjax.rewards.registry import resolve as resolve_reward
from rlvjax.rl import steps, verifier
from rlvjax.rl.config import RLConfig
from rlvjax.rl.verifier import VerifierConfig
from rlvjax.strategies.flags import strategy_rules


def evaluate_policy(model, tokenizer, records: list[dict], rl: RLConfig, mesh, *, num_samples: int,
                    seed: int = 0, temperature: float | None = None, rows: int | None = None,
                    conventions: testtime.Conventions = testtime.Conventions(),
                    verify: VerifierConfig = VerifierConfig(), reward: Rewards | None = None,
                    samplers: dict | None = None) -> tuple[dict, dict]:
    """``(report, pool)`` of one policy on ``records``, sampled with the run's sampling settings at ``temperature``
    (None: ``rl.temperature``), ``rows`` at a time (``PoolSampler``'s), asked the run's verify question and graded
    by ``reward`` (None: the math reward); the report records the temperature and the grouping the votes used.
    ``samplers``: a dict the caller keeps across the policies it evaluates (``PoolSampler.for_model``'s)."""
    temperature = rl.temperature if temperature is None else temperature
    sampler, params = PoolSampler.for_model(model, tokenizer, rl, mesh, num_samples=num_samples, verify=verify,
                                            temperature=temperature, rows=rows, samplers=samplers)
    reward = reward or Rewards(("math",), threshold=verify.threshold)
    before = grading_counts()
    pool = sample_pool(sampler, params, tokenizer, records, reward, seed=seed)
    conventions = dataclasses.replace(conventions, grouping=reward.grouping(conventions.grouping))  # as reported
    pool["classes"] = testtime.pool_classes(pool, conventions.grouping)  # once: report, strategies
    # Grades and vote classes the grader could not decide in time (or at all) count as wrong / apart: said, not hidden
    failed = {k: v - before[k] for k, v in grading_counts().items() if k in ("timeouts", "errors")}
    if any(failed.values()):
        print(f"warning: the grader timed out on {failed['timeouts']} and failed on {failed['errors']} comparison(s), "
              "counted as not equal (eval.json: grading); rerun on a less loaded machine to decide them",
              file=sys.stderr)
    rep = report(pool, [r.get("level") for r in records], seed=seed, conventions=conventions)
    return {"temperature": temperature, **rep, "grading": failed}, pool


def abstract_checkpoint(config: Config):
    """``(graphdef, abstract TrainState, tokenizer)`` of a run from its ``config``: what a checkpoint of it holds,
    shapes and dtypes only. The base model's weights are not read (its config.json and tokenizer are enough)."""
    from flax import nnx

    from rlvjax.model.transformer import Transformer

    cfg, tokenizer = experiment.abstract_policy(config.model, config.verifier.question)
    if tokenizer is None:
        where = config.model.hf_dir or config.model.config_json
        raise FileNotFoundError(f"no usable tokenizer for this run's model at {where}; restore the model directory "
                                "the run was trained from (its config.json and tokenizer files are enough)")
    rl, run = config.rl, config.run
    tx = config.optim.make(run.num_steps * rl.updates_per_step)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))
    state = jax.eval_shape(lambda p: steps.init_state(p, tx, seed=run.seed, keep_reference=rl.beta > 0),
                           nnx.to_pure_dict(params))
    return graphdef, state, tokenizer


def load_checkpoint_policy(workdir: Path, step: int | None, config: Config, *, on_host: bool = False):
    """``(model, tokenizer)`` of checkpoint ``step`` of the run in ``workdir``, rebuilt from its ``config``: its
    weights alone, on the default device as ``load_hf`` puts them (``on_host``: host arrays, for an export)."""
    from flax import nnx

    from rlvjax.checkpoint import Checkpointer

    graphdef, state, tokenizer = abstract_checkpoint(outputs.moved_base(workdir, config))
    with Checkpointer(workdir / "checkpoints", read_only=True) as checkpoints:
        params = checkpoints.restore_params(state.params, step)
    return nnx.merge(graphdef, params if on_host else jax.device_put(params)), tokenizer


def final_report(config: Config, workdir, policies: dict[str, Path], *, reward: Rewards | None = None,
                 records: tuple[list[dict], list[dict]] | None = None, eval_data: str | None = None) -> dict:
    """Evaluate HF policy directories on ``config``'s eval set with ``RunConfig.final_eval_samples`` samples per
    problem, at the training temperature (the headline) and at ``RunConfig.eval_temperature`` when it differs; write
    eval.json + scaling.png, print the summary. ``reward`` / ``records`` (the API's reward objects and in-memory
    ``(train, eval)`` rows): None, the config's. ``eval_data``: what eval.json says the problems are
    (``outputs.eval_data_id``; None: the config's task's)."""
    rl, run = config.rl, config.run
    mesh = parallel.make_mesh(config.mesh)
    temperatures = tuple(dict.fromkeys([rl.temperature, run.eval_temperature or rl.temperature]))
    reward = reward or Rewards.of(config)
    reports, correct = {}, {}
    samplers = {}  # the policies share one engine per temperature: traced and compiled once, not once a policy
    for name, path in policies.items():  # in the run's precision, as trained and as the memory plan counts it
        reward.state.global_step = 0 if name == "warm_start" else run.num_steps  # the RL steps behind the policy
        model, tokenizer = load_hf(path, dtype=jnp.dtype(config.model.dtype), compute_dtype=config.model.compute_dtype)
        model = parallel.place_model(model, mesh)  # sharded, not whole on device 0 beside its share
        eval_records = experiment.build_eval_records(config.task, tokenizer, None if records is None else records[1])
        for t in temperatures:
            rep, pool = evaluate_policy(model, tokenizer, eval_records, rl, mesh, num_samples=run.final_eval_samples,
                                        seed=run.seed, temperature=t, conventions=config.conventions,
                                        verify=config.verifier, reward=reward, samplers=samplers)
            reports.setdefault(temperature_key(t), {})[name] = rep
            correct.setdefault(temperature_key(t), {})[name] = pool["correct"]
    eval_data = eval_data or outputs.eval_data_id(config.task)
    evaluation = {**assemble(reports, correct, train_temperature=rl.temperature,
                             headline_temperature=temperatures[0], seed=run.seed),
                  "policies": outputs.exports(policies), "eval_data": eval_data}
    if jax.process_index() == 0:
        json_path, png_path = write_report(evaluation, workdir)
        print(summary(evaluation))
        print(f"report: {json_path}\nplot:   {png_path}")
    return evaluation


def flag_rewards(names: str) -> Rewards:
    """``--reward``'s functions (comma-separated registered names or "module:function"), summed; a completion is
    correct where the sum is >= 0.5 (1/0 and +1/-1 rewards alike)."""
    listed = tuple(name.strip() for name in names.split(",") if name.strip())
    if not listed:
        raise ValueError("--reward is empty; name the reward functions to grade with, e.g. --reward math or "
                         "--reward my_rewards:accuracy")
    return Rewards(listed, functions=[resolve_reward(name, "--reward") for name in listed])


def check_policy(workdir: Path, policy: str, flag: str) -> None:
    """One line when ``--policy flag`` names no exported model ``policy`` of the run (a typo, or warm_start in a run
    without one, or a baseline not finished)."""
    exported = lambda d: (d / "config.json").is_file() and any(d.glob("*.safetensors"))
    if not exported(workdir / policy):
        saved = sorted(d.name for d in workdir.iterdir() if d.is_dir() and exported(d))
        saved += [BASELINE_POLICY] if exported(workdir / outputs.BASELINE / "final") else []
        raise FileNotFoundError(f"--policy {flag}: {workdir} holds no exported policy {policy}/ (it has "
                                f"{', '.join(saved) or 'none'}); pass one of those, or --checkpoint N for a saved "
                                "step")


def main(argv):
    # Until the report is written nothing is: a notice or a Ctrl-C ends the process at once with one line, exit 130
    # (a SIGTERM was 143, no word; raising inside JAX segfaulted at exit). _evaluate raises instead while it writes.
    # Inside main, not around cli.run: leaving the block put back the default handler over cli's once-finished one.
    with preemption.stop_at_once("while it evaluated; nothing was written", ctrl_c=True, command="rlvjax.evaluate",
                                 code=130):
        _evaluate(argv)


def _evaluate(argv):
    del argv
    from absl import flags, logging

    from rlvjax import budget, memory
    from rlvjax.checkpoint import Checkpointer

    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    eval_flags.check(f)
    # A multi-host job (RLVJAX_COORDINATOR & co., as for train): every process samples its share, process 0 writes.
    parallel.initialize_distributed(parallel.MeshConfig())  # before anything touches a device
    own = f.get_flags_for_module(f.find_module_defining_flag("workdir"))
    parallel.check_same_settings({f"--{flag.name}": flag.value for flag in own})
    if f.strategy == "particle" and jax.process_count() > 1:
        raise ValueError("--strategy particle runs on one process: evaluate without RLVJAX_COORDINATOR (on one host), "
                         "or pick fixed, adaptive or length")
    if f.workdir:
        workdir, policy = Path(f.workdir), f.policy
        if not (workdir / "checkpoints").is_dir():
            raise FileNotFoundError(f"--workdir {workdir} is not a training run (no checkpoints/ in it); point it at "
                                    "the --workdir of a run, or pass an HF directory as --model_dir")
        if policy == BASELINE_POLICY:  # a run of its own in the workdir: its final policy, or its --checkpoint N
            if not (workdir / outputs.BASELINE / "checkpoints").is_dir():
                raise FileNotFoundError(f"--policy {policy}: {workdir} holds no lambda = 0 baseline "
                                        f"({outputs.BASELINE}/: RunConfig.baseline was off, or it has not started)")
            workdir, policy = workdir / outputs.BASELINE, "final"  # its evaluations go to its own eval/, and
            # follow its steps when a --checkpoint N takes the run (and so the baseline) back
        name = f"step_{f.checkpoint}" if f.checkpoint is not None else f.policy
        name = f"{BASELINE_POLICY}_{name}" if f.checkpoint is not None and policy != f.policy else name
        model_path = workdir / "checkpoints" / str(f.checkpoint) if f.checkpoint is not None else workdir / policy
        # other problems than the run's own go beside its report on them, not over it
        out = Path(f.out or workdir / "eval" / (f"{name}-{Path(f.data).stem}" if f.data else name))
    else:
        if outputs.is_run(Path(f.model_dir)):  # its config.json is the run's config, not a model's
            raise ValueError(f"--model_dir {f.model_dir} is a training run; pass it as --workdir (its exported "
                             f"policy: --model_dir {Path(f.model_dir) / 'final'})")
        if not (Path(f.model_dir) / "config.json").is_file():
            raise FileNotFoundError(f"--model_dir: {not_a_model_dir(f.model_dir)}")
        name, model_path = Path(f.model_dir).resolve().name, Path(f.model_dir)
        out = Path(f.out or Path("eval") / f"{name}-{Path(f.data).stem}")
    check_local(out, "--out")
    eval_out.check_out(out)  # before minutes of sampling, not after
    if f.out is None:  # a default --out is named after the model directory: two .../final share one
        eval_out.check_same_model(out, model_path, f.data, f.data_split, f.data_subset, by_export=not f.workdir)
    eval_out.check_writable(out)
    if f.workdir:
        stored = Checkpointer(workdir / "checkpoints", read_only=True).read_config(f.checkpoint)
        run_config = outputs.moved_data(workdir, stored)
        rl, verify = run_config.rl, run_config.verifier
        try:
            reward = flag_rewards(f.reward) if f.reward is not None else Rewards.of(run_config)
        except ValueError as e:  # the run's own reward function is not importable here
            raise ValueError(f"{e}{'' if f.reward is not None else '; or grade with --reward (e.g. --reward math)'}"
                             ) from None
        # the RL steps behind what is evaluated, for a reward that reads trainer_state
        reward.state.max_steps = run_config.run.num_steps
        reward.state.global_step = f.checkpoint if f.checkpoint is not None else \
            0 if f.policy == "warm_start" else run_config.run.num_steps
        cache = run_config.run.compilation_cache_dir
    else:
        # Graded at the rewards' own threshold: the stored one is on the training reward's scale (a +-1 reward's 0
        # made every completion correct here).
        reward = flag_rewards(f.reward or "math")
        cache = experiment.RunConfig.compilation_cache_dir
    # Before the first compile: evaluating a checkpoint of a run, or the same model again, reuses its programs.
    experiment.use_compilation_cache(cache if f.compilation_cache is None else f.compilation_cache)
    trained = {} if f.workdir else run_sampling.load(f.model_dir)  # an export's run: its prompt format, T and length
    sampled = run_config.rl if f.workdir else RLConfig(temperature=trained.get("temperature", 1.0),
                                                       max_new_tokens=trained.get("max_new_tokens", 1024),
                                                       top_p=trained.get("top_p", 1.0),
                                                       top_k=trained.get("top_k", 0))
    top_p = sampled.top_p if f.top_p is None else f.top_p  # the run's (its export's), as it trained
    top_k = sampled.top_k if f.top_k is None else f.top_k
    conventions = testtime.Conventions(score=f.score, grouping=f.grouping, unparseable=f.bon_unparseable,
                                       ties=f.bon_ties)
    new_tokens = f.max_new_tokens or sampled.max_new_tokens
    # the precision it samples in (a checkpoint: its run's compute, as --policy's export without --dtype)
    default_dtype = eval_out.precision(run_config.model.dtype, run_config.model.compute_dtype) if f.workdir else \
        "float32"
    settings = eval_out.eval_settings(num_samples=f.num_samples, temperature=f.temperature or sampled.temperature,
                                      top_p=top_p, top_k=top_k, max_new_tokens=new_tokens, seed=f.seed,
                                      conventions=conventions,
                                      strategy=f.strategy, rules=strategy_rules(f, f.num_samples, new_tokens),
                                      reward=f.reward, raw_prompts=f.raw_prompts, dtype=f.dtype or default_dtype)
    # what an older evaluation of this run ran with, where its eval.json did not record it (or recorded no --dtype)
    ran_with = {"dtype": default_dtype, **({"top_p": sampled.top_p, "top_k": sampled.top_k} if f.workdir else {})}
    if f.out is None:  # before minutes of sampling: the same folder with other settings holds another report
        eval_out.check_same_settings(out, settings, ran_with=ran_with)
    weights = eval_out.snapshot(model_path)  # a training run may re-export it or go back past it while it is sampled
    if f.workdir:
        if f.checkpoint is not None:
            model, tokenizer = load_checkpoint_policy(workdir, f.checkpoint, run_config)
        else:
            check_policy(workdir, policy, f.policy)
            spec = run_config.model  # the run's precision unless --dtype says otherwise (as its end-of-run report)
            dtype, compute = (spec.dtype, spec.compute_dtype) if f.dtype is None else (f.dtype, None)
            model, tokenizer = load_hf(workdir / policy, dtype=jnp.dtype(dtype), compute_dtype=compute)
    else:
        model, tokenizer = load_hf(f.model_dir, dtype=jnp.dtype(f.dtype or "float32"))
        rl = dataclasses.replace(sampled, temperature=settings["temperature"])
        verify = verifier.load_config(f.model_dir)  # the question it was trained with
    rl = dataclasses.replace(rl, top_p=top_p, top_k=top_k)
    if f.max_new_tokens is not None:
        rl = dataclasses.replace(rl, max_new_tokens=f.max_new_tokens)
    if f.data:
        prompt_format = ("as_is" if f.raw_prompts else run_sampling.of_checkpoint(stored, run_config) if f.workdir
                         else trained.get("prompt_format", "math"))
        loaded, stats = sources.load_records(f.data, split=f.data_split, name=f.data_subset,
                                             require_gold=reward.states_math_answers, split_knob="--data_split",
                                             name_knob="--data_subset")
        records = format_records(loaded, tokenizer, prompt_format)
        raw = "" if prompt_format == "as_is" else "pass --raw_prompts if they are already in the model's format, "
        experiment.check_encodable(tokenizer, records, "--data", fix=f"evaluate a model whose tokenizer covers them, "
                                   f"{raw}or remove them")
    else:
        stats = None
        records = experiment.build_eval_records(run_config.task, tokenizer)
        if not records:
            raise ValueError(f"--workdir {workdir}: the run has no eval problems (TaskSpec.eval_file / num_eval); "
                             "pass --data FILE")
    reward.check_columns(records, "--data" if f.data else "eval")  # before minutes of sampling, not after
    parallel.check_same_settings({"the problems": pipeline.fingerprint(records)})
    reward.probe(records)
    mesh = parallel.make_mesh(parallel.MeshConfig())
    model = parallel.place_model(model, mesh)  # sharded, not whole on device 0 beside its share
    longest = memory.longest_prompt(tokenizer, [r["prompt"] for r in records])
    prompt_tokens = sampling.bucket_width(longest)
    verify_tokens = len(verifier.tokens(tokenizer, verify.question, chat=verify.chat).suffix)
    experiment.check_positions(model.config, longest, rl.max_new_tokens, verify_tokens, knob="--max_new_tokens",
                               fix="lower --max_new_tokens or evaluate shorter prompts")
    rules = strategy_rules(f, f.num_samples, rl.max_new_tokens, tokenizer)
    prompts = memory.eval_prompts(mesh, len(records))  # capped at EVAL_PROMPTS, padded to the data axes
    particles = max((r.particles for r in rules), default=0) if f.strategy == "particle" else 0
    plan = memory.eval_plan(model.config, mesh, prompts=prompts, samples=f.num_samples,
                            rows=min(f.batch_size, prompts * f.num_samples), prompt_tokens=prompt_tokens,
                            new_tokens=rl.max_new_tokens, verify_tokens=verify_tokens,
                            particle_rows=min(len(records), EVAL_PROMPTS) * particles,  # ``Policy.batches``
                            particles=particles, dtype_flag=f.checkpoint is None)
    limit = budget.device_limit()
    if jax.process_index() == 0:
        print(plan.table(limit), flush=True)
    budget.check(plan, limit)  # before anything is compiled
    temperature = f.temperature or rl.temperature  # the headline temperature unless asked otherwise
    rep, pool = evaluate_policy(model, tokenizer, records, rl, mesh, num_samples=f.num_samples, seed=f.seed,
                                temperature=temperature, rows=f.batch_size, conventions=conventions, verify=verify,
                                reward=reward)
    if rules:
        from rlvjax.strategies import report as strategy_report
        from rlvjax.strategies.policy import Policy

        policy = Policy.build(model, tokenizer, rl, verify=verify, reward=reward, conventions=conventions,
                              temperature=temperature)
        rep["strategy"] = strategy_report.evaluate(f.strategy, rules, rep, pool, policy=policy, records=records,
                                                   seed=f.seed)
    evaluation = assemble({temperature_key(temperature): {name: rep}}, {},
                          train_temperature=trained.get("temperature") if f.model_dir else rl.temperature,
                          headline_temperature=temperature)  # an rlvjax export's from its rlvjax_sampling.json
    evaluation["evaluated"] = eval_out.evaluated(out, model_path, f.data, f.data_split, f.data_subset)
    evaluation["evaluated"]["settings"] = settings  # what a later evaluation into this --out must match to replace it
    if stats is not None:  # how --data was read: its rows left out for want of a gold answer (logged), its prompts
        evaluation["evaluated"].update(data_rows=stats.rows, data_skipped=list(stats.bad_gold_rows),
                                       prompt_format=prompt_format)
    if jax.process_index():
        return

    def still_current():  # under the folder's report lock, just before the files move in
        eval_out.check_unchanged(model_path, weights)
        if f.out is None:  # another model's evaluation may have moved into this default --out meanwhile
            eval_out.check_same_model(out, model_path, f.data, f.data_split, f.data_subset, by_export=not f.workdir)
            eval_out.check_same_settings(out, settings, ran_with=ran_with)

    with preemption.interrupt_on_sigterm(ctrl_c=True):  # plain Python: the staged files are removed, one line
        json_path, png_path = write_report(evaluation, out, samples=(pool, records, conventions), check=still_current)
    samples_path = out / "eval_samples.jsonl"
    print(summary(evaluation))
    print(f"report:  {json_path}\nplot:    {png_path}\nsamples: {samples_path}")
    if rules:
        print(strategy_report.describe(rep["strategy"]))
        print(f"compute: {out / 'compute.png'}")


if __name__ == "__main__":
    from absl import flags

    from rlvjax import cli

    eval_flags.define()
    flags.adopt_module_key_flags(eval_flags)  # --help lists them
    cli.run("rlvjax.evaluate", main)
