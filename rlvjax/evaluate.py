"""``python -m rlvjax.evaluate (--workdir W [--policy final|warm_start] [--checkpoint N] | --model_dir D --data F)
[--num_samples K] [--max_new_tokens N] [--batch_size R] [--temperature T] [--dtype bfloat16]
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
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rlvjax import experiment, parallel, sampling, testtime
from rlvjax.config import Config
from rlvjax.model.hf import load_hf
from rlvjax.pool import EVAL_PROMPTS, PoolSampler, sample_pool
from rlvjax.rewards.registry import Rewards
from rlvjax.rl import diagnostics, steps, verifier
from rlvjax.rl.verifier import VerifierConfig

STRATEGIES = ("majority", "best_of_n", "weighted")
def calibration_error(p_yes: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of p(Yes) as a probability of correctness, over equal-width bins."""
    index = np.minimum((p_yes * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = index == b
        if inside.any():
            total += inside.mean() * abs(p_yes[inside].mean() - correct[inside].mean())
    return float(total)


def report(pool: dict[str, np.ndarray], levels: list | None = None, *, num_subsets: int = 1000, seed: int = 0,
           conventions: testtime.Conventions = testtime.Conventions()) -> dict:
    """Everything ``eval.json`` holds for one policy, from a graded pool, under ``conventions`` (recorded)."""
    correct = pool["correct"].astype(bool)
    p, k = correct.shape
    ns = [2 ** i for i in range(int(np.log2(k)) + 1)]
    score = conventions.scores(pool["yes_logp"], pool["no_logp"])
    classes = np.stack([testtime.answer_classes(list(row), grouping=conventions.grouping) for row in pool["answers"]])
    curves = {s: testtime.scaling_curve(classes, score, correct, ns, s, num_subsets, seed, conventions=conventions)
              for s in STRATEGIES}
    pass_at = testtime.pass_at_k(np.full(p, k), correct.sum(1), np.asarray(ns)[:, None]).mean(axis=1)
    ver = diagnostics.verifier_stats(pool["yes_logp"].ravel(), pool["no_logp"].ravel(), correct.ravel())
    out = {
        "num_problems": p, "num_samples": k, "ns": ns, "conventions": dataclasses.asdict(conventions),
        "pass@1": float(correct.mean()), "pass@1_ci95": testtime.bootstrap_ci(correct.mean(axis=1), seed=seed),
        "pass@k": dict(zip(map(str, ns), map(float, pass_at))),
        "accuracy": {s: dict(zip(map(str, ns), map(float, c))) for s, c in curves.items()},
        "verifier": {**ver, "within_problem_auroc": diagnostics.within_problem_auroc(score, correct),
                     "calibration_error": calibration_error(score.ravel(), correct.ravel())},
        "compute_efficiency_weighted_vs_majority": testtime.compute_efficiency(
            ns, curves["weighted"], curves["majority"]).as_dict(),
    }
    if levels is not None and any(level is not None for level in levels):
        by_level = {}
        for level in sorted({lv for lv in levels if lv is not None}):
            rows = np.asarray([lv == level for lv in levels])
            weighted = testtime.scaling_curve(classes[rows], score[rows], correct[rows], [k], "weighted",
                                              num_subsets, seed, conventions=conventions)
            by_level[str(level)] = {"problems": int(rows.sum()), "pass@1": float(correct[rows].mean()),
                                    f"weighted@{k}": float(weighted[0])}
        out["by_level"] = by_level
    return out


def compare(rlv: dict, baseline: dict, rlv_correct: np.ndarray, baseline_correct: np.ndarray, *,
            seed: int = 0) -> dict:
    """The paper's headline comparison of an RL^V policy with its lambda = 0 baseline on the same problems:
    pass@1 of each and their paired difference with 95% bootstrap intervals over problems; how many samples RL^V's
    weighted vote needs to reach the baseline's best majority vote (``efficiency``: the paper's 8-32x), and how
    many it needs to reach RL^V's own (the same-policy ratio); the weighted-minus-majority lead at each N."""
    ns = rlv["ns"][: len(baseline["ns"])]

    def curve(rep, strategy):
        return [rep["accuracy"][strategy][str(n)] for n in ns]

    difference = rlv_correct.mean(axis=1) - baseline_correct.mean(axis=1)
    return {
        "pass@1": {"rlv": rlv["pass@1"], "lambda0": baseline["pass@1"], "difference": float(difference.mean()),
                   "difference_ci95": testtime.bootstrap_ci(difference, seed=seed)},
        "efficiency_vs_lambda0_majority": testtime.compute_efficiency(
            ns, curve(rlv, "weighted"), curve(baseline, "majority")).as_dict(),
        "efficiency_same_policy": rlv["compute_efficiency_weighted_vs_majority"],
        "weighted_minus_lambda0_majority": {str(n): a - b for n, a, b in
                                            zip(ns, curve(rlv, "weighted"), curve(baseline, "majority"))},
    }


def assemble(reports: dict[str, dict[str, dict]], correct: dict[str, dict[str, np.ndarray]], *,
             train_temperature: float, headline_temperature: float, seed: int = 0) -> dict:
    """What ``eval.json`` holds: ``reports[T][policy]`` per sampling temperature ``T`` (a key made by
    :func:`temperature_key`), and, where both an RL^V policy ("final") and its baseline ("lambda0") were evaluated at
    ``T``, ``comparison[T]`` (:func:`compare`; ``correct[T][policy]`` are their graded pools). The training and the
    headline temperature are stated beside them, so no curve is read at a temperature it does not name."""
    comparison = {t: compare(reps["final"], reps["lambda0"], correct[t]["final"], correct[t]["lambda0"], seed=seed)
                  for t, reps in reports.items() if {"final", "lambda0"} <= set(reps)}
    return {"train_temperature": train_temperature, "headline_temperature": headline_temperature,
            "reports": reports, **({"comparison": comparison} if comparison else {})}


def temperature_key(temperature: float) -> str:
    return format(temperature, "g")


COLORS = {"final": "tab:blue", "lambda0": "tab:orange", "warm_start": "tab:gray"}
STYLES = {"weighted": "-", "majority": "--", "best_of_n": ":"}


def plot_scaling(evaluation: dict, path) -> None:
    """Accuracy vs N (log2 axis): one panel per temperature, every policy's majority / weighted / best-of-N curves
    (colour: policy; line style: strategy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = evaluation["reports"]
    fig, axes = plt.subplots(1, len(reports), figsize=(6 * len(reports), 4.5), squeeze=False, sharey=True)
    for ax, (t, policies) in zip(axes[0], reports.items()):
        for name, rep in policies.items():
            ns = rep["ns"]
            for strategy, values in rep["accuracy"].items():
                ax.plot(ns, [values[str(n)] for n in ns], STYLES.get(strategy, "-"), marker="o", markersize=3,
                        color=COLORS.get(name), label=f"{name} {strategy.replace('_', '-')}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (samples per problem)")
        role = ["training" if float(t) == evaluation["train_temperature"] else "eval",
                *(["headline"] if float(t) == evaluation["headline_temperature"] else [])]
        ax.set_title(f"T = {t} ({', '.join(role)})")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7, ncol=len(next(iter(reports.values()))))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_table(reports: dict[str, dict]) -> str:
    """One small text table comparing policies at N = K (``within``: the verifier's within-problem AUROC;
    ``eff.``: the weighted vote's efficiency over the same policy's majority vote)."""
    k = max(r["num_samples"] for r in reports.values())
    head = f"{'policy':12s}{'pass@1':>8s}{'95% CI':>14s}{'maj@' + str(k):>8s}{'BoN@' + str(k):>8s}" \
           f"{'wt@' + str(k):>8s}{'ver.bal.acc':>12s}{'AUROC':>7s}{'within':>7s}{'eff.':>7s}"
    lines = [head]
    for name, r in reports.items():
        acc, v = r["accuracy"], r["verifier"]
        ratio = r["compute_efficiency_weighted_vs_majority"]["ratio"]
        low, high = r["pass@1_ci95"]
        lines.append(f"{name:12s}{r['pass@1']:8.3f}{f'{low:.3f}-{high:.3f}':>14s}{acc['majority'][str(k)]:8.3f}"
                     f"{acc['best_of_n'][str(k)]:8.3f}{acc['weighted'][str(k)]:8.3f}"
                     f"{v['verifier_balanced_accuracy']:12.3f}{v['verifier_auroc']:7.3f}{v['within_problem_auroc']:7.3f}"
                     f"{'never' if ratio is None else f'{ratio:.2f}':>7s}")
    return "\n".join(lines)


def summary(evaluation: dict) -> str:
    """The printed end-of-run report: a table per temperature (headline first) and the RL^V-vs-lambda0 lines."""
    parts = []
    for t, reports in sorted(evaluation["reports"].items(),
                             key=lambda item: float(item[0]) != evaluation["headline_temperature"]):
        role = ["training" if float(t) == evaluation["train_temperature"] else "eval",
                *(["headline"] if float(t) == evaluation["headline_temperature"] else [])]
        parts.append(f"T = {t} ({', '.join(role)} temperature)\n{summary_table(reports)}")
        cmp = evaluation.get("comparison", {}).get(t)
        if cmp:
            p1 = cmp["pass@1"]
            low, high = p1["difference_ci95"]
            eff = testtime.Efficiency(**{k: v for k, v in cmp["efficiency_vs_lambda0_majority"].items()
                                         if k != "ratio"})
            parts.append(f"RL^V - lambda0 pass@1: {p1['difference']:+.3f} (95% CI {low:+.3f} to {high:+.3f})\n"
                         f"RL^V weighted vote vs lambda0 majority vote: {eff.describe()}")
    return "\n\n".join(parts)


def evaluate_policy(model, tokenizer, records: list[dict], rl: steps.RLConfig, mesh, *, num_samples: int,
                    seed: int = 0, temperature: float | None = None, rows: int | None = None,
                    conventions: testtime.Conventions = testtime.Conventions(),
                    verify: VerifierConfig = VerifierConfig(), reward: Rewards | None = None) -> tuple[dict, dict]:
    """``(report, pool)`` of one policy on ``records``, sampled with the run's sampling settings at ``temperature``
    (None: ``rl.temperature``), ``rows`` at a time (``PoolSampler``'s), asked the run's verify question and graded
    by ``reward`` (None: the math reward); the report records the temperature."""
    temperature = rl.temperature if temperature is None else temperature
    sampler, params = PoolSampler.for_model(model, tokenizer, rl, mesh, num_samples=num_samples, verify=verify,
                                            temperature=temperature, rows=rows)
    pool = sample_pool(sampler, params, tokenizer, records, reward or Rewards(("math",)), seed=seed)
    rep = report(pool, [r.get("level") for r in records], seed=seed, conventions=conventions)
    return {"temperature": temperature, **rep}, pool


def write_report(evaluation: dict, out_dir) -> tuple[Path, Path]:
    """``eval.json`` and ``scaling.png`` in ``out_dir`` (and ``compute.png`` when a report prices a test-time
    strategy), eval.json last; returns the paths of the first two."""
    from rlvjax.strategies import report as strategy_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "eval.json", out_dir / "scaling.png"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(evaluation, indent=2))
    plot_scaling(evaluation, png_path)
    for policies in evaluation["reports"].values():
        for rep in policies.values():
            if "strategy" in rep:
                strategy_report.plot(rep["strategy"], out_dir / "compute.png")
    tmp.replace(json_path)
    return json_path, png_path


def write_samples(pool: dict, records: list[dict], path, conventions: testtime.Conventions) -> Path:
    """``eval_samples.jsonl``: one line per completion (problem index and id, sample index, prompt, text, answer,
    reward, correctness, p(Yes), the convention's score, tokens, whether it stopped), written whole or not at all."""
    path = Path(path)
    score = conventions.scores(pool["yes_logp"], pool["no_logp"])
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w") as out:
        for i, record in enumerate(records):
            for j in range(pool["correct"].shape[1]):
                out.write(json.dumps({
                    "problem": i, "id": record.get("id"), "sample": j, "prompt": record["prompt"],
                    "completion": pool["texts"][i, j],
                    "answer": pool["answers"][i, j], "gold": record.get("gold"),
                    "reward": float(pool["rewards"][i, j]), "correct": bool(pool["correct"][i, j]),
                    "p_yes": float(np.exp(pool["yes_logp"][i, j])),
                    "score": float(score[i, j]), "tokens": int(pool["lengths"][i, j]),
                    "finished": bool(pool["finished"][i, j])}) + "\n")
    tmp.replace(path)
    return path


def abstract_checkpoint(config: Config):
    """``(graphdef, abstract TrainState, tokenizer)`` of a run from its ``config``: what a checkpoint of it holds,
    shapes and dtypes only."""
    from flax import nnx

    model, tokenizer = experiment.build_policy(config.model, config.verifier.question)
    rl, run = config.rl, config.run
    tx = config.optim.make(run.num_steps * rl.num_ppo_epochs * rl.num_minibatches)
    graphdef, params = nnx.split(model)
    state = jax.eval_shape(lambda: steps.init_state(nnx.to_pure_dict(params), tx, seed=run.seed,
                                                    keep_reference=rl.beta > 0))
    return graphdef, state, tokenizer


def load_checkpoint_policy(workdir: Path, step: int | None, config: Config):
    """``(model, tokenizer)`` of checkpoint ``step`` of the run in ``workdir``, rebuilt from its ``config``."""
    from flax import nnx

    from rlvjax.checkpoint import Checkpointer

    graphdef, state, tokenizer = abstract_checkpoint(config)
    with Checkpointer(workdir / "checkpoints", read_only=True) as checkpoints:
        restored, _, _ = checkpoints.restore(state, step)
    return nnx.merge(graphdef, restored.params), tokenizer


def final_report(config: Config, workdir, policies: dict[str, Path]) -> dict:
    """Evaluate HF policy directories on ``config``'s eval set with ``RunConfig.final_eval_samples`` samples per
    problem, at the training temperature (the headline) and at ``RunConfig.eval_temperature`` when it differs; write
    eval.json + scaling.png, print the summary."""
    rl, run = config.rl, config.run
    mesh = parallel.make_mesh(config.mesh)
    temperatures = tuple(dict.fromkeys([rl.temperature, run.eval_temperature or rl.temperature]))
    reward = Rewards(config.task.rewards, config.task.reward_weights)
    reports, correct = {}, {}
    for name, path in policies.items():
        model, tokenizer = load_hf(path)
        records = experiment.build_records(config.task, tokenizer)[1]
        for t in temperatures:
            rep, pool = evaluate_policy(model, tokenizer, records, rl, mesh, num_samples=run.final_eval_samples,
                                        seed=run.seed, temperature=t, conventions=config.conventions,
                                        verify=config.verifier, reward=reward)
            reports.setdefault(temperature_key(t), {})[name] = rep
            correct.setdefault(temperature_key(t), {})[name] = pool["correct"]
    evaluation = assemble(reports, correct, train_temperature=rl.temperature, headline_temperature=temperatures[0],
                          seed=run.seed)
    if jax.process_index() == 0:
        json_path, png_path = write_report(evaluation, workdir)
        print(summary(evaluation))
        print(f"report: {json_path}\nplot:   {png_path}")
    return evaluation


def check_writable(out: Path) -> None:
    """Raises a one-line error when ``out`` could not be created or written (its nearest existing ancestor is a file
    or not writable); creates nothing."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"--out {out}: {existing} is a file, not a directory; choose another --out")
    if not os.access(existing, os.W_OK):
        raise PermissionError(f"--out {out}: {existing} is not writable; choose another --out")


def numbers(flag: str, value: str | None, kind=float) -> list | None:
    """A comma-separated flag as numbers (None when not given); one-line error when it does not parse."""
    if value is None:
        return None
    try:
        return [kind(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{flag}={value!r}: give comma-separated {'integers' if kind is int else 'numbers'}, "
                         f"e.g. {'256,512,1024' if kind is int else '0.2,0.1,0.05'}") from None


STRATEGY_FLAGS = {"adaptive": ("delta", "min_samples", "round_size", "mean_samples"),
                  "length": ("budgets", "threshold"),
                  "particle": ("particles", "step_delimiter", "max_steps", "resample", "reject_fraction",
                               "weight_temperature")}


def strategy_rules(f, num_samples: int, max_new_tokens: int) -> list:
    """The rules ``--strategy`` is evaluated with: ``strategies.report.default_rules`` with the given flags in place
    of their defaults (each rule checks its own values)."""
    import codecs

    from rlvjax.strategies import NAMES
    from rlvjax.strategies import report as strategy_report

    if f.strategy not in NAMES:
        raise ValueError(f"--strategy={f.strategy}: use one of {', '.join(NAMES)}")
    for name, flags in STRATEGY_FLAGS.items():
        stray = [flag for flag in flags if getattr(f, flag) is not None and name != f.strategy]
        if stray:
            raise ValueError(f"--{stray[0]} is a flag of --strategy {name}, not of --strategy {f.strategy}; pass "
                             f"--strategy {name} or drop it")
    if f.strategy == "fixed":
        return []
    base = strategy_report.default_rules(f.strategy, num_samples=num_samples, max_new_tokens=max_new_tokens)
    given = lambda **kw: {k: v for k, v in kw.items() if v is not None}
    if f.strategy == "adaptive":
        fields = given(min_samples=f.min_samples, round_size=f.round_size, mean_samples=f.mean_samples)
        deltas = numbers("delta", f.delta) or [r.delta for r in base]
        rules = [dataclasses.replace(base[0], delta=d, **fields) for d in deltas]
    elif f.strategy == "length":
        budgets = numbers("budgets", f.budgets, int)
        thresholds = numbers("threshold", f.threshold) or list(dict.fromkeys(r.threshold for r in base))
        rules = [dataclasses.replace(r, threshold=t, **given(budgets=None if budgets is None else tuple(budgets)))
                 for r in base if r.threshold == base[0].threshold for t in thresholds]
    else:
        delimiter = None if f.step_delimiter is None else codecs.decode(f.step_delimiter, "unicode_escape")
        fields = given(step_delimiter=delimiter, max_steps=f.max_steps, resample=f.resample,
                       reject_fraction=f.reject_fraction, weight_temperature=f.weight_temperature)
        rules = [dataclasses.replace(base[0], particles=n, **fields)
                 for n in numbers("particles", f.particles, int) or [r.particles for r in base]]
    strategy_report.check_rules(f.strategy, rules, num_samples=num_samples, max_new_tokens=max_new_tokens)
    return rules


def main(argv):
    del argv
    from absl import flags, logging

    from rlvjax import memory
    from rlvjax.checkpoint import Checkpointer
    from rlvjax.data import sources

    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    if bool(f.workdir) == bool(f.model_dir):  # everything here is checked before anything is loaded
        raise ValueError("give either --workdir (a training run) or --model_dir (an HF directory) to evaluate")
    if f.model_dir and not f.data:
        raise ValueError(f"--model_dir {f.model_dir} needs --data: a .jsonl/.json/.parquet file (or datasets id) of "
                         "problems with their answers")
    if f.num_samples < 1 or f.num_samples & (f.num_samples - 1):
        raise ValueError(f"--num_samples={f.num_samples}: use a power of two so the curve's largest N is the pool")
    if f.temperature is not None and f.temperature <= 0:
        raise ValueError(f"--temperature={f.temperature} must be > 0: votes need distinct samples; pass a positive "
                         "--temperature or leave it out (the run's eval temperature)")
    for name in ("max_new_tokens", "batch_size"):
        if getattr(f, name) is not None and getattr(f, name) < 1:
            raise ValueError(f"--{name}={getattr(f, name)} must be >= 1")
    # The strategy's flags are checked here (the length budgets against max_new_tokens again once it is known).
    strategy_rules(f, f.num_samples, f.max_new_tokens or 1 << 30)
    if f.workdir:
        workdir = Path(f.workdir)
        name = f"step_{f.checkpoint}" if f.checkpoint is not None else f.policy
        out = Path(f.out or workdir / "eval" / name)
    else:
        if not (Path(f.model_dir) / "config.json").is_file():
            raise FileNotFoundError(f"--model_dir {f.model_dir} is not an HF model directory (no config.json); point "
                                    "at a folder with config.json and *.safetensors")
        name = Path(f.model_dir).resolve().name
        out = Path(f.out or Path("eval") / name)
    check_writable(out)  # before minutes of sampling, not after
    if f.workdir:
        run_config = Config.from_dict(Checkpointer(workdir / "checkpoints", read_only=True).read_config(f.checkpoint))
        rl, verify = run_config.rl, run_config.verifier
        reward = Rewards(run_config.task.rewards, run_config.task.reward_weights)
        if f.checkpoint is not None:
            model, tokenizer = load_checkpoint_policy(workdir, f.checkpoint, run_config)
        else:
            model, tokenizer = load_hf(workdir / f.policy, dtype=jnp.dtype(f.dtype))
    else:
        model, tokenizer = load_hf(f.model_dir, dtype=jnp.dtype(f.dtype))
        rl = steps.RLConfig(temperature=f.temperature or 1.0, max_new_tokens=f.max_new_tokens or 1024)
        verify, reward = verifier.load_config(f.model_dir), Rewards(("math",))
    if f.max_new_tokens is not None:
        rl = dataclasses.replace(rl, max_new_tokens=f.max_new_tokens)
    if f.data:
        records = [r if f.raw_prompts else {**r, "prompt": sources.format_prompt(r["prompt"], tokenizer)}
                   for r in sources.load_records(f.data, require_gold=reward.is_math)[0]]
        experiment.check_encodable(tokenizer, records, "--data", fix="evaluate a model whose tokenizer covers them, "
                                   "pass --raw_prompts if they are already in the model's format, or remove them")
    else:
        records = experiment.build_records(run_config.task, tokenizer)[1]
    mesh = parallel.make_mesh(parallel.MeshConfig())
    prompt_tokens = sampling.bucket_width(max(map(len, experiment.encode_prompts(tokenizer, [r["prompt"]
                                                                                           for r in records]))))
    prompts = min(memory.eval_prompts(mesh, len(records)), EVAL_PROMPTS)
    plan = memory.eval_plan(model.config, mesh, prompts=prompts, samples=f.num_samples,
                            rows=min(f.batch_size, prompts * f.num_samples), prompt_tokens=prompt_tokens,
                            new_tokens=rl.max_new_tokens,
                            verify_tokens=len(verifier.tokens(tokenizer, verify.question).suffix))
    limit = memory.device_limit()
    print(plan.table(limit), flush=True)
    memory.check(plan, limit)  # before anything is compiled
    temperature = f.temperature or rl.temperature  # the headline temperature unless asked otherwise
    conventions = testtime.Conventions(score=f.score, grouping=f.grouping, unparseable=f.bon_unparseable,
                                       ties=f.bon_ties)
    rules = strategy_rules(f, f.num_samples, rl.max_new_tokens)
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
    evaluation = assemble({temperature_key(temperature): {name: rep}}, {}, train_temperature=rl.temperature,
                          headline_temperature=temperature)
    json_path, png_path = write_report(evaluation, out)
    samples_path = write_samples(pool, records, out / "eval_samples.jsonl", conventions)
    print(summary(evaluation))
    print(f"report:  {json_path}\nplot:    {png_path}\nsamples: {samples_path}")
    if rules:
        print(strategy_report.describe(rep["strategy"]))
        print(f"compute: {out / 'compute.png'}")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "a training run's workdir (or give --model_dir)")
    flags.DEFINE_string("model_dir", None, "an HF model directory to evaluate (with --data)")
    flags.DEFINE_string("policy", "final", "an HF directory inside the workdir: final or warm_start")
    flags.DEFINE_integer("checkpoint", None, "evaluate this Orbax checkpoint step instead of an HF directory")
    flags.DEFINE_string("data", None, "problems to evaluate on (jsonl/parquet/datasets id); default: the run's task")
    flags.DEFINE_bool("raw_prompts", False, "use --data prompts as given (already in the model's format) instead of "
                      "rendering each with the model's chat template and the Qwen2.5-Math instruction")
    flags.DEFINE_integer("num_samples", 16, "K: samples per problem (a power of two)")
    flags.DEFINE_integer("max_new_tokens", None, "tokens per completion (default: the run's; 1024 for --model_dir)")
    flags.DEFINE_integer("batch_size", 256, "R: completions decoded at once; the rest queue behind them")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "weights and compute of an HF directory")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.DEFINE_float("temperature", None, "sampling temperature (default: the run's training temperature, the "
                       "headline; 1.0 for --model_dir)")
    flags.DEFINE_string("out", None, "output directory (default: WORKDIR/eval/POLICY, or ./eval/MODEL_DIR_NAME)")
    conventions = testtime.Conventions  # each flag's default is the class's (see its docstring)
    flags.DEFINE_enum("score", conventions.score, ["normalized", "raw"], "verifier score: p(Yes) normalised over "
                      "{Yes, No}, or raw p(Yes)")
    flags.DEFINE_enum("grouping", conventions.grouping, ["math", "string"], "answers grouped by math equivalence or "
                      "by identical strings")
    flags.DEFINE_enum("bon_unparseable", conventions.unparseable, ["last", "rank"], "best-of-N: unparseable answers "
                      "rank last, or by their score like any other")
    flags.DEFINE_enum("bon_ties", conventions.ties, ["random", "first"], "best-of-N: score ties broken at random "
                      "(expected accuracy) or by pool order")
    flags.DEFINE_string("strategy", "fixed", "fixed, adaptive, length or particle: the test-time strategy priced "
                      "against fixed-N voting in eval.json's `strategy` and compute.png: adaptive and length are "
                      "replayed on the K-pool, particle runs live (rlvjax.strategies)")
    flags.DEFINE_string("delta", None, "adaptive: stopping deltas to sweep, comma-separated (default "
                        "0.2,0.1,0.05,0.02)")
    flags.DEFINE_integer("min_samples", None, "adaptive: samples before the first check (default 4)")
    flags.DEFINE_integer("round_size", None, "adaptive: samples per round (default 2)")
    flags.DEFINE_float("mean_samples", None, "adaptive: overall cap, samples per problem on average (default none)")
    flags.DEFINE_string("budgets", None, "length: increasing token budgets, comma-separated (default 1/4, 1/2 and "
                        "all of max_new_tokens)")
    flags.DEFINE_string("threshold", None, "length: confidence thresholds to sweep (default 0.1,0.3,0.5,0.7)")
    flags.DEFINE_string("particles", None, "particle: particle counts to run, comma-separated (default 4)")
    flags.DEFINE_string("step_delimiter", None, "particle: text that ends a step, escapes allowed (default \\n\\n)")
    flags.DEFINE_integer("max_steps", None, "particle: resampling rounds before the rows run to the end (default 32)")
    flags.DEFINE_string("resample", None, "particle: multinomial or reject (default multinomial)")
    flags.DEFINE_float("reject_fraction", None, "particle, reject: share of rows replaced per step (default 0.25)")
    flags.DEFINE_float("weight_temperature", None, "particle: weights are p(Yes) ** (1 / this) (default 1)")
    from rlvjax import cli

    app.run(cli.run_main("rlvjax.evaluate", main))
