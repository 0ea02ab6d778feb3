"""Test-time strategies priced against fixed-N voting on the same pool: eval.json's ``strategy`` block and
``compute.png`` (accuracy against generated tokens per problem, and against samples per problem).

Tokens are the generated ones; the verifier's are priced beside them: each score reads the verify prompt and the
sample's last token (``1 + len(verify suffix)`` tokens, a prefill). Fixed-N weighted voting and every strategy here
pay them; majority voting does not, so a strategy is also read against majority voting at its generated plus
verifier tokens (``..._at_equal_total_tokens``).

Adaptive and length are replayed on the evaluated K-pool (exact for those samples, and paired with the fixed-N curves
drawn from the same samples; adaptive in several sample orders, averaged, as the curves average subsets); particle
filtering runs live on the policy. Each rule of a sweep is one point.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rlvjax import testtime
from rlvjax.strategies import NAMES, adaptive, length, particle


def default_rules(name: str, *, num_samples: int, max_new_tokens: int) -> list:
    """The sweep a strategy is evaluated with unless rules are given: adaptive over delta (4 samples first, rounds
    of 2: with 2 first, an agreeing wrong start stops too often, docs/benchmarks.md) with the pool as its cap;
    length over samples (1, 2, 4, ..., K) x thresholds with budgets of 1/4, 1/2 and all of ``max_new_tokens``;
    particle filtering with 4 particles."""
    if name == "adaptive":
        return [adaptive.AdaptiveRule(min_samples=min(4, num_samples), round_size=2, max_samples=num_samples,
                                      delta=d) for d in (0.2, 0.1, 0.05, 0.02)]
    if name == "length":
        budgets = tuple(sorted({max(1, max_new_tokens // 4), max(1, max_new_tokens // 2), max_new_tokens}))
        ns = [2 ** i for i in range(int(np.log2(num_samples)) + 1)]
        return [length.LengthRule(budgets=budgets, threshold=t, samples=n) for n in ns for t in (0.1, 0.3, 0.5, 0.7)]
    if name == "particle":
        return [particle.ParticleRule(particles=4)]
    raise ValueError(f"unknown strategy {name!r}; use one of {NAMES}")


def check_rules(name: str, rules: list, *, num_samples: int, max_new_tokens: int, tokenizer=None) -> None:
    """One-line errors for rules that do not fit the pool: a length budget past ``max_new_tokens``, more length
    samples than the pool has; with the policy's ``tokenizer``, a particle step delimiter that ends none of its
    tokens (checked before the pool is sampled, not after)."""
    kinds = {"adaptive": adaptive.AdaptiveRule, "length": length.LengthRule, "particle": particle.ParticleRule}
    if name not in kinds:
        raise ValueError(f"unknown strategy {name!r}; use one of {NAMES[1:]} (fixed needs no rules)")
    for rule in rules:
        if not isinstance(rule, kinds[name]):
            raise ValueError(f"strategy {name!r} takes {kinds[name].__name__} rules, got {type(rule).__name__}")
        if name == "length" and rule.budgets[-1] > max_new_tokens:
            raise ValueError(f"LengthRule.budgets end at {rule.budgets[-1]} tokens, past max_new_tokens="
                             f"{max_new_tokens}; lower the budgets or raise --max_new_tokens")
        if name == "length" and rule.samples > num_samples:
            raise ValueError(f"LengthRule.samples={rule.samples} is more than the pool's {num_samples} samples per "
                             "problem; raise the pool (--num_samples, or num_samples= in Python)")
        if name == "adaptive" and rule.min_samples > num_samples:  # its first round alone is more than the pool
            raise ValueError(f"AdaptiveRule.min_samples={rule.min_samples} is more than the pool's {num_samples} "
                             "samples per problem; lower it, or raise the pool (--num_samples, or num_samples= in "
                             "Python)")
        if name == "particle" and tokenizer is not None:
            particle.check_delimiter(tokenizer, rule)


def evaluate(name: str, rules: list, rep: dict, pool: dict, *, policy, records: list[dict], seed: int) -> dict:
    """eval.json's ``strategy`` block of ``policy`` (a ``strategies.policy.Policy``, whose conventions score the
    pool) on ``records``, whose K-pool ``pool`` and its report ``rep`` were evaluated."""
    per_pass = 1 + len(policy.decoder.score_suffix)
    sweep = points(name, rules, pool, conventions=policy.conventions, records=records, policy=policy, seed=seed)
    for point in sweep:
        point["verifier_tokens_per_problem"] = point["verifier_passes_per_problem"] * per_pass
    return block(name, sweep, fixed_curves(rep, pool, per_pass))


def fixed_curves(rep: dict, pool: dict, verifier_tokens_per_pass: int) -> dict:
    """Fixed-N weighted and majority votes (eval.json's curves) with their expected tokens per problem: N x the
    pool's mean completion length; weighted voting's verifier reads N x ``verifier_tokens_per_pass`` more."""
    mean_tokens = float(np.mean(pool["lengths"]))
    ns = rep["ns"]
    return {"ns": ns, "tokens_per_problem": [n * mean_tokens for n in ns],
            "weighted_verifier_tokens_per_problem": [n * verifier_tokens_per_pass for n in ns],
            **{s: [rep["accuracy"][s][str(n)] for n in ns] for s in ("weighted", "majority")}}


def points(name: str, rules: list, pool: dict, *, conventions: testtime.Conventions, records=None, policy=None,
           seed: int = 0) -> list[dict]:
    """One point per rule: ``{"rule": its fields, "accuracy", "tokens_per_problem", "samples_per_problem",
    "max_samples", "verifier_passes_per_problem"}``; an adaptive point is the mean of its replays in
    ``adaptive.REPLAY_ORDERS`` sample orders (``orders``, and ``accuracy_sd_over_orders``: how much one run's
    accuracy varies). ``records`` and ``policy`` (a ``strategies.policy.Policy``) are for the live particle runs."""
    scores = conventions.scores(pool["yes_logp"], pool["no_logp"])
    classes = None if name == "particle" else testtime.pool_classes(pool, conventions.grouping)
    correct = pool["correct"].astype(float)
    out = []
    for rule in rules:
        if name == "adaptive":  # replayed on the pool: its caps are the pool's (the rule recorded is the one run)
            rule = adaptive.within(rule, classes.shape[1])
            runs = [r.summary() for r in adaptive.replays(classes, scores, correct, pool["lengths"], rule,
                                                          seed=seed)]
            accuracy = [r["accuracy"] for r in runs]
            summary = {**{key: float(np.mean([r[key] for r in runs])) for key in runs[0]},
                       "max_samples": max(r["max_samples"] for r in runs), "orders": len(runs),
                       "accuracy_sd_over_orders": float(np.std(accuracy, ddof=1)) if len(runs) > 1 else 0.0}
        elif name == "length":
            summary = length.replay(classes, scores, correct, pool["lengths"], pool["finished"], rule).summary()
        else:
            summary = particle.run(policy, records, rule, seed=seed).summary()
        out.append({"rule": dataclasses.asdict(rule), **summary})
    return out


def block(name: str, sweep: list[dict], fixed: dict) -> dict:
    """eval.json's ``strategy``: the points, each beside fixed-N weighted and majority voting at its token spend
    and with the tokens fixed-N weighted voting needs for its accuracy (and their ratio), both read on the fixed
    curves interpolated in log tokens (vote curves rise with log N); and the fewest tokens a point spends to reach
    fixed-N weighted voting's accuracy at the pool's largest N (``match``; ``ratio``: how many times fewer; None
    where no point reaches it).

    A point that spends fewer tokens than one sample is read at N = 1 (fixed-N can spend no less); one that spends
    more than the pool's largest N is not read at equal tokens (None): fixed-N's accuracy there is unknown, and its
    value at the largest N would understate it.

    With the verifier's tokens (a point's ``verifier_tokens_per_problem``): ``total_tokens_per_problem`` and both
    curves read at it, weighted voting's on its generated plus verifier tokens (``..._at_equal_total_tokens``)."""
    tokens = fixed["tokens_per_problem"]
    totals = {"weighted": np.add(tokens, fixed["weighted_verifier_tokens_per_problem"]), "majority": np.asarray(tokens)}

    def at(spent: float, curve: str, xs=tokens) -> float | None:
        if spent > xs[-1] * (1 + 1e-9):
            return None
        return float(np.interp(np.log2(max(spent, 1e-12)), np.log2(np.maximum(xs, 1e-12)), fixed[curve]))

    for point in sweep:
        point["fixed_weighted_at_equal_tokens"] = at(point["tokens_per_problem"], "weighted")
        point["fixed_majority_at_equal_tokens"] = at(point["tokens_per_problem"], "majority")
        total = point["total_tokens_per_problem"] = point["tokens_per_problem"] + point["verifier_tokens_per_problem"]
        for curve in ("weighted", "majority"):
            point[f"fixed_{curve}_at_equal_total_tokens"] = at(total, curve, totals[curve])
        # What fixed-N weighted voting spends to reach this point's accuracy (log-interpolated between its Ns, as
        # testtime.compute_efficiency does; None when it never does within the pool). When its smallest N already
        # does, it might need fewer still: the ratio is then an upper bound.
        eff = testtime.compute_efficiency(tokens, fixed["weighted"], [point["accuracy"]] * len(tokens))
        need = eff.n_needed
        point["fixed_weighted_tokens_at_equal_accuracy"] = need
        point["token_ratio_at_equal_accuracy"] = None if need is None else need / max(point["tokens_per_problem"],
                                                                                        1e-12)
        point["token_ratio_is_upper_bound"] = eff.lower_bound
    target, spent = fixed["weighted"][-1], fixed["tokens_per_problem"][-1]
    reached = [p["tokens_per_problem"] for p in sweep if p["accuracy"] >= target - testtime.CURVE_ATOL]
    best = min(reached) if reached else None
    return {"name": name, "points": sweep, "fixed": fixed,
            "match": {"fixed_weighted_accuracy": target, "fixed_tokens_per_problem": spent,
                      "tokens_per_problem": best, "ratio": None if best is None else spent / max(best, 1e-12)}}


def _number(value: float | None) -> str:
    return "beyond the pool" if value is None else f"{value:.3f}"


def describe(strategy: dict) -> str:
    """The printed lines: each point beside fixed-N weighted voting at equal tokens and majority voting at equal
    generated plus verifier tokens, then the match."""
    settings = [", ".join(f"{k}={v}" for k, v in p["rule"].items() if k in SWEPT[strategy["name"]] and v is not None)
                for p in strategy["points"]]
    width = max([30, len(strategy["name"]) - 1, *map(len, settings)])  # each header over its column
    lines = [f"{strategy['name'] + ':':{width + 2}s}{'accuracy':>9s}{'tokens/problem':>16s}{'+verifier':>11s}"
             f"{'samples':>9s}{'fixed wt @ tokens':>19s}{'fixed maj @ total':>19s}{'tokens @ accuracy':>25s}"]
    for setting, p in zip(settings, strategy["points"]):
        ratio = p["token_ratio_at_equal_accuracy"]
        # None: fixed-N voting never reaches this accuracy within the pool (the point is ahead, not behind)
        fewer = "fixed-N never reaches" if ratio is None else testtime.fewer_or_more(
            ratio, "<=" if p["token_ratio_is_upper_bound"] else "")
        lines.append(f"  {setting:{width}s}{p['accuracy']:9.3f}{p['tokens_per_problem']:16.1f}"
                     f"{p['verifier_tokens_per_problem']:11.1f}{p['samples_per_problem']:9.2f}"
                     f"{_number(p['fixed_weighted_at_equal_tokens']):>19s}"
                     f"{_number(p['fixed_majority_at_equal_total_tokens']):>19s}{fewer:>25s}")
    m = strategy["match"]
    lines.append(f"fixed-N weighted at N = {strategy['fixed']['ns'][-1]}: {m['fixed_weighted_accuracy']:.3f} with "
                 f"{m['fixed_tokens_per_problem']:.0f} tokens/problem; " +
                 ("no point reaches it" if m["ratio"] is None else
                  f"{strategy['name']} reaches it with {m['tokens_per_problem']:.0f} "
                  f"({testtime.fewer_or_more(m['ratio'], digits=1)})"))
    return "\n".join(lines)


SWEPT = {"adaptive": ("delta", "mean_samples"), "length": ("samples", "threshold"), "particle": ("particles",)}


def plot(strategy: dict, path) -> None:
    """Accuracy against tokens per problem (left) and samples per problem (right): fixed-N weighted and majority
    curves and the strategy's points (drawn without pyplot, so a notebook's backend is left as it is)."""
    from matplotlib.figure import Figure

    fixed, pts = strategy["fixed"], strategy["points"]
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, xs in ((axes[0], "tokens_per_problem", fixed["tokens_per_problem"]),
                        (axes[1], "samples_per_problem", fixed["ns"])):
        ax.plot(xs, fixed["weighted"], "-", marker="o", markersize=3, label="fixed-N weighted")
        ax.plot(xs, fixed["majority"], "--", marker="o", markersize=3, label="fixed-N majority")
        ax.plot([p[key] for p in pts], [p["accuracy"] for p in pts], "*", markersize=9, label=strategy["name"])
        ax.set_xscale("log", base=2)
        ax.set_xlabel(key.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
