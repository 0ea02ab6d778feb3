"""A loaded policy ready for the live test-time strategies: the model with the run's sampling settings, verify
question, reward and voting conventions; for the step-wise strategies (length, particle) its step-wise decoder,
batches of problems with their keys, and graded reads of the rows."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from rlvjax import policy_tokens, sampling, testtime
from rlvjax.data.encoding import encode_prompts
from rlvjax.pool import EVAL_PROMPTS
from rlvjax.rewards import registry
from rlvjax.rewards.registry import Rewards
from rlvjax.rl.verifier import VerifierConfig
from rlvjax.sampling.stepwise import Decoder, Rows


def as_rewards(reward, threshold: float) -> Rewards:
    """``reward`` as ``Rewards``: a function (TRL's form or ``f(prompts, completions, **columns)``) or a registered or
    ``module:function`` name is graded alone (it was passed on as it was, and failed on its first call)."""
    if isinstance(reward, Rewards):
        return reward
    if not (callable(reward) or isinstance(reward, str)):
        raise ValueError(f"reward={reward!r} is neither a reward function, a reward's name nor an "
                         "rlvjax.rewards.registry.Rewards")
    fn = registry.resolve(reward, "reward") if isinstance(reward, str) else reward
    name = reward if isinstance(reward, str) else registry.name_of(reward) or getattr(reward, "__name__", "reward")
    return Rewards((name,), functions=[fn], threshold=threshold)


@dataclasses.dataclass(frozen=True)
class Policy:
    model: Any
    tokenizer: Any
    rl: Any  # rl.config.RLConfig: the sampling settings (temperature, max_new_tokens already applied)
    verify: VerifierConfig
    reward: Rewards
    conventions: testtime.Conventions
    decoder: Decoder
    state: Any  # the model's parameters, as the decoder takes them

    @classmethod
    def build(cls, model, tokenizer, rl, *, max_new_tokens: int | None = None, verify: VerifierConfig | None = None,
              reward: Rewards | Callable | str | None = None, conventions: testtime.Conventions | None = None,
              temperature: float | None = None) -> "Policy":
        """``rl``'s sampling settings (``temperature`` and ``max_new_tokens`` None: its own), the verify question
        of ``verify`` and the grade of ``reward``: ``Rewards``, a reward function as ``RLVTrainer`` takes one, or a
        registered name (None: math); a completion is right where it reaches ``verify``'s threshold."""
        from flax import nnx

        verify = verify or VerifierConfig()
        rl = dataclasses.replace(rl, temperature=rl.temperature if temperature is None else float(temperature),
                                 max_new_tokens=max_new_tokens or rl.max_new_tokens)
        graphdef, state = nnx.split(model)
        step_setup = policy_tokens.step_setup(graphdef, None, rl, tokenizer, verify)
        params = dataclasses.replace(rl.sampling_params, stop_ids=step_setup.stop_ids, pad_id=step_setup.pad_id,
                                     suppress_ids=step_setup.suppress_ids)
        decoder = Decoder(graphdef, params, rl.max_new_tokens, step_setup.verify_suffix,
                          (step_setup.yes_id, step_setup.no_id))
        reward = as_rewards("math" if reward is None else reward, verify.threshold)
        return cls(model, tokenizer, rl, verify, reward, conventions or testtime.Conventions(),
                   decoder, state)

    def batches(self, records: list[dict], seed: int) -> Iterator[tuple[list[dict], jax.Array, jax.Array, jax.Array]]:
        """``(records, ids, mask, rng)`` per batch of ``EVAL_PROMPTS`` problems, with the keys ``sample_pool`` gives
        the same batch (so a row advanced without resampling is the engine's sample)."""
        for start in range(0, len(records), EVAL_PROMPTS):
            chunk = records[start:start + EVAL_PROMPTS]
            ids, mask = sampling.left_pad(encode_prompts(self.tokenizer, [r["prompt"] for r in chunk]),
                                          pad_id=self.decoder.params.pad_id)
            yield chunk, jnp.asarray(ids), jnp.asarray(mask), jax.random.fold_in(jax.random.key(seed), start)

    def read(self, rows: Rows, records: list[dict], verdicts) -> dict[str, np.ndarray]:
        """The rows of ``records`` (``[P * K]`` in problem order) graded, as ``[P, K]`` arrays: ``texts``,
        ``answers``, ``correct``, ``scores`` (the conventions' score of ``verdicts``, the Yes/No log-probs),
        ``lengths``, ``finished``."""
        tokens, lengths = np.asarray(rows.tokens), np.asarray(rows.n)
        finished = np.asarray(self.decoder.finished(rows))
        verdicts = np.asarray(verdicts)
        texts = policy_tokens.decode_completions(self.tokenizer, tokens, lengths, finished)
        k = len(texts) // len(records)
        repeated = [r for r in records for _ in range(k)]
        graded = self.reward([r["prompt"] for r in repeated], texts, repeated,
                             policy_tokens.completion_ids(tokens, lengths))
        shape = (len(records), k)
        return {"texts": np.asarray(texts, dtype=object).reshape(shape),
                # stated answers of truncated rows too, as a fixed-N pool has them; a strategy whose rule leaves
                # truncated rows out of the vote (length) masks them with ``finished``
                "answers": np.asarray([self.reward.answer(t) for t in texts], dtype=object).reshape(shape),
                "correct": graded.correct.reshape(shape),
                "scores": self.conventions.scores(verdicts[:, 0], verdicts[:, 1]).reshape(shape),
                "lengths": lengths.reshape(shape), "finished": finished.reshape(shape)}

    def classes(self, answers) -> np.ndarray:
        """``[P, K]`` class ids of ``[P, K]`` answers, grouped by the conventions (as strings under a reward
        other than math: ``Rewards.grouping``)."""
        return testtime.pool_classes({"answers": answers}, self.reward.grouping(self.conventions.grouping))
