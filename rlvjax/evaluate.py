"""Evaluation: sample a K-pool per problem with the fused verifier score, grade, vote."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from rlvjax import experiment, parallel, sampling
from rlvjax.rewards.math import grade_completions
from rlvjax.rl import diagnostics, steps

_SAMPLERS: dict = {}


def sample_pool(statics: steps.Statics, params, tokenizer, records: list[dict], mesh, *, num_samples: int,
                seed: int, batch_size: int = 32) -> dict[str, np.ndarray]:
    """K samples per problem: ``texts``/``answers`` (object ``[P, K]``), ``correct``, ``yes_logp``, ``no_logp``."""
    rl = dataclasses.replace(statics.rl, group_size=num_samples)
    key = (statics, num_samples)
    if key not in _SAMPLERS:
        _SAMPLERS[key] = jax.jit(lambda p, i, m, r: steps.rollout_step(dataclasses.replace(statics, rl=rl), p, i, m, r))
    sample = _SAMPLERS[key]
    parallel_rows = mesh.shape["data"] * mesh.shape["fsdp"]
    batch_size = max(parallel_rows, batch_size // parallel_rows * parallel_rows)
    texts, answers, correct, yes, no = [], [], [], [], []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        padded = chunk + [chunk[-1]] * (-len(chunk) % parallel_rows)  # fill the mesh; extra rows are dropped
        ids, mask = sampling.left_pad(experiment.encode_prompts(tokenizer, [r["prompt"] for r in padded]),
                                      pad_id=statics.pad_id)
        roll = sample(params, ids, mask, jax.random.fold_in(jax.random.key(seed), start))
        tokens, lengths, finished, vlp = (np.asarray(x)[: len(chunk)] for x in
                                          (roll.tokens, roll.lengths, roll.finished, roll.verify_logprobs))
        k, n = num_samples, tokens.shape[-1]
        chunk_texts = experiment.decode_completions(tokenizer, tokens.reshape(-1, n), lengths.ravel(),
                                                    finished.ravel())
        chunk_correct, chunk_answers = grade_completions(chunk_texts, [r["gold"] for r in chunk for _ in range(k)])
        texts += chunk_texts
        answers += chunk_answers
        correct.append(chunk_correct.reshape(-1, k))
        yes.append(vlp[..., 0])
        no.append(vlp[..., 1])
    texts = np.asarray(texts, dtype=object).reshape(len(records), num_samples)
    answers = np.asarray(answers, dtype=object).reshape(len(records), num_samples)
    return {"texts": texts, "answers": answers, "correct": np.concatenate(correct),
            "yes_logp": np.concatenate(yes), "no_logp": np.concatenate(no)}


def quick_eval(statics, params, tokenizer, records, mesh, *, num_samples: int, seed: int) -> dict[str, float]:
    """The periodic in-training eval: pass@1, best-of-K by verifier score, verifier accuracy on held-out rollouts."""
    pool = sample_pool(statics, params, tokenizer, records, mesh, num_samples=num_samples, seed=seed)
    correct, score = pool["correct"], pool["yes_logp"] - pool["no_logp"]
    best = np.take_along_axis(correct, np.argmax(score, axis=1)[:, None], axis=1)
    ver = diagnostics.verifier_stats(pool["yes_logp"].ravel(), pool["no_logp"].ravel(), correct.ravel())
    return {"eval/pass@1": float(correct.mean()), "eval/best_of_k": float(best.mean()),
            **{f"eval/{k}": v for k, v in ver.items()}}
