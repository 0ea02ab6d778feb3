"""The ``--strategy`` flags of ``python -m rlvjax.evaluate`` as the rules a strategy runs with: each flag in place
of its default in ``report.default_rules``, checked before anything is loaded, one line per mistake."""

from __future__ import annotations

import dataclasses


def numbers(flag: str, value: str | None, kind=float) -> list | None:
    """A comma-separated flag as numbers (None when not given); one-line error when it does not parse."""
    if value is None:
        return None
    try:
        values = [kind(v) for v in value.split(",") if v.strip()]
        if not values:
            raise ValueError
        return values
    except ValueError:
        raise ValueError(f"--{flag}={value!r}: give comma-separated {'integers' if kind is int else 'numbers'}, "
                         f"e.g. {'256,512,1024' if kind is int else '0.2,0.1,0.05'}") from None


STRATEGY_FLAGS = {"adaptive": ("delta", "min_samples", "round_size", "mean_samples"),
                  "length": ("budgets", "threshold"),
                  "particle": ("particles", "step_delimiter", "max_steps", "resample", "reject_fraction",
                               "weight_temperature")}


def strategy_rules(f, num_samples: int, max_new_tokens: int, tokenizer=None) -> list:
    """The rules ``--strategy`` is evaluated with: ``strategies.report.default_rules`` with the given flags in place
    of their defaults (each rule checks its own values; with ``tokenizer``, the particle step delimiter too)."""
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
        if f.min_samples is not None and f.min_samples > num_samples:  # the rule would blame a field without a flag
            raise ValueError(f"--min_samples={f.min_samples} is more than the pool's --num_samples={num_samples}; "
                             f"lower it, or raise --num_samples")
        fields = given(min_samples=f.min_samples, round_size=f.round_size, mean_samples=f.mean_samples)
        deltas = numbers("delta", f.delta) or [r.delta for r in base]
        rules = [dataclasses.replace(base[0], delta=d, **fields) for d in deltas]
    elif f.strategy == "length":
        budgets = numbers("budgets", f.budgets, int)
        thresholds = numbers("threshold", f.threshold) or list(dict.fromkeys(r.threshold for r in base))
        rules = [dataclasses.replace(r, threshold=t, **given(budgets=None if budgets is None else tuple(budgets)))
                 for r in base if r.threshold == base[0].threshold for t in thresholds]
    else:
        if f.reject_fraction is not None and f.resample != "reject":  # recorded in eval.json, applied to nothing
            raise ValueError(f"--reject_fraction {f.reject_fraction} is a setting of --resample reject (now "
                             f"{f.resample or 'multinomial'}); pass --resample reject, or drop it")
        delimiter = None if f.step_delimiter is None else unescape("step_delimiter", f.step_delimiter)
        fields = given(step_delimiter=delimiter, max_steps=f.max_steps, resample=f.resample,
                       reject_fraction=f.reject_fraction, weight_temperature=f.weight_temperature)
        rules = [dataclasses.replace(base[0], particles=n, **fields)
                 for n in numbers("particles", f.particles, int) or [r.particles for r in base]]
    strategy_report.check_rules(f.strategy, rules, num_samples=num_samples, max_new_tokens=max_new_tokens,
                                tokenizer=tokenizer)
    return rules


def unescape(flag: str, text: str) -> str:
    """``text`` with Python's backslash escapes (``\\n``, ``\\t``, ``\\u3002``) expanded; other characters,
    non-ASCII ones included, kept as they are."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as e:
        raise ValueError(f"--{flag}={text!r}: {e.reason} at character {e.start}; escape a backslash as \\\\") from None
