"""VinePPO's value pass with a stub sampler: step boundaries, prefixes asked for, and advantages by hand."""

import jax
import numpy as np
import pytest

from rlvjax.cli import UserCodeFailed
from rlvjax.data.tokenizer import build_tokenizer
from rlvjax.rl import vineppo
from rlvjax.rl.config import RLConfig

# One token per character, "\boxed{" is one. As VinePPO cuts them, TWO_STEPS is "1000+2000+3000+3000=9000" (24
# tokens) + "\n9000-4000-1=4999\n\boxed{4999}" (24: the 17-character line is short, so it joins the answer line).
TWO_STEPS = "1000+2000+3000+3000=9000\n9000-4000-1=4999\n\\boxed{4999}"
# Steps of 24, 22, 26 and 25 tokens.
FOUR_STEPS = ("1000+2000+3000+3000=9000\n9000-4000-1000-1=3999\n3999+1001+2000+3000=10000\n10000-5000-1=4999\n"
              "\\boxed{4999}")


def batch(tok, texts):
    """(prompts, golds, tokens [R, N] with 3 padding columns, lengths) for completions `texts`."""
    prompt = tok.encode("1000+2000+3000+3000-4000-1\n", add_special_tokens=False)
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    tokens = np.zeros((len(ids), max(map(len, ids)) + 3), int)
    for i, row in enumerate(ids):
        tokens[i, : len(row)] = row
    return [prompt] * len(ids), ["4999"] * len(ids), tokens, np.array(list(map(len, ids)))


def stub_sampler(prompts, values_by_prefix, asked, budgets=None):
    """`sample_rewards` answering V(prefix) from a table keyed by the prefix's completion length; records the asks
    (and the continuations' token budgets in ``budgets``)."""
    def sample_rewards(asked_prompts, heads, golds, limits):
        assert all(list(p) == list(prompts[0]) for p in asked_prompts)
        lengths = [len(h) for h in heads]
        asked.extend(lengths)
        if budgets is not None:
            budgets.extend(limits.tolist())
        return np.array([values_by_prefix[n] for n in lengths])

    return sample_rewards


def test_step_token_bounds():
    tok = build_tokenizer()
    for text, bounds in ((TWO_STEPS, [0, 24]), (FOUR_STEPS, [0, 24, 46, 72])):
        ids = tok.encode(text, add_special_tokens=False)
        np.testing.assert_array_equal(vineppo.step_token_bounds(tok, text, ids), bounds)


def _trained_tokenizer(kind: str):
    """A small BPE tokenizer of a real family: byte-level (Qwen, Llama-3) or SentencePiece-style Metaspace (Llama-2,
    Mistral, Gemma)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["We have x = 3. So y = 4.\nThen the sum is 7.", "The answer is 5, and so on to the end."] * 50
    if kind == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"])
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.mark.parametrize("kind,text", [
    ("bytelevel", "Since x ≤ 3 and y ≥ 4 we get the first part done here.\nThen the sum is 7, clearly true."),
    # a multi-byte character just before the boundary: its later bytes' tokens went to the next step
    ("bytelevel", "We have the first line done here, angle 90°\nThen the second line is done here too."),
    ("metaspace", "We have x = 3 and so on to the end. So y = 4 and the answer is 5, and so on.\nThen the sum is 7, "
                  "and the answer is 5."),
])
def test_step_token_bounds_follow_the_text_with_real_tokenizers(kind, text):
    """Each step's first token is the first whose text starts at or after the step's first character (the
    tokenizer's own offsets, as VinePPO reads them), with tokenizers whose lone-token decodes differ from their text
    in context (a multi-byte character's bytes, a SentencePiece word's leading space)."""
    from rlvjax.rl import advantages

    tok = _trained_tokenizer(kind)
    encoded = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    assert tok.decode(ids) == text
    starts = [start for start, _ in encoded["offset_mapping"]]  # the character each token starts in
    steps = advantages.step_boundaries(text)
    assert len(steps) >= 2
    expected = sorted({0} | {next(i for i, c in enumerate(starts) if c >= b) for b in steps[1:]})
    bounds = vineppo.step_token_bounds(tok, text, ids)
    np.testing.assert_array_equal(bounds, expected)


def test_token_advantages_by_hand():
    tok = build_tokenizer()
    prompts, golds, tokens, lengths = batch(tok, [TWO_STEPS, TWO_STEPS])
    asked, budgets = [], []
    # V(prompt alone) = 0.5, V(after step 1) = 0.25
    sample_rewards = stub_sampler(prompts, {0: 0.5, 24: 0.25}, asked, budgets)
    adv, stats = vineppo.token_advantages(sample_rewards, tok, prompts, golds, tokens, lengths,
                                          [TWO_STEPS, TWO_STEPS], np.array([1.0, 0.0]), max_steps=None)
    # the two rollouts are the same states: each is sampled once
    assert list(lengths) == [48, 48] and asked == [0, 24]
    # a continuation of a prefix gets the rollouts' cap (51 tokens) less the prefix's completion tokens
    assert tokens.shape[1] == 51 and budgets == [51, 27]
    expected0 = np.r_[np.full(24, 0.25 - 0.5), np.full(24, 1.0 - 0.25), np.zeros(3)]
    expected1 = np.r_[np.full(24, 0.25 - 0.5), np.full(24, 0.0 - 0.25), np.zeros(3)]
    np.testing.assert_allclose(adv, np.stack([expected0, expected1]), atol=1e-6)
    assert stats["vineppo/steps_per_rollout"] == 2.0 and stats["vineppo/states_sampled"] == 0.5
    # the advantages trained on, over the 96 completion tokens: 72 at -0.25, 24 at 0.75 (rollout 1's mean is -0.25,
    # so the per-rollout advantage_* read 0.25 and -0.25: std 0.25, max 0.25)
    np.testing.assert_allclose([stats["vineppo/token_advantage_mean"], stats["vineppo/token_advantage_std"],
                                stats["vineppo/token_advantage_abs_max"]], [0.0, np.sqrt(0.1875), 0.75], atol=1e-6)
    # Whitened over the batch's 2 x 48 completion tokens: 72 tokens at -0.25 and 24 at 0.75 -> mean 0; unbiased
    # variance (72 x 0.25^2 + 24 x 0.75^2) / 95 = 18 / 95.
    whitened, whitened_stats = vineppo.token_advantages(sample_rewards, tok, prompts, golds, tokens, lengths,
                                                        [TWO_STEPS, TWO_STEPS], np.array([1.0, 0.0]), max_steps=None,
                                                        whiten=True)
    assert whitened_stats == stats  # the step advantages before whitening (after it: mean 0, std 1 every step)
    valid = np.arange(tokens.shape[1])[None, :] < lengths[:, None]
    np.testing.assert_allclose(whitened, np.where(valid, adv / np.sqrt(18 / 95), 0.0), atol=1e-5)
    # RLConfig.algorithm names the step estimator: one registered with step_values=True is the one called (VinePPO's
    # ran whatever the name, review 2026-12-06), and its shape is checked
    from rlvjax.rl import advantages

    advantages.register("test_tripled", step_values=True)(lambda v, r, m: 3 * advantages.step_advantages(v, r, m))
    tripled, _ = vineppo.token_advantages(sample_rewards, tok, prompts, golds, tokens, lengths, [TWO_STEPS, TWO_STEPS],
                                          np.array([1.0, 0.0]), max_steps=None, estimator="test_tripled")
    np.testing.assert_allclose(tripled, 3 * adv, atol=1e-6)
    advantages.register("test_tripled", step_values=True)(lambda v, r, m: v[:, :1])
    with pytest.raises(UserCodeFailed, match=r"'test_tripled' returned shape \(2, 1\); a step-value estimator returns "
                                         r"one advantage per step, \[rollouts, steps\] = \(2, 2\)"):
        vineppo.token_advantages(sample_rewards, tok, prompts, golds, tokens, lengths, [TWO_STEPS, TWO_STEPS],
                                 np.array([1.0, 0.0]), max_steps=None, estimator="test_tripled")
    advantages.register("test_tripled", step_values=True)(lambda v, r, m: 1 / 0)  # raises mid-run: the steps done kept
    with pytest.raises(UserCodeFailed, match=r"^advantage estimator 'test_tripled' raised ZeroDivisionError: division "
                                             r"by zero; fix the function$"):
        vineppo.token_advantages(sample_rewards, tok, prompts, golds, tokens, lengths, [TWO_STEPS, TWO_STEPS],
                                 np.array([1.0, 0.0]), max_steps=None, estimator="test_tripled")


# V of the prompt and of the prefixes after steps 1, 2 and 3 of FOUR_STEPS (and TWO_STEPS's first step).
VALUES = {0: 0.5, 24: 0.25, 46: 0.75, 72: 0.5}


def four_and_two_step_advantages(max_steps):
    """(token advantages, completion lengths asked for) of FOUR_STEPS (reward 1) and TWO_STEPS (reward 0)."""
    tok = build_tokenizer()
    prompts, golds, tokens, lengths = batch(tok, [FOUR_STEPS, TWO_STEPS])
    asked = []
    adv, stats = vineppo.token_advantages(stub_sampler(prompts, VALUES, asked), tok, prompts, golds, tokens,
                                          lengths, [FOUR_STEPS, TWO_STEPS], np.array([1.0, 0.0]),
                                          max_steps=max_steps)
    assert stats["vineppo/steps_per_rollout"] == 3.0  # a cap keeps every step: (4 + 2) / 2
    return adv, asked


def by_step(step_adv, sizes, width):
    return np.r_[np.concatenate([np.full(n, a) for a, n in zip(step_adv, sizes)]), np.zeros(width - sum(sizes))]


def test_no_step_cap_values_every_step_prefix():
    adv, asked = four_and_two_step_advantages(None)
    # The step arrays are as wide as the longest rollout (4 steps); the 2-step rollout is padded. Its two states
    # (the prompt, and the first step both rollouts open with) are FOUR_STEPS's first two: not sampled again.
    assert asked == [0, 24, 46, 72]
    np.testing.assert_allclose(adv[0], by_step([0.25 - 0.5, 0.75 - 0.25, 0.5 - 0.75, 1.0 - 0.5], [24, 22, 26, 25],
                                               adv.shape[1]), atol=1e-6)
    np.testing.assert_allclose(adv[1], by_step([0.25 - 0.5, 0.0 - 0.25], [24, 24], adv.shape[1]), atol=1e-6)


@pytest.mark.parametrize("cap, asked_first, step_adv", [
    # Prompt + 2 step prefixes sampled; V(after step 3) := reward 1, so step 3 gets 1 - 0.75 and step 4 gets 0.
    (2, [0, 24, 46], [0.25 - 0.5, 0.75 - 0.25, 1.0 - 0.75, 0.0]),
    (1, [0, 24], [0.25 - 0.5, 1.0 - 0.25, 0.0, 0.0]),
    (3, [0, 24, 46, 72], [0.25 - 0.5, 0.75 - 0.25, 0.5 - 0.75, 1.0 - 0.5]),  # 4 steps need only 3 prefixes: no cut
])
def test_step_cap_is_vineppos_max_step_for_value_estimation(cap, asked_first, step_adv):
    adv, asked = four_and_two_step_advantages(cap)
    # The 2-step rollout needs V of the prompt and its first step only, both FOUR_STEPS's states too: under any cap
    # >= 1 it is unchanged, and asks for nothing more.
    assert asked == asked_first
    np.testing.assert_allclose(adv[0], by_step(step_adv, [24, 22, 26, 25], adv.shape[1]), atol=1e-6)
    np.testing.assert_allclose(adv[1], by_step([0.25 - 0.5, 0.0 - 0.25], [24, 24], adv.shape[1]), atol=1e-6)


def test_a_state_several_rollouts_share_is_sampled_once_and_its_value_shared():
    """VinePPO deduplicates its value queries: a problem's rollouts share its prompt's state, and rollouts that open
    with the same step share that prefix. The same completion under another problem is another state."""
    tok = build_tokenizer()
    prompt_a, prompt_b = (tok.encode(p, add_special_tokens=False) for p in ("1000+2000+3000+3000-4000-1\n", "9-4\n"))
    _, _, tokens, lengths = batch(tok, [FOUR_STEPS, TWO_STEPS, TWO_STEPS])
    prompts, golds = [prompt_a, prompt_a, prompt_b], ["4999", "4999", "5"]
    asked = []

    def sample_rewards(asked_prompts, heads, asked_golds, budgets):  # a distinct value for each state asked
        asked.extend((p == prompt_a, len(h), g) for p, h, g in zip(asked_prompts, heads, asked_golds))
        return np.arange(len(heads)) / 10

    adv, stats = vineppo.token_advantages(sample_rewards, tok, prompts, golds, tokens, lengths,
                                          [FOUR_STEPS, TWO_STEPS, TWO_STEPS], np.array([1.0, 0.0, 1.0]),
                                          max_steps=None)
    assert asked == [(True, 0, "4999"), (True, 24, "4999"), (True, 46, "4999"), (True, 72, "4999"),
                     (False, 0, "5"), (False, 24, "5")]
    assert stats["vineppo/states_sampled"] == 6 / 8
    # V(a) = 0, V(a + step 1) = 0.1, V(a + steps 1-2) = 0.2, V(a + steps 1-3) = 0.3; V(b) = 0.4, V(b + step 1) = 0.5
    np.testing.assert_allclose(adv[0], by_step([0.1, 0.1, 0.1, 0.7], [24, 22, 26, 25], adv.shape[1]), atol=1e-6)
    np.testing.assert_allclose(adv[1], by_step([0.1, -0.1], [24, 24], adv.shape[1]), atol=1e-6)
    np.testing.assert_allclose(adv[2], by_step([0.1, 0.5], [24, 24], adv.shape[1]), atol=1e-6)


def test_a_continuation_is_graded_with_the_steps_before_it():
    """A policy that always writes the same right solution, which states its answer and then one more step: every
    prefix's continuations complete it, so each prefix is worth the rollout's reward and every advantage is 0.
    Grading the continuation alone would value the prefix that already holds the box at 0."""
    tok = build_tokenizer()
    solution = "1000+2000+3000+3000=9000\n9000-4000-1=4999\n\\boxed{4999}\n\nThat is the sum, as asked."
    prompts, golds, tokens, lengths = batch(tok, [solution])
    ids = tokens[0, : lengths[0]].tolist()
    stop = tok.eos_token_id

    class Deterministic:  # K continuations of a prefix: the rest of the solution, then the stop token
        num_samples = 2

        def __call__(self, params, prefixes, rng, budgets):
            rest = [ids[len(p) - len(prompts[0]):] + [stop] for p in prefixes]
            out = np.zeros((len(prefixes), 2, max(map(len, rest))), int)
            for j, r in enumerate(rest):
                out[j, :, : len(r)] = r
            lens = np.array([[len(r)] * 2 for r in rest])
            return out, lens, np.ones_like(lens, bool), None

    value_fn = vineppo.value_sampler(Deterministic(), None, tok, seed=0)
    adv, stats = vineppo.token_advantages(value_fn, tok, prompts, golds, tokens, lengths, [solution],
                                          np.array([1.0]), max_steps=None)
    assert stats["vineppo/steps_per_rollout"] == 3.0 and stats["vineppo/value_prefix"] == 1.0
    np.testing.assert_array_equal(adv, np.zeros_like(adv))


def test_the_value_pass_asks_the_engine_for_a_few_shapes_only():
    """The prefix count changes every step; each chunk is padded to a power of two (at most the chunk), so the
    engine compiles for a few batch sizes, not one per remainder. The padding's samples are dropped."""
    tok = build_tokenizer()
    stop = tok.eos_token_id
    asked = []

    class Recording:
        num_samples = 1

        def __call__(self, params, prefixes, rng, budgets):
            asked.append(len(prefixes))
            assert len(budgets) == len(prefixes)
            rows = [tok.encode("\\boxed{5}" if i < 3 else "\\boxed{7}", add_special_tokens=False) + [stop]
                    for i in range(len(prefixes))]
            return (np.array(rows)[:, None], np.full((len(rows), 1), len(rows[0])), np.ones((len(rows), 1), bool),
                    None)

    value_fn = vineppo.value_sampler(Recording(), None, tok, seed=0, chunk=8)
    values = value_fn([[1]] * 11, [[]] * 11, ["5"] * 11, np.full(11, 4))
    assert asked == [8, 4]  # 8, then 3 padded to 4
    np.testing.assert_array_equal(values, [1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1])


def test_each_prefix_is_valued_against_its_own_gold():
    """K = 2 samples of each of 3 prefixes of different problems: each sample is graded against its own problem's
    gold (grading them against the golds tiled, [5, 7, 9, 5, 7, 9], valued these [0.5, 0.5, 0])."""
    tok = build_tokenizer()
    stop = tok.eos_token_id
    answers = [["5", "5"], ["7", "5"], ["9", "9"]]  # prefix 1: one of its two is wrong

    class TwoEach:
        num_samples = 2

        def __call__(self, params, prefixes, rng, budgets):
            rows = [[tok.encode(f"\\boxed{{{a}}}", add_special_tokens=False) + [stop] for a in answers[min(i, 2)]]
                    for i in range(len(prefixes))]  # the chunk's padding repeats prefix 2
            return (np.array(rows), np.full((len(rows), 2), len(rows[0][0])), np.ones((len(rows), 2), bool), None)

    values = vineppo.value_sampler(TwoEach(), None, tok, seed=0)([[1]] * 3, [[]] * 3, ["5", "7", "9"],
                                                                  np.full(3, 4))
    np.testing.assert_array_equal(values, [1, 0.5, 1])


def test_a_continuation_cut_off_at_its_budget_is_worth_truncated_reward():
    """VinePPO scores a response cut off by length 0 (``penalize_unfinished_response``), its MC continuations too;
    the value pass graded its text, so a continuation that boxed the right answer and then ran to the cap was worth
    1 (review 2026-12-07). ``RLConfig.truncated_reward`` (vineppo's own: 0) prices it; None grades the text."""
    import gin

    from rlvjax.rewards.registry import Graded

    tok = build_tokenizer()
    stop = tok.eos_token_id

    class CutOff:  # prefix 0: one finished right answer, one right answer cut off; prefix 1: both cut off
        num_samples = 2

        def __call__(self, params, prefixes, rng, budgets):
            right = tok.encode("\\boxed{5}", add_special_tokens=False)
            rows = np.array([[right + [stop], right + [1]] for _ in prefixes])
            finished = np.array([[True, False]] + [[False, False]] * (len(prefixes) - 1))
            return rows, np.full(finished.shape, rows.shape[-1]), finished, None

    args = ([[1]] * 2, [[]] * 2, ["5", "5"], np.full(2, 4))
    np.testing.assert_array_equal(vineppo.value_sampler(CutOff(), None, tok, seed=0)(*args), [1, 1])
    np.testing.assert_array_equal(vineppo.value_sampler(CutOff(), None, tok, seed=0, truncated_reward=0.0)(*args),
                                  [0.5, 0])
    np.testing.assert_array_equal(vineppo.value_sampler(CutOff(), None, tok, seed=0, truncated_reward=-1.0)(*args),
                                  [0, -1])
    # the rollouts' rewards and labels alike: a cut-off rollout gets the reward and the label 'No'
    graded = Graded(np.array([1.0, 1.0, 0.0, 0.5], np.float32), np.array([True, True, False, True]))
    cut = graded.truncated_as(np.array([[True, False], [False, True]]), -0.5)
    np.testing.assert_array_equal(cut.rewards, [1.0, -0.5, -0.5, 0.5])
    np.testing.assert_array_equal(cut.correct, [True, False, False, True])
    assert cut.rewards.dtype == np.float32 and graded.truncated_as(np.zeros(4, bool), None) is graded
    # None: the algorithm's own, VinePPO's 0 however vineppo is chosen (vineppo.gin, a binding, the API's
    # algorithm=), graded on the text for the others; a value set is kept
    assert RLConfig().reward_if_cut is None and RLConfig(algorithm="vineppo").reward_if_cut == 0.0
    assert RLConfig(algorithm="vineppo", truncated_reward=-1.0).reward_if_cut == -1.0
    assert RLConfig(truncated_reward=0.5).reward_if_cut == 0.5
    with pytest.raises(ValueError, match="truncated_reward=nan must be a finite number"):
        RLConfig(truncated_reward=float("nan"))
    import rlvjax
    from rlvjax import cli, experiment
    from rlvjax.config import Config

    gin.clear_config()
    try:
        cli.parse_gin([str(experiment.CONFIGS / "algorithms" / "vineppo.gin")], [])
        assert Config.from_gin().rl.reward_if_cut == 0.0  # VinePPO's MATH setting
    finally:
        gin.clear_config()
    api = rlvjax.RLVConfig(output_dir="x", algorithm="vineppo", group_size=1).to_config(None, ("math",))
    assert api.rl.reward_if_cut == 0.0


def test_step_cap_config():
    assert RLConfig().vineppo_max_steps is None
    assert RLConfig(vineppo_max_steps=25).vineppo_max_steps == 25
    for bad in (0, -1, "8", 2.0):
        with pytest.raises(ValueError, match="vineppo_max_steps"):
            RLConfig(vineppo_max_steps=bad)


def test_the_value_pass_caps_each_prefix_continuation_at_its_budget():
    """``PoolSampler``'s per-prompt ``limits`` (the value pass's budgets): each prompt's samples stop at their cap,
    and up to it they are the uncapped samples (each sample's keys are its own)."""
    from flax import nnx

    from rlvjax import experiment, parallel, policy_tokens
    from rlvjax.pool import PoolSampler
    from rlvjax.rl.config import RLConfig

    model, tokenizer = experiment.build_policy(experiment.ModelSpec(hidden_size=32, intermediate_size=64,
                                                                    num_layers=1, num_heads=2, num_kv_heads=1))
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    rl = RLConfig(max_new_tokens=8, temperature=1.0)
    step_setup = policy_tokens.step_setup(graphdef, None, rl, tokenizer)
    sampler = PoolSampler.build(step_setup, parallel.make_mesh(parallel.MeshConfig()), params, num_samples=2,
                                score=False)
    prompts = [tokenizer.encode(p, add_special_tokens=False) for p in ("1+2=", "30+4=", "5=")]
    key = jax.random.key(3)
    free_tokens, free_lengths, _, _ = sampler(params, prompts, key)
    tokens, lengths, _, _ = sampler(params, prompts, key, np.array([2, 8, 1]))
    assert (free_lengths[[0, 2]] > [[2], [1]]).all()  # the caps bind
    np.testing.assert_array_equal(lengths, np.minimum(free_lengths, [[2], [8], [1]]))
    for p in range(3):
        for k in range(2):
            n = lengths[p, k]
            np.testing.assert_array_equal(tokens[p, k, :n], free_tokens[p, k, :n])
