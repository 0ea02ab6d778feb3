"""K-pools: every problem sampled K times by the engine with the fused verifier score, then graded.

``PoolSampler`` jits the engine once for a pool size and temperature (a run's periodic evaluations and VinePPO's
value pass reuse it) and runs it over the mesh; ``sample_pool`` runs it over problems a batch at a time;
``quick_eval`` is the in-training summary of a pool (``summarize``).
``rlvjax.evaluate`` turns pools into reports.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from rlvjax import parallel, policy_tokens, sampling, testtime
from rlvjax.data.encoding import encode_prompts
from rlvjax.rewards.registry import Rewards
from rlvjax.rl import diagnostics, steps
from rlvjax.rl.config import RLConfig
from rlvjax.rl.verifier import VerifierConfig

EVAL_PROMPTS = 32  # problems per call of the engine


@dataclasses.dataclass(frozen=True)
class PoolSampler:
    """The engine jitted once for pools of ``num_samples`` per problem at ``temperature`` (None: the RL one), with
    ``rows`` decoding at once (None: all the samples of a batch) and, unless ``score=False``, the fused verifier
    score; the caller keeps it, so that a run's periodic evaluations reuse one compilation."""

    step_setup: steps.StepSetup
    mesh: jax.sharding.Mesh
    num_samples: int
    fn: object

    @classmethod
    def build(cls, step_setup: steps.StepSetup, mesh, params, *, num_samples: int, temperature: float | None = None,
              rows: int | None = None, score: bool = True) -> "PoolSampler":
        rl = dataclasses.replace(step_setup.rl,
                                 temperature=step_setup.rl.temperature if temperature is None else temperature)
        step_setup = dataclasses.replace(step_setup, rl=rl, num_samples=num_samples,
                                      verify_suffix=step_setup.verify_suffix if score else ())
        return cls(step_setup, mesh, num_samples,
                   steps.jit_rollout(step_setup, mesh, parallel.shardings(params, mesh), rows))

    def __call__(self, params, prompts: list[list[int]], rng, limits=None) -> tuple[np.ndarray, ...]:
        """``num_samples`` completions of each of ``prompts`` (ids) on the mesh: host ``(tokens [P, K, N], lengths,
        finished, verify_logprobs [P, K, 2])`` (zero log-probs without the score). ``limits [P]`` caps each
        prompt's samples' new tokens (None: ``max_new_tokens``). The prompts are padded to a multiple of the mesh's
        rows with copies of the last one, whose samples are dropped; the others' samples do not depend on that
        padding."""
        parallel_rows = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        extra = -len(prompts) % parallel_rows
        padded = list(prompts) + [prompts[-1]] * extra
        ids, mask = sampling.left_pad(padded, pad_id=self.step_setup.pad_id)
        rows = parallel.batch_sharding(self.mesh, 2)
        if limits is not None:
            limits = np.repeat(np.concatenate([limits, np.repeat(limits[-1:], extra)]), self.num_samples)
            limits = parallel.to_global(limits.astype(np.int32), parallel.batch_sharding(self.mesh, 1))
        roll = self.fn(params, parallel.to_global(ids, rows), parallel.to_global(mask, rows), rng, limits)
        return tuple(parallel.to_host(x)[: len(prompts)]
                     for x in (roll.tokens, roll.lengths, roll.finished, roll.verify_logprobs))

    @classmethod
    def for_model(cls, model, tokenizer, rl: RLConfig, mesh, *, num_samples: int,
                  verify: VerifierConfig = VerifierConfig(), temperature: float | None = None,
                  rows: int | None = None, samplers: dict | None = None) -> tuple["PoolSampler", dict]:
        """``(sampler, params)`` of a loaded policy, with the run's sampling settings and verify question.
        ``samplers``: those the caller keeps across policies, reused where the architecture, tokens and settings are
        the same (one trace and compilation for them all)."""
        from flax import nnx

        graphdef, params = nnx.split(model)
        params = nnx.to_pure_dict(params)
        step_setup = policy_tokens.step_setup(graphdef, None, rl, tokenizer, verify)
        key = (step_setup, mesh, num_samples, temperature, rows)
        samplers = {} if samplers is None else samplers
        if key not in samplers:
            samplers[key] = cls.build(step_setup, mesh, params, num_samples=num_samples, temperature=temperature,
                                      rows=rows)
        return samplers[key], params


def sample_pool(sampler: PoolSampler, params, tokenizer, records: list[dict], reward: Rewards, *, seed: int,
                batch_size: int = EVAL_PROMPTS) -> dict[str, np.ndarray]:
    """``sampler.num_samples`` samples per problem, ``batch_size`` problems per call of the engine: ``texts`` /
    ``answers`` (object ``[P, K]``: the stated final answers the votes group), ``rewards``, ``correct`` (the
    verifier's label, ``Rewards``' verdict), ``yes_logp``, ``no_logp``, ``lengths``, ``finished``.

    A batch's key is ``fold_in(key(seed), its first problem)``, so the batches are cut the same on every mesh (the
    sampler pads each to the mesh's rows): a pool does not depend on the device count. Where the data axes do not
    divide the batch (more than 32 devices, or 24), the padding is work: 32 problems are padded to 48 on 24
    devices, to 64 on 64."""
    num_samples = sampler.num_samples
    texts, rewards, correct, yes, no, lengths, finished = [], [], [], [], [], [], []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        tokens, chunk_lengths, chunk_finished, vlp = sampler(
            params, encode_prompts(tokenizer, [r["prompt"] for r in chunk]),
            jax.random.fold_in(jax.random.key(seed), start))
        k, n = num_samples, tokens.shape[-1]
        chunk_texts = policy_tokens.decode_completions(tokenizer, tokens.reshape(-1, n), chunk_lengths.ravel(),
                                                    chunk_finished.ravel())
        lengths.append(chunk_lengths)
        finished.append(chunk_finished)
        rows = [r for r in chunk for _ in range(k)]
        graded = reward([r["prompt"] for r in rows], chunk_texts, rows,
                        policy_tokens.completion_ids(tokens.reshape(-1, n), chunk_lengths.ravel()))
        rewards.append(graded.rewards.reshape(-1, k))
        correct.append(graded.correct.reshape(-1, k))
        texts += chunk_texts
        yes.append(vlp[..., 0])
        no.append(vlp[..., 1])
    shape = (len(records), num_samples)
    return {"texts": np.asarray(texts, dtype=object).reshape(shape),
            "answers": np.asarray([reward.answer(t) for t in texts], dtype=object).reshape(shape),
            "rewards": np.concatenate(rewards), "correct": np.concatenate(correct),
            "yes_logp": np.concatenate(yes), "no_logp": np.concatenate(no), "lengths": np.concatenate(lengths),
            "finished": np.concatenate(finished)}


def quick_eval(sampler: PoolSampler, params, tokenizer, records, reward: Rewards, *, seed: int,
               conventions: testtime.Conventions = testtime.Conventions()) -> dict[str, float]:
    """The periodic in-training eval of a pool of held-out problems (``summarize``)."""
    return summarize(sample_pool(sampler, params, tokenizer, records, reward, seed=seed), conventions)


def summarize(pool: dict, conventions: testtime.Conventions = testtime.Conventions()) -> dict[str, float]:
    """pass@1, best-of-K by verifier score (as eval.json's best-of-N at N = K, under the same ``conventions``) and
    the verifier's accuracy and calibration error (eval.json's, by the same score), as ``eval/...`` metrics."""
    correct, score = pool["correct"], conventions.scores(pool["yes_logp"], pool["no_logp"])
    parseable = testtime.pool_classes(pool, "string") >= 0  # the report's -1s, without math-verify's grouping
    best = [testtime.best_of_n_expected(s, c, p, len(s), unparseable=conventions.unparseable, ties=conventions.ties)
            for s, c, p in zip(score, correct, parseable)]
    ver = diagnostics.verifier_stats(pool["yes_logp"].ravel(), pool["no_logp"].ravel(), correct.ravel())
    ver["verifier_auroc"] = diagnostics.auroc(score.ravel(), correct.ravel())  # by the score, as eval.json's
    ver["calibration_error"] = diagnostics.calibration_error(score.ravel(), correct.ravel())  # logged in training too
    return {"eval/pass@1": float(correct.mean()), "eval/best_of_k": float(np.mean(best)),
            **{f"eval/{k}": v for k, v in ver.items()}}
