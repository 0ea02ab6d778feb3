"""VinePPO's value pass with a stub sampler: step boundaries, prefixes asked for, and advantages by hand."""

import numpy as np

from rlvjax.data.tokenizer import build_tokenizer
from rlvjax.rl import vineppo


def test_token_advantages_by_hand():
    tok = build_tokenizer()
    prompt = tok.encode("12+7-5\n", add_special_tokens=False)
    text = "12+7=19\n19-5=14\n\\boxed{14}"
    ids = tok.encode(text, add_special_tokens=False)
    n = len(ids) + 3
    tokens = np.zeros((2, n), int)
    tokens[0, : len(ids)] = ids
    tokens[1, : len(ids)] = ids
    lengths = np.array([len(ids), len(ids)])
    asked = []

    def sample_rewards(prefixes, golds):
        asked.extend(len(p) - len(prompt) for p in prefixes)
        # V(prompt alone) = 0.5, V(after step 1) = 0.25
        return np.array([0.5 if len(p) == len(prompt) else 0.25 for p in prefixes])

    adv, stats = vineppo.token_advantages(sample_rewards, tok, [prompt, prompt], ["14", "14"], tokens, lengths,
                                          [text, text], np.array([1.0, 0.0]), max_steps=8)
    # Steps: "12+7=19\n" has 7 characters, under the 8-character minimum, so it merges with the next line:
    # step 0 = "12+7=19\n19-5=14\n" (16 tokens), step 1 = "\boxed{14}" (4 tokens).
    first = len(tok.encode("12+7=19\n19-5=14\n", add_special_tokens=False))
    assert asked == [0, first, 0, first]
    expected0 = np.r_[np.full(first, 0.25 - 0.5), np.full(len(ids) - first, 1.0 - 0.25), np.zeros(3)]
    expected1 = np.r_[np.full(first, 0.25 - 0.5), np.full(len(ids) - first, 0.0 - 0.25), np.zeros(3)]
    np.testing.assert_allclose(adv, np.stack([expected0, expected1]), atol=1e-6)
    assert stats["vineppo/steps_per_rollout"] == 2.0
    # Whitened over the batch's 2 x 20 completion tokens: 16 + 16 tokens at -0.25, 4 at 0.75 and 4 at -0.25 ->
    # mean -0.15; unbiased variance (36 x 0.1^2 + 4 x 0.9^2) / 39.
    whitened, _ = vineppo.token_advantages(sample_rewards, tok, [prompt, prompt], ["14", "14"], tokens, lengths,
                                           [text, text], np.array([1.0, 0.0]), max_steps=8, whiten=True)
    assert first == 16 and len(ids) == 20
    std = np.sqrt((36 * 0.1 ** 2 + 4 * 0.9 ** 2) / 39)
    valid = np.arange(n)[None, :] < lengths[:, None]
    np.testing.assert_allclose(whitened, np.where(valid, (adv + 0.15) / std, 0.0), atol=1e-5)


def test_max_steps_merges_later_steps():
    tok = build_tokenizer()
    text = "12+7=19\n19-5=14\n14*2=28\n28+1=29\n\\boxed{29}"
    ids = tok.encode(text, add_special_tokens=False)
    bounds = vineppo.step_token_bounds(tok, text, ids, max_steps=2)
    assert len(bounds) == 2 and bounds[0] == 0
