"""VinePPO's Monte-Carlo value pass: per-step values from K fresh continuations of every step prefix.

For rollout ``y`` split into steps ``s_1..s_n`` (``advantages.split_steps``), ``V(prefix_k)`` is the mean reward of
``K`` continuations sampled from ``prompt + s_1..s_k`` (``V`` of the empty prefix likewise from the prompt alone),
each graded as the whole solution it completes, ``s_1..s_k`` + continuation, as the rollout itself is graded,
and step ``k`` gets ``A_k = V(prefix_k) - V(prefix_{k-1})`` with the terminal value being the rollout's reward.
Every token of a step carries its step's advantage. A continuation has the rollout's own token budget, less its
prefix, so a prefix is valued by what the rollout could still have done, in the same fixed-length task the rollouts
are graded in. VinePPO's code departs here: each continuation gets ``max_tokens`` of its own, capped by the model's
context only (``min(context - prompt - prefix, max_tokens)``; 1,024 and 2,047 on MATH), so a late prefix of a long
rollout there gets a longer continuation than here, is cut off (scored 0) less often and is valued higher.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from rlvjax import policy_tokens
from rlvjax.cli import UserCodeFailed
from rlvjax.rewards.math import grade_completions
from rlvjax.rl import advantages


def step_token_bounds(tokenizer, text: str, tokens: Sequence[int]) -> np.ndarray:
    """First token index of each step of ``text`` (a token belongs to the step holding its first character, so a
    step that starts and ends inside one token has no token of its own and is left out).

    A token's first character is at ``len(decode(tokens[:i]))``: decoding the prefix as a whole, as ``text`` was
    decoded, less a trailing U+FFFD that ``text`` does not hold there (a prefix that ends inside a multi-byte
    character: the tokens that complete it belong to its step). Summing single-token decodes drifts with real
    tokenizers (a byte of a multi-byte character decodes alone to U+FFFD, SentencePiece drops a lone token's leading
    space, cleanup rewrites " ." only in context). One binary search per step boundary, from the previous
    boundary's token: O(steps x log tokens) decodes."""
    def whole_chars(i: int) -> int:
        head = tokenizer.decode(tokens[:i], skip_special_tokens=False)
        n = len(head)
        while n and head[n - 1] == "\ufffd" and text[n - 1:n] != "\ufffd":
            n -= 1
        return n

    def first_token_at(offset: int, lo: int) -> int:
        hi = len(tokens)
        while lo < hi:
            mid = (lo + hi) // 2
            if whole_chars(mid) >= offset:
                hi = mid
            else:
                lo = mid + 1
        return lo

    firsts = [0]
    for c in advantages.step_boundaries(text)[1:]:
        firsts.append(first_token_at(c, firsts[-1]))
    return np.array(sorted({i for i in firsts if i < len(tokens)}), int)


def token_advantages(sample_rewards: Callable[..., np.ndarray], tokenizer,
                     prompts: list[list[int]], golds: list[str], tokens: np.ndarray, lengths: np.ndarray,
                     texts: list[str], rewards: np.ndarray, *, max_steps: int | None,
                     whiten: bool = False, estimator: str = "vineppo") -> tuple[np.ndarray, dict]:
    """``[R, N]`` per-token advantages for ``R`` rollouts (``tokens [R, N]``, ``N`` their token cap,
    ``lengths [R]``, ``rewards [R]``), whitened over the batch's completion tokens with ``whiten``
    (``advantages.whiten``, as VinePPO does). ``estimator``: the registered step-value estimator
    (``RLConfig.algorithm``) that turns the step values into step advantages.

    ``max_steps`` is VinePPO's ``max_step_for_value_estimation`` (``RLConfig.vineppo_max_steps``): ``None`` samples
    a value for every step prefix; ``M`` only for the prompt and the first ``M`` step prefixes, and later prefixes
    take the rollout's reward as their value, so step ``M + 1`` gets ``reward - V(s_M)`` and later steps 0.

    ``sample_rewards(prompts, heads, golds, budgets)`` samples K continuations of each prefix ``prompts[j] +
    heads[j]`` (``heads[j]``: the rollout's completion tokens before the step), at most ``budgets[j]`` (``N`` less
    ``len(heads[j])``) new tokens each, and returns the mean reward of ``heads[j]`` + continuation
    ``[len(prompts)]``: one batched call covers every distinct step prefix of the batch (a prefix that several
    rollouts share, such as the prompt of a problem's ``G`` rollouts, is asked for once and its value shared).
    """
    r, n = tokens.shape
    bounds = [step_token_bounds(tokenizer, texts[i], tokens[i, : lengths[i]].tolist())
              if lengths[i] else np.zeros(1, int) for i in range(r)]
    valued = [b if max_steps is None else b[: max_steps + 1] for b in bounds]
    # A state is sampled once however many rollouts reach it, as VinePPO deduplicates its value queries: the G
    # rollouts of a problem share the prompt's state, and rollouts that open with the same steps share those prefixes.
    starts = [(i, int(start)) for i, b in enumerate(valued) for start in b]
    states = [(tuple(prompts[i]), tuple(tokens[i, :start].tolist()), golds[i]) for i, start in starts]
    unique = {state: j for j, state in enumerate(dict.fromkeys(states))}
    asked = list(unique)
    sampled = sample_rewards([list(p) for p, _, _ in asked], [list(h) for _, h, _ in asked], [g for _, _, g in asked],
                             np.asarray([n - len(h) for _, h, _ in asked], np.int32))
    values = sampled[[unique[state] for state in states]]
    # One column per step of the batch's longest rollout.
    step_values = np.zeros((r, max(len(b) for b in bounds)), np.float32)
    step_mask = np.zeros_like(step_values)
    offset = 0
    for i, (b, v) in enumerate(zip(bounds, valued)):
        step_values[i, : len(b)] = rewards[i]
        step_values[i, : len(v)] = values[offset: offset + len(v)]
        step_mask[i, : len(b)] = 1.0
        offset += len(v)
    try:
        step_adv = np.asarray(advantages.get(estimator)(step_values, rewards, step_mask), np.float32)
    except Exception as e:  # a user's estimator: the state before this step is intact (train keeps the steps done)
        raise UserCodeFailed(f"advantage estimator {estimator!r} raised {type(e).__name__}: {e}; fix the "
                             "function") from None
    if step_adv.shape != step_values.shape:
        raise UserCodeFailed(f"advantage estimator {estimator!r} returned shape {step_adv.shape}; a step-value "
                             f"estimator returns one advantage per step, [rollouts, steps] = {step_values.shape}")
    token_step = np.zeros((r, n), int)
    for i, b in enumerate(bounds):
        token_step[i] = np.searchsorted(b, np.arange(n), side="right") - 1
    valid = np.arange(n)[None, :] < lengths[:, None]
    adv = np.asarray(advantages.broadcast_step_advantages(step_adv, token_step, valid))
    # the step advantages over the tokens, before whitening (after it, mean 0 and std 1 every step): advantage_* are
    # per rollout, where a rollout's mean hid large step advantages of opposite signs (review)
    raw = adv[valid] if valid.any() else np.zeros(1)
    adv = np.asarray(advantages.whiten(adv, valid)) if whiten else adv
    stats = {"vineppo/steps_per_rollout": float(step_mask.sum(1).mean()),
             "vineppo/value_prefix": float(step_values[:, 0].mean()),
             "vineppo/states_sampled": len(asked) / len(states),
             "vineppo/token_advantage_mean": float(raw.mean()), "vineppo/token_advantage_std": float(raw.std()),
             "vineppo/token_advantage_abs_max": float(np.abs(raw).max())}
    return adv, stats


VALUE_CHUNK = 64  # step prefixes sampled together by the value pass


def chunk_rows(parallel_rows: int) -> int:
    """The most prefixes one engine call of the value pass holds: ``VALUE_CHUNK`` padded to a multiple of the
    mesh's parallel rows, as ``PoolSampler`` pads it (the memory plan and the dry run size the pass by it)."""
    return -(-VALUE_CHUNK // parallel_rows) * parallel_rows


def value_sampler(sampler, params, tokenizer, *, seed: int, chunk: int = VALUE_CHUNK,
                  truncated_reward: float | None = None):
    """``sample_rewards`` for ``token_advantages``: K continuations per prefix from ``sampler`` (a
    ``pool.PoolSampler`` of ``rl.vineppo_samples`` at the policy's temperature, without the verifier score: the
    engine on the run's mesh) and ``params``, each prefix's completion tokens + continuation graded like a rollout
    (one cut off at its budget is worth ``truncated_reward`` when that is set, ``RLConfig.truncated_reward``), in
    chunks of ``chunk`` prefixes."""
    def sample_rewards(prompts: list[list[int]], heads: list[list[int]], golds: list[str],
                       budgets: np.ndarray) -> np.ndarray:
        k = sampler.num_samples
        means = []
        for start in range(0, len(prompts), chunk):
            part = slice(start, start + chunk)
            asked = [p + h for p, h in zip(prompts[part], heads[part])]
            # The prefix count changes every step: a last chunk of any size would compile the engine anew. Padded
            # to a power of two (copies of its last prefix, whose samples are dropped), it takes one of a few shapes.
            extra = min(chunk, 1 << (len(asked) - 1).bit_length()) - len(asked)
            limits = np.concatenate([budgets[part], np.repeat(budgets[part][-1:], extra)])
            tokens, lengths, finished, _ = sampler(params, asked + asked[-1:] * extra, jax.random.key(seed + start),
                                                   limits)
            tokens, lengths, finished = (x[: len(asked)] for x in (tokens, lengths, finished))
            n = tokens.shape[-1]
            texts = policy_tokens.decode_completions(tokenizer, tokens.reshape(-1, n), lengths.ravel(),
                                                  finished.ravel(), heads=[h for h in heads[part] for _ in range(k)])
            rewards = grade_completions(texts, [g for g in golds[part] for _ in range(k)])[0].astype(np.float32)
            if truncated_reward is not None:
                rewards = np.where(finished.ravel(), rewards, truncated_reward)
            means.append(rewards.reshape(-1, k).mean(axis=1))
        return np.concatenate(means).astype(np.float32)

    return sample_rewards
