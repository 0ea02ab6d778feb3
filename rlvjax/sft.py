"""Supervised warm start: next-token cross-entropy on (prompt, completion) pairs, completion tokens only.

RL needs a policy that already hits the answer format sometimes; the embedded default starts from solutions with
a controlled share of plausible mistakes, so the starting policy is right often but not always.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from rlvjax import cli, parallel
from rlvjax.data.encoding import encode_prompts
from rlvjax.fieldtypes import check_field_types
from rlvjax.rl import steps


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    num_steps: int = 0  # 0: no warm start (e.g. an already instruction-tuned checkpoint)
    batch_size: int = 32  # examples per warm-start step
    learning_rate: float = 1e-3  # AdamW learning rate of the warm start
    num_examples: int = 20000  # generated (prompt, solution) examples to draw batches from
    # each step's chance of a plausible mistake in the arithmetic warm-start data, up to a solution's first (one
    # mistake at most: a solution of L steps is right with probability (1 - mistake_rate) ** L)
    mistake_rate: float = 0.3
    verify_format_rate: float = 0.25  # share of rows that are verification rows (prompt, solution, verify prompt)
    # Their verdict: "random" teaches only the answer format; "graded" says whether the solution's answer is right
    # (a verification prior, as a pretrained LLM brings one; RL^V then adapts it to the policy's own rollouts).
    verify_labels: str = "random"
    seed: int = 0  # seed of the examples and their order

    def __post_init__(self):
        check_field_types(self)
        if self.verify_labels not in ("random", "graded"):
            raise ValueError(f"verify_labels={self.verify_labels!r}; use 'random' or 'graded'")
        checks = [(self.num_steps >= 0, f"num_steps={self.num_steps} must be >= 0 (0: no warm start)"),
                  (self.batch_size >= 1 and self.num_examples >= 1,
                   f"batch_size={self.batch_size} and num_examples={self.num_examples} must be >= 1"),
                  (self.learning_rate > 0, f"learning_rate={self.learning_rate} must be > 0"),
                  (0 <= self.mistake_rate <= 1, f"mistake_rate={self.mistake_rate} must be in [0, 1]"),
                  (0 <= self.verify_format_rate <= 1,
                   f"verify_format_rate={self.verify_format_rate} must be in [0, 1]"),
                  (0 <= self.seed < 2**32, f"seed={self.seed} must be in [0, 2**32)")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"WarmStartConfig.{message}")
        if self.num_steps and self.num_examples < self.batch_size:
            raise ValueError(f"WarmStartConfig.num_examples={self.num_examples} is fewer than its batch_size="
                             f"{self.batch_size} (a step draws distinct examples); raise num_examples or lower "
                             "batch_size")


def encode_example(prompt_ids: list[int], completion_ids: list[int], *, eos_id: int, verify_suffix=(),
                   verdict_id: int | None = None) -> tuple[list[int], int]:
    """``(ids, first supervised index)``: ``prompt + completion + eos`` (completion supervised), or with a verdict
    ``prompt + completion + verify_suffix + verdict`` (only the verdict supervised, as in the verification loss)."""
    if verdict_id is None:
        return prompt_ids + completion_ids + [eos_id], len(prompt_ids)
    ids = prompt_ids + completion_ids + list(verify_suffix) + [verdict_id]
    return ids, len(ids) - 1


def sft_batch(examples: Sequence[tuple[list[int], int]], *, pad_id: int, width: int):
    """Right-padded ``(ids, mask, loss_mask)`` ``[R, width]``; ``loss_mask[t]`` marks positions whose *next* token
    is supervised."""
    ids = np.full((len(examples), width), pad_id, np.int32)
    mask = np.zeros((len(examples), width), bool)
    loss_mask = np.zeros((len(examples), width), np.float32)
    for i, (seq, first) in enumerate(examples):
        if len(seq) > width:  # cut, a verify row lost its verdict and a policy row its eos, without a word
            raise ValueError(f"a warm-start row of {len(seq)} tokens is wider than its batch ({width}; row_width)")
        ids[i, :len(seq)] = seq
        mask[i, :len(seq)] = True
        loss_mask[i, max(first - 1, 0):len(seq) - 1] = 1.0  # an empty prompt: the first token has no context
    return ids, mask, loss_mask


def sft_loss(graphdef, params, ids, mask, loss_mask, constrain=None, *, remat: str = "none", chunk_size: int = 0):
    """(sum of completion-token NLL, token count); ``constrain``: ``Transformer.hidden``'s; ``remat`` and
    ``chunk_size`` (positions whose ``[V]`` log-softmax is built at once, 0: all) as in the RL update."""
    model = nnx.merge(graphdef, params)
    h, _ = model.hidden(ids, mask, remat=remat, constrain=constrain)
    logp = steps.target_logprobs(model, h[:, :-1], ids[:, 1:], temperature=1.0, chunk_size=chunk_size)
    return -jnp.sum(logp * loss_mask[:, :-1]), jnp.sum(loss_mask[:, :-1])


def row_verdict(rng: np.random.Generator, cfg: WarmStartConfig, correct: bool, verdict_ids) -> int | None:
    """The verdict id a warm-start row is trained to answer (``verdict_ids = (yes, no)``), or None for a policy
    row. The random guess is drawn in both modes, so "graded" and "random" runs see the same rows."""
    if not verdict_ids or rng.random() >= cfg.verify_format_rate:
        return None
    guess = int(rng.integers(len(verdict_ids)))
    return int(verdict_ids[0 if correct else 1] if cfg.verify_labels == "graded" else verdict_ids[guess])


COSINE_FLOOR = 0.05  # the warm start's cosine decays to this fraction of its peak rate


def optimizer(cfg: WarmStartConfig) -> optax.GradientTransformation:
    """AdamW with a warmup (from lr / warmup, so that the first step moves the weights) and a cosine decay."""
    warmup = max(cfg.num_steps // 20, 1)
    return optax.adamw(optax.warmup_cosine_decay_schedule(cfg.learning_rate / warmup, cfg.learning_rate, warmup,
                                                          max(cfg.num_steps, 2), cfg.learning_rate * COSINE_FLOOR))


Tokenized = tuple[list[int], list[int], bool]  # (prompt ids, completion ids, correct)


def tokenize(tokenizer, examples: Sequence[tuple[str, str, bool]]) -> list[Tokenized]:
    """``(prompt, completion, correct)`` examples tokenized, once for the whole warm start (per step would cost
    more than the step)."""
    prompts = encode_prompts(tokenizer, [p for p, _, _ in examples])  # as the sampler's, led by any BOS
    return [(ids, tokenizer.encode(c, add_special_tokens=False), ok) for ids, (_, c, ok) in zip(prompts, examples)]


def row_width(examples: Sequence[Tokenized], verify_tokens: int = 0) -> int:
    """The width of every warm-start batch: the longest example with the verify prompt (``verify_tokens`` long) and
    its verdict."""
    return max(len(p) + len(c) for p, c, _ in examples) + verify_tokens + 1


def jit_step(graphdef, tx, mesh, params, *, remat: str = "none", chunk_size: int = 0, donate: bool = False):
    """The jitted warm-start step ``(params, opt_state, ids, mask, loss_mask) -> (params, opt_state, loss)`` and the
    shardings of ``(params, opt_state)`` (None without ``mesh``; with it, laid out by the partition rules and the
    rows over the data axes, as in the RL update). ``params``: arrays or their shapes; ``remat``, ``chunk_size``:
    ``sft_loss``'s; ``donate``: the step reuses the buffers of the params and optimizer state it is given."""
    constrain = None if mesh is None else parallel.rows_constraint(mesh)

    def mean_loss(params, ids, mask, loss_mask):
        total, count = sft_loss(graphdef, params, ids, mask, loss_mask, constrain, remat=remat, chunk_size=chunk_size)
        return total / count

    def warm_start_step(params, opt_state, ids, mask, loss_mask):
        loss, grads = jax.value_and_grad(mean_loss)(params, ids, mask, loss_mask)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    donated = (0, 1) if donate else ()
    if mesh is None:
        return jax.jit(warm_start_step, donate_argnums=donated), None
    shardings = parallel.shardings((params, jax.eval_shape(tx.init, params)), mesh)
    by_rows = parallel.batch_sharding(mesh, 2)
    step = jax.jit(warm_start_step, in_shardings=(*shardings, by_rows, by_rows, by_rows),
                   out_shardings=(*shardings, None), donate_argnums=donated)
    return step, shardings


STOP_CHECK_EVERY = 10  # warm-start steps between preemption checks


def warm_start(graphdef, params, examples: Sequence[Tokenized], cfg: WarmStartConfig,
               *, eos_id: int, pad_id: int, verify_suffix=(), verdict_ids=(), progress: bool = True, mesh=None,
               remat: str = "none", chunk_size: int = 0, donate: bool = False,
               stop: Callable[[], None] | None = None):
    """``cfg.num_steps`` AdamW steps on shuffled minibatches of ``tokenize``'d examples; returns the new params.
    With ``mesh``, the params and optimizer state are laid out by the partition rules and the rows over the data
    axes, as in the RL update (every process draws the same batches: the examples are seeded); ``remat`` and
    ``chunk_size`` (the run's ``RLConfig.remat`` and ``logprob_chunk_size``) bound its activations as they do the
    update's. ``donate``: ``params`` is consumed (its buffers reused by the first step, not copied beside it).

    A ``verify_format_rate`` share of rows are verification rows, verdict ids ``(yes, no)``. With
    ``verify_labels="random"`` the verdict is random: those rows teach the answer format of the verify prompt
    (so L_V starts near log 2, not at a large value whose gradient would swamp the policy's) and nothing about
    which solutions are right. With ``"graded"`` the verdict is ``correct``. ``stop`` is called before every
    ``STOP_CHECK_EVERY``-th step (a preemption check, which raises to stop; on several hosts it is a gather, so not
    once per step, which would sync the host with every dispatched step).
    """
    tx = optimizer(cfg)
    width = row_width(examples, len(verify_suffix))
    step, shardings = jit_step(graphdef, tx, mesh, params, remat=remat, chunk_size=chunk_size, donate=donate)
    if mesh is None:
        opt_state, put = tx.init(params), jnp.asarray
    else:  # params and AdamW moments where the partition rules put them (never whole on one device)
        params = jax.device_put(params, shardings[0])
        opt_state = jax.jit(tx.init, out_shardings=shardings[1])(params)
        put = functools.partial(parallel.to_global, sharding=parallel.batch_sharding(mesh, 2))

    rng = np.random.default_rng(cfg.seed)
    bar = tqdm(range(cfg.num_steps), desc="warm start", disable=not progress, dynamic_ncols=True)
    for i in bar:
        if stop is not None and i % STOP_CHECK_EVERY == 0:
            stop()
        rows = []
        for j in rng.choice(len(examples), cfg.batch_size, replace=False):
            prompt, completion, correct = examples[j]
            verdict = row_verdict(rng, cfg, correct, verdict_ids)
            rows.append(encode_example(prompt, completion, eos_id=eos_id, verify_suffix=verify_suffix,
                                       verdict_id=verdict))
        batch = sft_batch(rows, pad_id=pad_id, width=width)
        params, opt_state, loss = step(params, opt_state, *map(put, batch))
        if (i + 1) % 50 == 0 or i + 1 == cfg.num_steps:  # the host waits here anyway, for the progress bar
            if not np.isfinite(float(loss)):
                raise diverged(cfg, f"loss {float(loss)} at step {i + 1}")
            bar.set_postfix(loss=f"{float(loss):.3f}")
    bar.close()
    if not jax.jit(lambda p: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(p)])))(params):
        raise diverged(cfg, f"non-finite parameters after step {cfg.num_steps}")
    return params


def diverged(cfg: WarmStartConfig, what: str) -> cli.RunFailed:
    """A warm start gone non-finite: stopped before its weights are exported (every later step, and every resume,
    would start from them)."""
    return cli.RunFailed(f"the warm start diverged ({what} of {cfg.num_steps}); nothing was exported: lower "
                         f"WarmStartConfig.learning_rate (now {cfg.learning_rate:g}) and rerun, e.g. with --gin_param "
                         f"'WarmStartConfig.learning_rate = {cfg.learning_rate / 10:g}'")
