"""Value-free advantage estimators, registered by name (DESIGN.md step 3).

Two kinds live in the registry, told apart by `uses_step_values(name)`:

* group estimators (`grpo`, `dr_grpo`, `rloo`): `fn(rewards[B, G]) -> advantages[B, G]`, one advantage per
  rollout, relative to the other G-1 rollouts of the same problem. The caller broadcasts it over the tokens.
* the step estimator (`vineppo`): `fn(step_values[B, S], rewards[B], step_mask[B, S]) -> step_advantages[B, S]`.
  It needs Monte-Carlo values V(s_k) of every step prefix, which only the rollout loop can produce (K extra
  continuations per step), so it cannot share the group signature. `split_steps` / `step_boundaries` cut a
  solution into steps (`vineppo.step_token_bounds` maps them to tokens) and `broadcast_step_advantages` hands each
  token its step's advantage.
"""

import itertools
import re
from typing import Callable

import jax
import jax.numpy as jnp

from rlvjax import importing

_REGISTRY: dict[str, Callable[..., jnp.ndarray]] = {}
_STEP_LEVEL: set[Callable[..., jnp.ndarray]] = set()  # the functions registered with step_values=True
_OWN: set[str] = set()  # rlvjax's names, filled at the end of this module


def register(name: str, *, step_values: bool = False):
    """Decorator adding an estimator under `name`; `step_values=True` marks one that needs V(s_k) (VinePPO's
    signature: `fn(step_values[B, S], rewards[B], step_mask[B, S]) -> [B, S]`). A name of your own may be
    registered again (it is replaced); rlvjax's own are kept. A new process (`--resume`, `evaluate`, `export`)
    knows a registered name only once its module is imported: `RLConfig.algorithm = "module:function"` imports it."""

    def wrap(fn):
        importing.check_replaceable("advantage estimator", name, _OWN)
        _REGISTRY[name] = fn  # a step estimator stays one under any name (its module may be imported twice)
        if step_values:
            _STEP_LEVEL.add(fn)
        return fn

    return wrap


def get(name: str) -> Callable[..., jnp.ndarray]:
    """The estimator registered as `name`, or the function `"module:function"` names (its module imported: the
    decorator's registration, step values included, runs then)."""
    fn = importing.lookup(_REGISTRY, name, "RLConfig.algorithm", f"unknown advantage estimator {name!r}; valid names: "
                          f"{sorted(_REGISTRY)} (or one of your own as 'module:function', its module importable from "
                          "every process of the run)")
    if not callable(fn):
        raise ValueError(f"RLConfig.algorithm: {name!r} is not a function")
    return fn


def names() -> list[str]:
    return sorted(_REGISTRY)


def uses_step_values(name: str) -> bool:
    """True when `get(name)` takes (step_values, rewards, step_mask) instead of group rewards."""
    return get(name) in _STEP_LEVEL


def is_own(name: str) -> bool:
    """`name` is one of rlvjax's own estimators."""
    return name in _OWN


def known_only_here(name: str) -> str | None:
    """Who registered `name`, where it is a name of the user's (a new process does not know it), else None."""
    return importing.registered_by(_OWN, name, _REGISTRY.get(name))


def _group_rewards(rewards, min_group: int) -> jnp.ndarray:
    rewards = jnp.asarray(rewards)
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [B, G] (problems x samples per problem), got shape {rewards.shape}")
    if rewards.shape[1] < min_group:
        raise ValueError(f"this estimator needs G >= {min_group} samples per problem, got G={rewards.shape[1]}")
    return rewards.astype(jnp.promote_types(rewards.dtype, jnp.float32))


def _centered(rewards: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(r - group mean, zero-variance mask). A group whose rewards are all equal teaches nothing: its
    advantages are forced to exactly 0, since the float mean of equal non-dyadic values may not be exact."""
    constant = jnp.all(rewards == rewards[:, :1], axis=1, keepdims=True)
    centered = rewards - rewards.mean(axis=1, keepdims=True)
    return jnp.where(constant, 0.0, centered), constant


@register("grpo")
def grpo(rewards, eps: float = 1e-6) -> jnp.ndarray:
    """GRPO: (r - mean) / (std_ddof1 + eps) within each group; zero-variance groups give exactly 0."""
    rewards = _group_rewards(rewards, min_group=2)
    centered, constant = _centered(rewards)
    std = rewards.std(axis=1, ddof=1, keepdims=True)
    return centered / jnp.where(constant, 1.0, std + eps)


@register("dr_grpo")
def dr_grpo(rewards) -> jnp.ndarray:
    """Dr.GRPO: r - mean, no std division (its length-unbiased normalisation is the loss aggregation
    `seq_mean_token_sum_norm` in losses.py)."""
    return _centered(_group_rewards(rewards, min_group=1))[0]


@register("rloo")
def rloo(rewards) -> jnp.ndarray:
    """Leave-one-out baseline: r_i - mean_{j != i} r_j, which equals G / (G - 1) * (r_i - mean)."""
    rewards = _group_rewards(rewards, min_group=2)
    g = rewards.shape[1]
    return _centered(rewards)[0] * (g / (g - 1))


# ----------------------------------------------------------------------------------------------------------------
# VinePPO: step-level advantages from Monte-Carlo values of step prefixes.

# The step splitter is VinePPO's (`split_solution_inplace`, McGill-NLP/VinePPO
# src/treetune/tasks/math_extract_steps_inplace.py), restated on character offsets of the original text: cut at
# sentence ends and newlines outside math, after math that ends its own sentence ("$x = 3.$"), at newlines inside
# math, then halve steps over 100 characters. After each cutting pass, short pieces join a neighbour. On the 500
# MATH-500 solutions it gives VinePPO's boundaries exactly (tests/test_advantages.py).

# Math spans, found in this order: a later kind cannot start inside an earlier one's span.
_MATH_SPANS = tuple(re.compile(p, re.DOTALL) for p in (
    r"\[asy\].*?\[/asy\]",                           # Asymptote figure
    r"\$\\begin\{tabular\}.*?\\end\{tabular\}\$",
    r"\\begin\{tabular\}.*?\\end\{tabular\}",
    r"\\\(.*?\\\)",
    r"\\\[.*?\\\]",
    r"\$\$.*?\$\$",
    r"(?<!\\)\$.*?[^\\]\$(?!\$)",                    # inline $..$; an escaped \$ is a literal dollar
    r"\\begin\{([^}]*)\}.*?\\end\{\1\}",             # environments (align, cases, ...)
))
# Math in the disguised text: no math pattern starts or ends on it and no cut pattern matches it, so nothing cuts
# inside math. VinePPO disguises each span as a 60-character placeholder and measures some lengths with it there.
_HIDDEN = "\0"
_PLACEHOLDER_CHARS = 60
# After a period (not of an abbreviation like "e.g." or "Dr.") that whitespace and a capital follow.
_SENTENCE_END = re.compile(r"(?<!\b[A-Za-z]\.)(?<!\s[A-Za-z]\.)(?<!\s[A-Za-z][A-Za-z]\.)(?<=\.)(?=\s+[A-Z])")
_NEWLINE = re.compile(r"\n")
_MATH_ENDS_SENTENCE = (".$", ".$$", ".\\)", ".\\]")
_LONE_MATH_OPENING = re.compile(r"\$\$?|\\\(|\\\[|\\begin\{[^}]*\}|\[asy\]")
_MAX_STEP_CHARS = 100
# Where a long step may be halved, each list tried in order: prose punctuation outside math (both halves >= 40
# characters), then math operators (both halves >= 20). A cut falls after the match.
_PROSE_CUTS = tuple(re.compile(p) for p in (r",", r"\sand(?=\s)", r":", r"\sto(?=\s)"))
_MATH_CUTS = tuple(re.compile(p) for p in (r",\$", r",\\\)", r",\\\]", r"=", r"\\equiv", r"\+", r"\\cancelto"))


def _disguise(text: str) -> tuple[str, list[tuple[int, int]]]:
    """(text with every math span blanked to `_HIDDEN`, the outermost spans)."""
    disguised, spans = text, []
    for pattern in _MATH_SPANS:
        found = [m.span() for m in pattern.finditer(disguised)]
        for start, end in found:
            disguised = disguised[:start] + _HIDDEN * (end - start) + disguised[end:]
        spans += found
    outermost = []
    for start, end in sorted(spans):
        if not outermost or start >= outermost[-1][1]:
            outermost.append((start, end))
    return disguised, outermost


def _merge_short(bounds: list[int], short: Callable[[int, int], bool], last_backward: bool = True) -> list[int]:
    """Joins each piece [a, b) that `short(a, b)` flags to the piece after it, re-testing the joined piece; a short
    last piece joins the one before it, or stays alone without `last_backward`. `bounds` may repeat an offset."""
    bounds, i = list(bounds), 0
    while i < len(bounds) - 1:
        last = i == len(bounds) - 2
        if last and not (last_backward and i > 0):
            break
        if short(bounds[i], bounds[i + 1]):
            del bounds[i if last else i + 1]
        else:
            i += 1
    return bounds


def _best_cut(piece: str, searched: str, patterns, min_chars: int, measured=lambda pos: pos) -> int | None:
    """The cut after a match (in `searched`, `piece` or its disguise) of the first of `patterns` whose match nearest
    the middle of `piece` leaves both halves >= `min_chars` long; `measured` maps offsets to where the middle is
    judged (the disguised text's for prose, as VinePPO judges it)."""
    middle = measured(len(piece)) / 2
    for pattern in patterns:
        cuts = [m.end() for m in pattern.finditer(searched)]
        if cuts:
            cut = min(cuts, key=lambda pos: abs(measured(pos) - middle))
            if min(cut, len(piece) - cut) >= min_chars:
                return cut
    return None


def _prose_cut(piece: str) -> int | None:
    disguised, spans = _disguise(piece)

    def with_placeholders(pos):
        return pos + sum(_PLACEHOLDER_CHARS - (end - start) for start, end in spans if end <= pos)

    return _best_cut(piece, disguised, _PROSE_CUTS, 40, with_placeholders)


def _halve_long_step(step: str) -> list[int]:
    """Offsets (0 first, len(step) last) halving `step` until no piece is over `_MAX_STEP_CHARS` or none can be cut.

    A piece is cut at prose punctuation if it can be, else at a math operator. After a math cut, pieces that start
    in VinePPO's "math range" skip the prose cuts; the range is [smallest math cut, longest piece so cut), offsets
    within those pieces that VinePPO compares with offsets in `step`. Kept as it is: it decides some splits of long
    lines (47 of the 500 MATH-500 solutions with their newlines removed)."""
    bounds, math_range, i = [0, len(step)], None, 0
    while i < len(bounds) - 1:
        start, end = bounds[i], bounds[i + 1]
        piece = step[start:end]
        if len(piece) <= _MAX_STEP_CHARS:
            i += 1
            continue
        cut = None if math_range and math_range[0] <= start < math_range[1] else _prose_cut(piece)
        if cut is None:
            cut = _best_cut(piece, piece, _MATH_CUTS, 20)
            if cut is not None:
                math_range = (cut, len(piece)) if math_range is None else (
                    min(math_range[0], cut), max(math_range[1], len(piece)))
        if cut is None:
            i += 1
        else:
            bounds.insert(i + 1, start + cut)
    return bounds


def step_boundaries(text: str) -> list[int]:
    """Character offsets where each step of `split_steps(text)` starts (first is 0; empty text gives []).

    Always a split: on texts VinePPO's own splitter cuts, the same offsets (all 500 MATH-500 solutions, ~2,400 fuzzed
    ones); on the few where its assertion fails (~4% of texts tried, mostly AIME solutions) VinePPO drops the rollout
    from the batch (``parse_failed``), and rlvjax trains on it with these steps."""
    if not text:
        return []
    disguised, spans = _disguise(text)

    def has_math(a, b):
        return any(a <= start < b for start, _ in spans)

    # 1. Sentence ends and newlines outside math (a newline starts the piece it opens). A piece under 20 characters
    #    that does not end with a period joins the next one; never the last piece, nor one holding math, which
    #    VinePPO measures with its 60-character placeholder.
    cuts = [m.end() for m in _SENTENCE_END.finditer(disguised)] + [m.start() for m in _NEWLINE.finditer(disguised)]
    bounds = _merge_short(sorted([0, *cuts, len(text)]),
                          lambda a, b: b - a < 20 and not has_math(a, b) and not text[a:b].endswith("."),
                          last_backward=False)
    # 2. After math that ends with its own period. Now any piece under 20 characters not ending so joins the next,
    #    and a short last piece the one before it.
    def ends_sentence(a, b):
        return text[a:b].endswith(_MATH_ENDS_SENTENCE)

    after = [end for start, end in spans if ends_sentence(start, end)]
    bounds = _merge_short(sorted(bounds + after), lambda a, b: b - a < 20 and not ends_sentence(a, b))
    # 3. Newlines inside math (align rows, display lines); a lone opening ("\[", "\begin{align}") or a piece under 3
    #    characters joins the next.
    inside = [m.start() for m in _NEWLINE.finditer(text) if disguised[m.start()] == _HIDDEN]
    bounds = _merge_short(sorted(bounds + inside),
                          lambda a, b: b - a < 3 or _LONE_MATH_OPENING.fullmatch(text[a:b].strip()) is not None)
    # 4. Halve steps over 100 characters.
    starts = []
    for a, b in itertools.pairwise(bounds):
        starts += [a + cut for cut in _halve_long_step(text[a:b])[:-1]]
    return starts


def split_steps(text: str) -> list[str]:
    """Reasoning steps of a solution as VinePPO cuts them (see above); "".join(steps) == text."""
    starts = step_boundaries(text)
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)])]


@register("vineppo", step_values=True)
def step_advantages(step_values, rewards, step_mask=None) -> jnp.ndarray:
    """A_k = V(s_{k+1}) - V(s_k) with V(s_n) = reward, for n valid steps.

    step_values[B, S]: V(s_k) = mean reward of K continuations sampled from prompt + steps[:k] (V(s_0) is the
    prompt alone); rewards[B]: terminal reward of each full solution; step_mask[B, S]: 1 on the first n_b steps
    (padding after). 1-D step_values with a scalar reward are one solution. Padded steps get 0.
    """
    values = jnp.asarray(step_values, jnp.float32)
    single = values.ndim == 1
    values = jnp.atleast_2d(values)
    rewards = jnp.broadcast_to(jnp.asarray(rewards, jnp.float32).reshape(-1, 1), (values.shape[0], 1))
    mask = jnp.ones_like(values) if step_mask is None else jnp.atleast_2d(jnp.asarray(step_mask, jnp.float32))
    has_next = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1) > 0
    next_values = jnp.concatenate([values[:, 1:], rewards], axis=1)
    advantages = (jnp.where(has_next, next_values, rewards) - values) * mask
    return advantages[0] if single else advantages


def whiten(advantages, mask, eps: float = 1e-8) -> jnp.ndarray:
    """``(A - mean) / sqrt(var + eps)`` over the valid (``mask``) entries of a batch, 0 elsewhere; the variance is
    the unbiased one, as VinePPO's ``whiten_advantages`` (TRL's ``masked_whiten``) computes it."""
    a, m = jnp.asarray(advantages, jnp.float32), jnp.asarray(mask, jnp.float32)
    n = jnp.sum(m)
    mean = jnp.sum(a * m) / jnp.maximum(n, 1.0)
    var = jnp.sum((a - mean) ** 2 * m) / jnp.maximum(n - 1.0, 1.0)
    return (a - mean) * jax.lax.rsqrt(var + eps) * m


def broadcast_step_advantages(step_adv, token_step_ids, mask) -> jnp.ndarray:
    """Per-token advantages [B, T]: each completion token gets the advantage of its step; masked tokens get 0."""
    step_adv = jnp.asarray(step_adv)
    ids = jnp.clip(jnp.asarray(token_step_ids, jnp.int32), 0, step_adv.shape[1] - 1)
    return jnp.take_along_axis(step_adv, ids, axis=1) * jnp.asarray(mask, step_adv.dtype)


_OWN.update(_REGISTRY)
