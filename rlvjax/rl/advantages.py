"""Value-free advantage estimators, registered by name (DESIGN.md step 3).

Two kinds live in the registry, told apart by `uses_step_values(name)`:

* group estimators (`grpo`, `dr_grpo`, `rloo`): `fn(rewards[B, G]) -> advantages[B, G]`, one advantage per
  rollout, relative to the other G-1 rollouts of the same problem. The caller broadcasts it over the tokens.
* the step estimator (`vineppo`): `fn(step_values[B, S], rewards[B], step_mask[B, S]) -> step_advantages[B, S]`.
  It needs Monte-Carlo values V(s_k) of every step prefix, which only the rollout loop can produce (K extra
  continuations per step), so it cannot share the group signature. `split_steps` / `step_boundaries` /
  `token_step_ids` cut a solution into steps and `broadcast_step_advantages` hands each token its step's advantage.
"""

import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

_REGISTRY: dict[str, Callable[..., jnp.ndarray]] = {}
_STEP_LEVEL: set[str] = set()


def register(name: str, *, step_values: bool = False):
    """Decorator adding an estimator under `name`; `step_values=True` marks one that needs V(s_k) (VinePPO)."""

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        _REGISTRY[name] = fn
        if step_values:
            _STEP_LEVEL.add(name)
        return fn

    return wrap


def get(name: str) -> Callable[..., jnp.ndarray]:
    """The estimator registered as `name` (a config string picks the algorithm)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown advantage estimator {name!r}; valid names: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)


def uses_step_values(name: str) -> bool:
    """True when `get(name)` takes (step_values, rewards, step_mask) instead of group rewards."""
    get(name)
    return name in _STEP_LEVEL


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

_MATH_SPAN = re.compile(
    r"\$\$.*?\$\$"                     # display $$...$$
    r"|\\\[.*?\\\]"                    # display \[...\]
    r"|\\\(.*?\\\)"                    # inline \(...\)
    r"|\\begin\{([^}]*)\}.*?\\end\{\1\}"  # environments (align, cases, ...)
    r"|(?<!\\)\$(?:\\.|[^$\\])+?\$",   # inline $...$ (an escaped \$ neither opens nor closes)
    re.DOTALL,
)
# A boundary sits after the newline run / after the sentence end and the spaces that follow it, so trailing
# whitespace stays with the step it ends and every step starts on content.
_NEWLINE = re.compile(r"\n\s*")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*[ \t]+(?=[A-Z])")


def step_boundaries(text: str, min_chars: int = 8) -> list[int]:
    """Character offsets where each step of `split_steps(text)` starts (first is 0; empty text gives [])."""
    if not text:
        return []
    math = [m.span() for m in _MATH_SPAN.finditer(text)]

    def in_math(pos: int) -> bool:
        return any(start <= pos < end for start, end in math)

    cuts = sorted(
        {m.end() for pattern in (_NEWLINE, _SENTENCE_END) for m in pattern.finditer(text) if not in_math(m.start())}
        - {len(text)}
    )
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    # Merge fragments with fewer than `min_chars` non-space characters ("Step 1:", "2.") forward into the next
    # piece, so a header belongs to the step it announces; a tiny tail joins the last step.
    starts, pending_start, pending, pos = [], 0, "", 0
    for piece in pieces:
        pending += piece
        pos += len(piece)
        if len("".join(pending.split())) >= min_chars:
            starts.append(pending_start)
            pending_start, pending = pos, ""
    return starts or [0]


def split_steps(text: str, min_chars: int = 8) -> list[str]:
    """Reasoning steps of a solution: cut at newlines and sentence ends ('. ' before a capital), never inside
    `$..$`, `$$..$$`, `\\[..\\]`, `\\(..\\)` or `\\begin..\\end`; tiny fragments merged. "".join(steps) == text."""
    starts = step_boundaries(text, min_chars)
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)])]


def token_step_ids(token_starts, step_starts) -> np.ndarray:
    """Step index of each token, given each token's first-character offset in the completion text and the
    `step_boundaries` of that text: a token belongs to the step holding its first character."""
    ids = np.searchsorted(np.asarray(step_starts), np.asarray(token_starts), side="right") - 1
    return np.maximum(ids, 0)


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
