"""The step-wise decoder against the engine (same keys, same samples, same fused scores, however the budget is
split), partial scores against a full forward pass, and resampling of rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rlvjax
from rlvjax import sampling
from rlvjax.sampling.choice import SamplingParams
from rlvjax.sampling.stepwise import Decoder

PROMPTS = [[5, 9, 17, 3, 44, 12, 8], [30, 31], [7, 7, 60, 61, 62, 63, 64, 65, 66, 67, 68]]
STOPS, SUFFIX, TARGETS = (2, 11), (40, 41), (4, 5)


@pytest.fixture(scope="module")
def setup(hf_checkpoint):
    path, _ = hf_checkpoint("qwen2")
    model, _ = rlvjax.load_hf(path, tokenizer=False)
    graphdef, state = nnx.split(model)
    decoder = Decoder(graphdef, SamplingParams(1.0, 1.0, 0, STOPS, 0, ()), 20, SUFFIX, TARGETS)
    ids, mask = map(jnp.asarray, sampling.left_pad(PROMPTS))
    return model, decoder, state, ids, mask


def test_advancing_in_budgets_gives_the_engines_samples_and_scores(setup):
    model, decoder, state, ids, mask = setup
    out = sampling.sample(model, PROMPTS, num_samples=3, max_new_tokens=20, seed=3, stop_ids=STOPS,
                          score_suffix=SUFFIX, score_ids=TARGETS)
    rng = jax.random.key(3)
    rows = decoder.start(state, ids, mask, rng, 3)
    for budget in (3, 7, 12, 20):  # paused rows resume from their caches
        rows = decoder.advance(state, rows, rng, np.full(9, budget))
        assert np.all(np.asarray(rows.n) <= budget)
    finished = np.asarray(decoder.finished(rows))
    assert finished.any() and not finished.all()
    np.testing.assert_array_equal(np.asarray(rows.tokens), np.asarray(out.tokens).reshape(9, -1))
    np.testing.assert_array_equal(np.asarray(rows.n), np.asarray(out.lengths).ravel())
    np.testing.assert_array_equal(finished, np.asarray(out.finished).ravel())
    np.testing.assert_allclose(np.asarray(rows.logprobs), np.asarray(out.logprobs).reshape(9, -1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(decoder.score(state, rows)), np.asarray(out.score_logprobs).reshape(9, -1),
                               atol=1e-4)


def test_partial_scores_equal_a_full_forward_and_leave_the_rows_as_they_were(setup):
    model, decoder, state, ids, mask = setup
    rng = jax.random.key(5)
    rows = decoder.start(state, ids, mask, rng, 2)
    rows = decoder.advance(state, rows, rng, np.array([2, 5, 9, 1, 6, 4]))  # partial solutions of mixed lengths
    before = jax.tree.map(np.asarray, rows)
    scores = np.asarray(decoder.score(state, rows))
    after = jax.tree.map(np.asarray, rows)
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        np.testing.assert_array_equal(x, y)
    tokens, n = np.asarray(rows.tokens), np.asarray(rows.n)
    for r in range(6):
        prompt = PROMPTS[r // 2]
        partial = list(tokens[r, : n[r]])
        if partial[-1] in STOPS:  # a finished row is scored without its stop token, as the engine does
            partial = partial[:-1]
        logits = model(jnp.asarray([prompt + partial + list(SUFFIX)]))[0, -1]
        np.testing.assert_allclose(scores[r], np.asarray(jax.nn.log_softmax(logits))[list(TARGETS)], atol=1e-4)
    # Scoring twice, or scoring and then advancing, changes nothing: the appended verify prompt was rolled back.
    np.testing.assert_allclose(np.asarray(decoder.score(state, rows)), scores, atol=1e-6)
    reference = decoder.advance(state, decoder.advance(state, decoder.start(state, ids, mask, rng, 2), rng,
                                                       np.array([2, 5, 9, 1, 6, 4])), rng, np.full(6, 20))
    resumed = decoder.advance(state, rows, rng, np.full(6, 20))
    np.testing.assert_array_equal(np.asarray(resumed.tokens), np.asarray(reference.tokens))


def test_rows_pause_on_a_delimiter_and_resampled_rows_keep_their_keys(setup):
    _, decoder, state, ids, mask = setup
    rng = jax.random.key(3)
    full = decoder.advance(state, decoder.start(state, ids, mask, rng, 3), rng, np.full(9, 20))
    tokens = np.asarray(full.tokens)
    delimiter = int(tokens[1, 3])  # a token row 1 samples mid-way
    rows = decoder.advance(state, decoder.start(state, ids, mask, rng, 3), rng, np.full(9, 20), [delimiter])
    n = np.asarray(rows.n)
    for r in range(9):
        hits = np.flatnonzero(tokens[r, : np.asarray(full.n)[r]] == delimiter)
        expected = hits[0] + 1 if len(hits) else np.asarray(full.n)[r]
        assert n[r] == expected  # the delimiter is sampled, and the row pauses on it
    assert np.asarray(rows.token)[1] == delimiter and n[1] <= 4
    # Row 1 copied onto every position: identities stay with the positions, so the copies go on differently.
    moved = decoder.take(rows, np.full(9, 1))
    np.testing.assert_array_equal(np.asarray(moved.ident), np.arange(9))
    np.testing.assert_array_equal(np.asarray(moved.tokens), np.repeat(np.asarray(rows.tokens)[1:2], 9, axis=0))
    on = np.asarray(decoder.advance(state, moved, rng, np.full(9, 20)).tokens)
    np.testing.assert_array_equal(on[1], tokens[1])  # position 1 kept its own keys: its sample is unchanged
    assert len({tuple(row) for row in on}) > 1
