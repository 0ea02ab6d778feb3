"""A policy's token ids for the sampler (where completions stop, the padding, what is never sampled), what the
jitted RL steps close over for them, the files an export carries so other samplers stop alike, and the sampled ids
back to completion texts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rlvjax import run_sampling
from rlvjax.model.hf import MODEL_EOS
from rlvjax.rl import verifier
from rlvjax.rl.config import RLConfig
from rlvjax.rl.steps import StepSetup


@dataclasses.dataclass(frozen=True)
class SamplingTokens:
    """The sampler's token ids for a policy: where a completion stops, the padding, and what it never samples."""

    stop_ids: tuple[int, ...]
    pad_id: int
    suppress_ids: tuple[int, ...]  # never sampled: special tokens other than the stops, verifier-only tokens


def sampling_tokens(tokenizer, verify: verifier.VerifierTokens) -> SamplingTokens:
    """Stop ids, padding and the ids the policy must never sample.

    Suppressed: special tokens that are not stops (padding, <bos>, <|im_start|>), and verifier tokens that exist only
    as added tokens (the arithmetic tokenizer's one-token verify prompt and verdicts) — text the policy never writes,
    whose only effect when sampled would be out-of-distribution solutions for the verifier to score.
    """
    stop = stop_ids(tokenizer)
    added = set(tokenizer.get_added_vocab().values())
    suppress = (set(tokenizer.all_special_ids) | (added & {*verify.suffix, verify.yes_id, verify.no_id})) - set(stop)
    return SamplingTokens(stop, pad_id(tokenizer), tuple(sorted(suppress)))


def stop_ids(tokenizer) -> tuple[int, ...]:
    """Where the policy's completions end: the tokenizer's eos, for a chat model the token closing its turn, and
    the eos ids of the model's own generation_config.json / config.json (``hf.model_eos_ids``). None at all: one
    line, where completions would never end (a model's eos that is no special token of its tokenizer was
    suppressed, and every rollout ran to max_new_tokens)."""
    ids = {tokenizer.eos_token_id, verifier.end_of_turn_id(tokenizer), *getattr(tokenizer, MODEL_EOS, ())} - {None}
    if not ids:
        raise ValueError("the tokenizer names no eos_token and the model no eos_token_id (generation_config.json or "
                         "config.json): completions would never end; set the tokenizer's eos_token (and save it "
                         "with the model)")
    return tuple(sorted(ids))


def pad_id(tokenizer) -> int:
    """The tokenizer's padding, else its eos, else the first stop id (a model whose tokenizer names neither)."""
    for token in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token is not None:
            return token
    return stop_ids(tokenizer)[0]


def export_files(tokenizer, verify: verifier.VerifierConfig, run=None, prompt_format: str = "as_is"
                 ) -> dict[str, str]:
    """``{file name: text}`` an exported policy carries beside its weights (``save_hf(..., files=)``): the verifier's
    config, so evaluating it asks the same question; for the policy of a run (``run``: its ``Config``), how it
    rendered prompts (``prompt_format``: ``run_sampling.rendered_as``) and sampled (``run_sampling``); and a
    generation_config.json that ends completions where rlvjax's sampler does and suppresses the tokens it never
    samples (``sampling_tokens``), so ``generate`` in transformers samples the policy alike."""
    from transformers import GenerationConfig

    suppress = sampling_tokens(tokenizer, verifier.tokens(tokenizer, verify.question, chat=verify.chat)).suppress_ids
    # a run's policy samples as it trained (without these, generate decoded greedily, and at its own top-k of 50)
    sampled = {} if run is None else dict(do_sample=True, temperature=run.rl.temperature, top_p=run.rl.top_p,
                                          top_k=run.rl.top_k, max_new_tokens=run.rl.max_new_tokens)
    generation = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=list(stop_ids(tokenizer)),
                                  pad_token_id=pad_id(tokenizer), suppress_tokens=list(suppress) or None, **sampled)
    return {**verifier.config_files(verify), **(run_sampling.files(run, prompt_format) if run is not None else {}),
            "generation_config.json": generation.to_json_string()}


def step_setup(graphdef, tx, rl: RLConfig, tokenizer, verify: verifier.VerifierConfig = verifier.VerifierConfig()
            ) -> StepSetup:
    """What the jitted RL steps close over, for this policy's tokenizer and verify question."""
    verifier_tokens = verifier.tokens(tokenizer, verify.question, chat=verify.chat)
    special = sampling_tokens(tokenizer, verifier_tokens)
    return StepSetup(graphdef, tx, rl, verifier_tokens.suffix, verifier_tokens.yes_id, verifier_tokens.no_id,
                     special.stop_ids, special.pad_id, special.suppress_ids)


def decode_completions(tokenizer, tokens, lengths, finished, heads=None) -> list[str]:
    """Completion texts without the stop token, from ``[R, N]`` host arrays; ``heads[i]`` (token ids) go before
    row ``i``'s tokens, decoded with them (a continuation of a partial completion, whole)."""
    heads = heads if heads is not None else [[]] * len(tokens)
    return [tokenizer.decode(list(head) + row[: n - int(f)], skip_special_tokens=False)
            for head, row, n, f in zip(heads, tokens.tolist(), lengths.tolist(), finished.tolist())]


def completion_ids(tokens, lengths) -> list[list[int]]:
    """Each row's sampled ids from ``[R, N]`` host arrays, the stop token included (TRL's ``completion_ids``)."""
    return [row[:n] for row, n in zip(np.asarray(tokens).tolist(), np.asarray(lengths).tolist())]
