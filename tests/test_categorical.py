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
