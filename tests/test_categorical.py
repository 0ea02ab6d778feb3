"""The sampler's inverse-CDF draw (``sampling.categorical``) against the distribution it claims to sample."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvjax import sampling


def draw(logits, n, block, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    return np.asarray(jax.jit(lambda k: sampling.categorical(k, jnp.broadcast_to(logits, (n, logits.shape[-1])),
                                                             block))(keys))


@pytest.mark.parametrize("vocab,block", [(50, 8), (37, 128), (300, 16)])
def test_frequencies_match_softmax(vocab, block):
    logits = jax.random.normal(jax.random.key(vocab), (vocab,)) * 2.0
    n = 100_000
    freq = np.bincount(draw(logits, n, block), minlength=vocab) / n
    probs = np.asarray(jax.nn.softmax(logits))
    # Pearson chi-square over the categories with enough expected counts; ~vocab dof, so 2x is far out in the tail.
    keep = probs * n >= 5
    chi2 = np.sum((freq[keep] - probs[keep]) ** 2 / probs[keep]) * n
    assert chi2 < 2 * keep.sum() + 30, chi2
    assert 0.5 * np.abs(freq - probs).sum() < 0.02


def test_masked_entries_never_win_even_at_block_edges():
    vocab, block = 64, 8
    logits = np.full(vocab, -np.inf, np.float32)
    allowed = [0, 7, 8, 31, 63]  # first/last of blocks, the very first and last ids
    logits[allowed] = [0.0, 1.0, -1.0, 2.0, 0.5]
    picks = draw(jnp.asarray(logits), 20_000, block)
    assert set(np.unique(picks)) == set(allowed)
    one_hot = np.full(vocab, -np.inf, np.float32)
    one_hot[63] = 0.0
    assert np.all(draw(jnp.asarray(one_hot), 1000, block) == 63)


def test_each_row_uses_its_own_key():
    logits = jnp.zeros((4, 1000))
    keys = jax.random.split(jax.random.key(1), 4)
    a = np.asarray(sampling.categorical(keys, logits))
    b = np.asarray(sampling.categorical(keys[::-1], logits))
    np.testing.assert_array_equal(a, b[::-1])


def test_a_uniform_near_one_never_draws_a_token_outside_the_top_p_nucleus():
    """Qwen2's 151,936 ids are 1,187 blocks of 128: XLA's CPU cumsum over the block masses rises by an ulp at some
    zero-mass blocks past the nucleus, and a uniform of 1 - 2**-23 drew the last id of such a block (probability 0)
    in ~5% of rows."""
    from rlvjax.sampling.choice import SamplingParams, choose

    vocab, rows = 151_936, 192
    key = jax.random.fold_in(jax.random.key(0), 7848376)
    assert float(jax.random.uniform(key)) == 1 - 2 ** -23  # the largest uniform
    rng = np.random.default_rng(0)
    logits = np.sort(-rng.exponential(size=(rows, vocab)) * rng.uniform(0.5, 4, size=(rows, 1)), axis=1)[:, ::-1]
    logits = logits.astype(np.float32)
    p = np.exp(logits - logits[:, :1].astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    nucleus = ((np.cumsum(p, axis=1) - p) < 0.9).sum(axis=1)  # ids are sorted: the nucleus is ids [0, nucleus)
    tokens = np.asarray(jax.jit(lambda lg, k: choose(lg, k, SamplingParams(1.0, top_p=0.9))[0])(
        jnp.asarray(logits), jnp.stack([key] * rows)))
    assert (tokens < nucleus).all(), (tokens[tokens >= nucleus][:3], nucleus[tokens >= nucleus][:3])


def test_low_temperatures_draw_the_top_tokens_with_exact_log_probs_under_jit():
    # Scaled before shifting, jit rounded the top entry's logit / T differently in the max and in the exp: at
    # T = 1e-3 the log-probs were ~5e-4 off, at 1e-10 infinite, with the last id drawn instead of the argmax.
    logits = jax.random.normal(jax.random.key(3), (256, 96)) * 4
    keys = jax.random.split(jax.random.key(4), 256)
    choose = jax.jit(sampling.choose, static_argnums=2)
    for t in (1e-3, 1e-5):
        token, logp = choose(logits, keys, sampling.SamplingParams(temperature=t))
        scaled = np.asarray(logits, np.float64) / t
        reference = scaled - scaled.max(-1, keepdims=True)
        reference = reference - np.log(np.exp(reference).sum(-1, keepdims=True))
        np.testing.assert_allclose(logp, reference[np.arange(256), np.asarray(token)], atol=1e-5)
        if t == 1e-5:  # every gap between logits here is far above T: the argmax, log-prob 0
            np.testing.assert_array_equal(token, np.argmax(logits, -1))
    for t in (1e-6, 1e-38):
        with pytest.raises(ValueError, match=f"temperature={t} is below 1e-05, where sampling is the argmax"):
            sampling.SamplingParams(temperature=t)
