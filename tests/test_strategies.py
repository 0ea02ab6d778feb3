"""The length and particle strategies on hand-made pools and by hand, and every live strategy against the engine's
own pool on a briefly warm-started built-in model (the live runs equal what the replays or the votes give)."""

import dataclasses

import numpy as np
import pytest

from rlvjax import parallel, testtime
from rlvjax.strategies import adaptive, length, particle
from rlvjax.strategies.outcome import leader_grade


def test_length_stops_once_the_vote_is_confident_and_prices_the_budget_it_stopped_at():
    # Problem 0: two samples finish within 10 tokens agreeing (scores 0.9 + 0.8 = 1.7 of 4 samples: 0.425), a third
    # by 20 (0.9 more: 2.6 / 4 = 0.65). Problem 1: nothing finishes until 30, where the vote is 2 against 1.
    classes = np.array([[0, 0, 0, -1], [1, 0, 1, -1]])
    scores = np.array([[0.9, 0.8, 0.9, 0.1], [0.5, 0.9, 0.2, 0.3]])
    correct = np.array([[1, 1, 1, 0], [0, 1, 0, 0]], float)
    lengths = np.array([[8, 10, 18, 30], [25, 30, 30, 30]])
    finished = np.array([[True, True, True, False], [True, True, True, False]])
    rule = length.LengthRule(budgets=(10, 20, 30), threshold=0.6, samples=4)
    out = length.replay(classes, scores, correct, lengths, finished, rule)
    # Problem 0 stops at 20 (0.65 >= 0.6): 8 + 10 + 18 + 20 tokens. Problem 1 runs to 30: class 1 has 0.7 against
    # class 0's 0.9, so the weighted vote picks class 0 (right), confidence 0.9 / 4 below the threshold.
    np.testing.assert_array_equal(out.tokens, [56, 115])
    np.testing.assert_array_equal(out.correct, [1.0, 1.0])
    # the verifier scores the samples that vote, each once as it finishes: 3 by 20 tokens; 3 by 30
    np.testing.assert_array_equal(out.verifier_passes, [3, 3])
    lower = length.replay(classes, scores, correct, lengths, finished, dataclasses.replace(rule, threshold=0.4))
    np.testing.assert_array_equal(lower.tokens, [8 + 10 + 10 + 10, 115])  # 0.425 >= 0.4 at the first budget
    np.testing.assert_array_equal(lower.verifier_passes, [2, 3])
    assert length.confidence(classes[1], scores[1], lengths[1] <= 25) == pytest.approx(0.5 / 4)
    # Threshold 0 stops at the first answer, not at the first budget: with nothing finished by 10 (or 20) tokens,
    # problem 1 stopped at 10 with no answer (accuracy 0 at a third of the tokens, review); it runs to 30 as above
    zero = length.replay(classes, scores, correct, lengths, finished, dataclasses.replace(rule, threshold=0.0))
    np.testing.assert_array_equal(zero.tokens, [8 + 10 + 10 + 10, 115])
    np.testing.assert_array_equal(zero.correct, [1.0, 1.0])
    # A NaN score adds 0, as in the vote (it made the confidence NaN: never confident, never an early stop).
    assert length.confidence(np.zeros(4, int), np.array([np.nan, 1, 1, 1]), np.ones(4, bool)) == pytest.approx(3 / 4)
    # Two samples per run: the pool holds two disjoint runs, averaged. Problem 0: samples 0-1 agree at 10 tokens
    # (1.7 / 2 >= 0.6: 18 tokens); samples 2-3 never reach 0.6 (0.9 / 2) and run to 30 (18 + 30 tokens).
    pairs = length.replay(classes, scores, correct, lengths, finished, dataclasses.replace(rule, samples=2))
    assert pairs.tokens[0] == pytest.approx((18 + 48) / 2) and pairs.correct[0] == 1.0
    assert pairs.verifier_passes[0] == pytest.approx((2 + 1) / 2)


def test_a_tied_vote_goes_to_the_class_voted_for_first_however_the_unfinished_rows_are_numbered():
    # Three samples; row 0 has not finished at the first budget. Rows 1 ("5", right) and 2 ("7", wrong) tie at
    # score 1.0 (a saturated verifier). The live run numbers row 0 by its partial text (no answer yet), the replay
    # by its full completion's "7": both must elect row 1's "5", the tied class voted for first.
    scores, correct = np.array([[1.0, 1.0, 1.0]]), np.array([[0.0, 1.0, 0.0]])
    lengths, finished = np.array([[18, 6, 7]]), np.array([[True, True, True]])
    rule = length.LengthRule(budgets=(10, 20), threshold=0.3, samples=3)
    for numbering in ([[0, 1, 0]], [[-1, 0, 1]]):  # replay (classes of "7", "5", "7"); live (None, "5", "7")
        out = length.replay(np.array(numbering), scores, correct, lengths, finished, rule)
        np.testing.assert_array_equal(out.correct, [1.0])
        np.testing.assert_array_equal(out.tokens, [10 + 6 + 7])
    assert leader_grade(np.array([2, 0, 2, 0]), np.array([0.5, 0.5, 0.5, 0.5]), np.array([1.0, 0, 1, 0])) == 1.0


def test_particle_weights_are_normalised_and_resampling_is_deterministic():
    scores = np.array([[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    w = particle.weights(scores, 1.0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w[0], [0.9, 0.1, 0, 0])
    np.testing.assert_allclose(w[1], 0.25)  # no signal: uniform
    np.testing.assert_allclose(particle.weights(scores, 0.5)[0], np.array([0.81, 0.01, 0, 0]) / 0.82)
    # tiny raw scores at a low temperature (they underflowed to a uniform draw); one NaN drops out alone
    np.testing.assert_allclose(particle.weights(np.array([[1e-30, 1e-20, 1e-25, 1e-28]]), 0.05), [[0, 1, 0, 0]],
                               atol=1e-80)
    np.testing.assert_allclose(particle.weights(np.array([[np.nan, 0.5, 0.5, 0.0]]), 1.0), [[0, 0.5, 0.5, 0]])
    rule = particle.ParticleRule(particles=4)
    draws = [particle.resample(w, rule, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert set(draws[0][0]) <= {0, 1}  # rows of weight 0 are never drawn
    reject = particle.resample(w, dataclasses.replace(rule, resample="reject", reject_fraction=0.5),
                               np.random.default_rng(0))
    np.testing.assert_array_equal(reject[0], [0, 1, 0, 1])  # the two weakest (2, 3) become copies of 0 and 1
    np.testing.assert_array_equal(reject[2], [3, 2, 2, 3])  # equal weights: the first two are the weakest
    ranked = particle.weights(np.array([[0.9, 0.6, 0.3, 0.1], [0.1, 0.3, 0.6, 0.9]]), 1.0)
    for fraction, expected in ((0.25, [0, 1, 2, 0]), (0.5, [0, 1, 1, 0]), (0.75, [0, 0, 0, 0])):
        # the weakest int(fraction x 4) rows take copies of the survivors, the strongest first
        chosen = particle.resample(ranked, dataclasses.replace(rule, resample="reject", reject_fraction=fraction),
                                   np.random.default_rng(0))
        np.testing.assert_array_equal(chosen[0], expected, err_msg=str(fraction))
        np.testing.assert_array_equal(chosen[1], 3 - np.array(expected)[::-1], err_msg=str(fraction))


@pytest.mark.parametrize("make,message", [
    (lambda: length.LengthRule(budgets=(0, 8)), r"LengthRule.budgets=\(0, 8\) must be token budgets >= 1 \(a budget"),
    (lambda: length.LengthRule(budgets=(16, 8)), r"LengthRule.budgets=\(16, 8\) must increase"),
    (lambda: length.LengthRule(threshold=1.5), r"LengthRule.threshold=1.5 must be in \[0, 1\]"),
    (lambda: particle.ParticleRule(particles=0), r"ParticleRule.particles=0 must be >= 1 \(a budget of 0"),
    (lambda: particle.ParticleRule(resample="best"), r"ParticleRule.resample='best': use one of"),
    (lambda: particle.ParticleRule(reject_fraction=-0.1), r"ParticleRule.reject_fraction=-0.1 must be in \[0, 1\)"),
    (lambda: particle.ParticleRule(reject_fraction=1.0), r"ParticleRule.reject_fraction=1.0 must be in \[0, 1\) \(at"),
    (lambda: particle.ParticleRule(particles=3, resample="reject"),
     r"ParticleRule.reject_fraction=0.25 of particles=3 rejects no row; raise it to >= 1/3 or use more particles"),
])
def test_bad_rules_are_one_line_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.fixture(scope="module")
def warm_policy():
    """The built-in tiny model after 100 warm-start steps: it writes boxed answers (mostly wrong) and stops."""
    from flax import nnx

    from rlvjax import experiment, policy_tokens, sft
    from rlvjax.config import Config
    from rlvjax.data import tasks
    from rlvjax.rl import verifier

    config = Config()
    model, tokenizer = experiment.build_policy(config.model)
    graphdef, params = nnx.split(model)
    verifier_tokens = verifier.tokens(tokenizer, config.verifier.question)
    warm = dataclasses.replace(config.warm_start, num_steps=100, batch_size=32, verify_labels="graded")
    pairs = sft.tokenize(tokenizer, tasks.warm_start_pairs(config.task, 2000, 0.3, 0))
    params = sft.warm_start(graphdef, params, pairs, warm, eos_id=tokenizer.eos_token_id,
                            pad_id=policy_tokens.sampling_tokens(tokenizer, verifier_tokens).pad_id,
                            verify_suffix=verifier_tokens.suffix,
                            verdict_ids=(verifier_tokens.yes_id, verifier_tokens.no_id), progress=False)
    records = experiment.build_records(config.task, tokenizer)[1][:12]
    rl = dataclasses.replace(config.rl, temperature=1.0, max_new_tokens=24)
    return nnx.merge(graphdef, params), tokenizer, records, rl, parallel.make_mesh(parallel.MeshConfig())


def engine_pool(warm_policy, k, seed):
    from rlvjax.evaluate import evaluate_policy

    model, tokenizer, records, rl, mesh = warm_policy
    pool = evaluate_policy(model, tokenizer, records, rl, mesh, num_samples=k, seed=seed)[1]
    scores = testtime.Conventions().scores(pool["yes_logp"], pool["no_logp"])
    classes = np.stack([testtime.answer_classes(list(row)) for row in pool["answers"]])
    return pool, scores, classes


@pytest.mark.slow
def test_live_length_equals_its_replay_on_the_engines_pool(warm_policy):
    from rlvjax.strategies.policy import Policy

    model, tokenizer, records, rl, _ = warm_policy
    pool, scores, classes = engine_pool(warm_policy, 4, seed=1)
    assert pool["finished"].any() and (classes >= 0).any()
    rule = length.LengthRule(budgets=(10, 16, 24), threshold=0.1, samples=4)
    replayed = length.replay(classes, scores, pool["correct"], pool["lengths"], pool["finished"], rule)
    live = length.run(Policy.build(model, tokenizer, rl), records, rule, seed=1)
    np.testing.assert_array_equal(live.tokens, replayed.tokens)
    np.testing.assert_array_equal(live.correct, replayed.correct)
    np.testing.assert_array_equal(live.verifier_passes, replayed.verifier_passes)
    full = np.minimum(pool["lengths"], 24).sum(axis=1)
    assert (live.tokens < full).any() and (live.tokens == full).any()  # some problems stopped early, some not


@pytest.mark.slow
def test_policies_evaluated_with_one_samplers_dict_share_an_engine_and_keep_their_own_pools(warm_policy, monkeypatch):
    """A run's report evaluates its policies (warm start, final, lambda = 0) with one ``samplers`` dict: one engine
    per temperature, traced once (it was traced again for each policy), and each policy's pool the one its own
    engine draws."""
    from rlvjax import experiment
    from rlvjax.config import Config
    from rlvjax.evaluate import evaluate_policy
    from rlvjax.rl import steps

    model, tokenizer, records, rl, mesh = warm_policy
    untrained = experiment.build_policy(Config().model)[0]  # another policy of the same architecture
    traced, samplers = [], {}
    real = steps.rollout_step
    monkeypatch.setattr(steps, "rollout_step", lambda *args, **kwargs: traced.append(1) or real(*args, **kwargs))

    def pool(policy, temperature, shared=True):
        return evaluate_policy(policy, tokenizer, records, rl, mesh, num_samples=2, seed=3, temperature=temperature,
                               samplers=samplers if shared else None)[1]

    warm, cold = pool(model, 1.0), pool(untrained, 1.0)
    assert len(traced) == len(samplers) == 1
    pool(untrained, 2.0)
    assert len(traced) == len(samplers) == 2
    assert (warm["texts"] != cold["texts"]).any()  # the weights are the engine's arguments, not baked into it
    for policy, shared in ((model, warm), (untrained, cold)):
        alone = pool(policy, 1.0, shared=False)
        assert alone["texts"].tolist() == shared["texts"].tolist()
        np.testing.assert_array_equal(alone["yes_logp"], shared["yes_logp"])
        np.testing.assert_array_equal(alone["lengths"], shared["lengths"])


def test_a_problem_whose_rows_have_all_finished_is_resampled_no_more():
    """Problem 0's 4 rows are finished solutions from the start (answers 0-3, scores 0.3-0.6); problem 1's rows stay
    live for 20 rounds. The finished rows were redrawn every round while problem 1 went on: they collapsed onto one
    solution (3.9 of 4 seeds of 200 by max_steps 32, review), and problem 0's answer depended on its batch."""
    import types

    from rlvjax.data.tokenizer import build_tokenizer

    n, kept = 4, []

    class Decoder:  # one token a step; rows 0-3 finished before round 1, rows 4-7 after 20 steps
        max_new_tokens = 100

        def start(self, state, ids, mask, rng, particles):
            return types.SimpleNamespace(origin=np.arange(2 * n), n=np.ones(2 * n, int),
                                         live=np.arange(2 * n) >= n)

        def advance(self, state, rows, rng, limits, delimiters=()):
            steps = rows.n + rows.live if delimiters else np.where(rows.live, 21, rows.n)
            return types.SimpleNamespace(origin=rows.origin, n=steps, live=rows.live & (steps < 21))

        def score(self, state, rows):
            p = np.where(rows.origin < n, 0.3 + 0.1 * rows.origin, 0.5)
            return np.stack([np.log(p), np.log1p(-p)], axis=1)

        def take(self, rows, index):
            return types.SimpleNamespace(origin=rows.origin[index], n=rows.n[index], live=rows.live[index])

    class Policy:
        tokenizer, decoder, state, conventions = build_tokenizer(), Decoder(), None, testtime.Conventions()

        def batches(self, records, seed):
            yield records, None, None, None

        def read(self, rows, chunk, verdicts):
            kept.append(rows.origin.reshape(2, n))
            scores = self.conventions.scores(np.asarray(verdicts)[:, 0], np.asarray(verdicts)[:, 1]).reshape(2, n)
            answers = np.array([[str(o) for o in row] for row in rows.origin.reshape(2, n)], object)
            return {"answers": answers, "correct": (rows.origin.reshape(2, n) == 3).astype(float), "scores": scores}

        def classes(self, answers):
            return np.stack([testtime.answer_classes(list(row), grouping="string") for row in answers])

    for seed in range(20):
        out = particle.run(Policy(), [{}, {}], particle.ParticleRule(particles=n, step_delimiter="\n"), seed=seed)
        np.testing.assert_array_equal(kept[-1][0], np.arange(n))  # all four solutions vote
        assert out.answers[0] == "3" and out.correct[0] == 1.0  # the best-scored one wins the weighted vote
        np.testing.assert_array_equal(out.tokens, [n, n * 21])
    assert any((origins[1] != np.arange(n, 2 * n)).any() for origins in kept)  # problem 1 was resampled


@pytest.mark.slow
def test_particles_without_resampling_are_the_engines_samples_and_runs_are_deterministic(warm_policy):
    from rlvjax.rl.verifier import VerifierConfig
    from rlvjax.strategies.policy import Policy

    model, tokenizer, records, rl, _ = warm_policy
    policy = Policy.build(model, tokenizer, rl)
    # graded by the math reward at the verifier's threshold (an exported model's rlvjax_verifier.json), as evaluate
    strict = Policy.build(model, tokenizer, rl, verify=VerifierConfig(threshold=1.5))
    assert (policy.reward.threshold, strict.reward.threshold) == (0.5, 1.5)
    pool, scores, classes = engine_pool(warm_policy, 4, seed=2)
    plain = particle.run(policy, records, particle.ParticleRule(particles=4, max_steps=0), seed=2)
    np.testing.assert_array_equal(plain.tokens, pool["lengths"].sum(axis=1))
    np.testing.assert_array_equal(plain.verifier_passes, 4)  # each sample scored once, at its end
    # the fixed-N weighted vote of the same samples, truncated ones included
    assert not pool["finished"].all()
    np.testing.assert_array_equal(plain.correct, [leader_grade(c, s, g) for c, s, g in
                                                  zip(classes, scores, pool["correct"])])
    rule = particle.ParticleRule(particles=4, step_delimiter="\n", max_steps=8)
    first, again = (particle.run(policy, records, rule, seed=3) for _ in range(2))
    assert first.answers == again.answers
    np.testing.assert_array_equal(first.tokens, again.tokens)
    # a row is scored again after each step it takes: more than once for some, never more than steps + 1
    assert (first.verifier_passes > 4).any() and (first.verifier_passes <= 4 * (8 + 1)).all()
    with pytest.raises(ValueError, match="step_delimiter='@@' ends no token of this tokenizer"):
        particle.run(policy, records, dataclasses.replace(rule, step_delimiter="@@"))


@pytest.mark.slow
def test_live_adaptive_draws_the_engines_rounds(warm_policy):
    from rlvjax.pool import PoolSampler, sample_pool
    from rlvjax.rewards.registry import Rewards

    from rlvjax.strategies.policy import Policy

    model, tokenizer, records, rl, mesh = warm_policy
    policy = Policy.build(model, tokenizer, rl)
    # delta = 1 stops every problem after its first round: exactly the engine's pool at that round's seed.
    first = adaptive.run(policy, records, adaptive.AdaptiveRule(min_samples=2, max_samples=8, delta=1.0), seed=5,
                         mesh=mesh)
    sampler, params = PoolSampler.for_model(model, tokenizer, rl, mesh, num_samples=2)
    pool = sample_pool(sampler, params, tokenizer, records, Rewards(("math",)), seed=adaptive.round_seed(5, 0))
    np.testing.assert_array_equal(first.samples, 2)
    np.testing.assert_array_equal(first.tokens, pool["lengths"].sum(axis=1))
    # A round of 1 sample under the run's grpo: a pool is sampled, not compared (it raised "RLConfig.group_size=1:
    # grpo compares samples of one problem, use >= 2", a training knob the user never set)
    assert rl.algorithm == "grpo"
    one = adaptive.run(policy, records, adaptive.AdaptiveRule(min_samples=1, round_size=1, max_samples=2, delta=1.0),
                       seed=5, mesh=mesh)
    single, _ = PoolSampler.for_model(model, tokenizer, rl, mesh, num_samples=1)
    alone = sample_pool(single, params, tokenizer, records, Rewards(("math",)), seed=adaptive.round_seed(5, 0))
    np.testing.assert_array_equal(one.samples, 1)
    np.testing.assert_array_equal(one.tokens, alone["lengths"][:, 0])
    # delta = 0: a problem stops only once every resample agrees (here: all its samples in one class); rounds of 2
    # up to 6. The overall cap of 3 per problem on average then bounds the total below what the rule wanted.
    rule = adaptive.AdaptiveRule(min_samples=2, round_size=2, max_samples=6, delta=0.0)
    wanted = adaptive.run(policy, records, rule, seed=5, mesh=mesh).samples
    assert set(wanted) <= {2, 4, 6} and wanted.sum() > 3 * len(records)
    capped = adaptive.run(policy, records, dataclasses.replace(rule, mean_samples=3.0), seed=5, mesh=mesh)
    assert capped.samples.sum() <= 3 * len(records) and capped.samples.min() == 2


def test_a_truncated_row_states_its_answer_as_a_fixed_pool_does():
    """The strategies read a truncated row's stated answer, as ``sample_pool`` does (particles without resampling
    are the fixed-N vote); ``finished`` says which rows a strategy may hold back (length, below its last budget)."""
    from types import SimpleNamespace

    from rlvjax.data.tokenizer import build_tokenizer
    from rlvjax.rewards.registry import Rewards
    from rlvjax.rl.verifier import VerifierConfig
    from rlvjax.strategies.policy import Policy

    tok = build_tokenizer()
    truncated, finished = (tok.encode(t, add_special_tokens=False) for t in ("1+4=5\n\\boxed{5}\n2+", "\\boxed{7}"))
    finished = finished + [tok.eos_token_id]
    tokens = np.zeros((2, max(map(len, (truncated, finished)))), np.int32)
    tokens[0, :len(truncated)], tokens[1, :len(finished)] = truncated, finished
    rows = SimpleNamespace(tokens=tokens, n=np.array([len(truncated), len(finished)]))
    policy = SimpleNamespace(decoder=SimpleNamespace(finished=lambda rows: np.array([False, True])), tokenizer=tok,
                             reward=Rewards(("math",)), verify=VerifierConfig(), conventions=testtime.Conventions())
    read = Policy.read(policy, rows, [{"prompt": "1+4=", "gold": "5"}], np.log(np.full((2, 2), 0.5)))
    assert read["answers"].tolist() == [["5", "7"]]
    assert read["finished"].tolist() == [[False, True]] and read["correct"].tolist() == [[True, False]]


def test_a_point_on_the_fixed_curve_matches_it_at_equal_tokens_and_at_equal_accuracy():
    """Fixed-N voting is read at a point's tokens and at its accuracy on one scale (log tokens, between the pool's
    Ns, as testtime.compute_efficiency reads it): a point lying on the weighted curve halfway (in log) from N = 2 to
    N = 4 equals it at equal tokens and needs as many tokens at equal accuracy. Linear in tokens, the first read
    0.641."""
    from rlvjax.strategies import report

    fixed = {"ns": [1, 2, 4], "tokens_per_problem": [10.0, 20.0, 40.0], "weighted": [0.5, 0.6, 0.7],
             "majority": [0.5, 0.55, 0.6], "weighted_verifier_tokens_per_problem": [5, 10, 20]}
    point = {"rule": {}, "accuracy": 0.65, "tokens_per_problem": 20 * 2 ** 0.5, "samples_per_problem": 2.8,
             "verifier_tokens_per_problem": 40 - 20 * 2 ** 0.5}
    out = report.block("adaptive", [point], fixed)
    got = out["points"][0]
    assert got["fixed_weighted_at_equal_tokens"] == pytest.approx(0.65)
    assert got["fixed_majority_at_equal_tokens"] == pytest.approx(0.575)
    # With the verifier's tokens the point spends 40: majority voting (no verifier) spends that at N = 4; weighted
    # voting spends 15, 30, 60 with its own, so 40 lies log2(40 / 30) of the way from N = 2 to N = 4.
    assert got["total_tokens_per_problem"] == pytest.approx(40.0)
    assert got["fixed_majority_at_equal_total_tokens"] == pytest.approx(0.6)
    assert got["fixed_weighted_at_equal_total_tokens"] == pytest.approx(0.6 + 0.1 * np.log2(40 / 30))
    assert got["token_ratio_at_equal_accuracy"] == pytest.approx(1.0) and not got["token_ratio_is_upper_bound"]
    assert out["match"]["ratio"] is None  # 0.65 never reaches N = 4's 0.7
    # below one sample's tokens: N = 1, the least fixed-N spends; beyond the pool's largest N: unknown, not N = 4's
    # 0.7 (which would understate fixed-N there), nor an extrapolation
    low = report.block("adaptive", [{**point, "tokens_per_problem": 5.0}], fixed)["points"][0]
    assert low["fixed_weighted_at_equal_tokens"] == 0.5
    high = report.block("adaptive", [{**point, "tokens_per_problem": 41.0}], fixed)
    assert high["points"][0]["fixed_weighted_at_equal_tokens"] is None
    assert high["points"][0]["fixed_majority_at_equal_tokens"] is None
    assert "beyond the pool" in report.describe(high)
    costly = report.block("adaptive", [{**point, "accuracy": 0.7, "tokens_per_problem": 80.0}], fixed)
    assert costly["match"]["ratio"] == pytest.approx(0.5)
    assert report.describe(costly).endswith("adaptive reaches it with 80 (2.0x more)")  # it said "0.5x fewer"
    assert costly["points"][0]["token_ratio_at_equal_accuracy"] == pytest.approx(0.5)
    assert report.describe(costly).splitlines()[1].endswith(" 2.00x more")  # the table said "0.50x" under "fewer"
    # each figure ends under the end of its header (the headers sat 22 columns left of their figures, review)
    for name, rule in (("adaptive", {"delta": 0.05, "mean_samples": 4}), ("length", {"samples": 64, "threshold": 0.5}),
                       ("adaptive", {"delta": 0.123456789012345, "mean_samples": 4.123456789012345})):
        header, row = report.describe(report.block(name, [{**point, "rule": rule}], fixed)).splitlines()[:2]
        for label, figure in (("accuracy", "0.650"), ("tokens/problem", "28.3"), ("+verifier", "11.7"),
                              ("samples", "2.80")):
            assert row.index(figure) + len(figure) == header.index(label) + len(label), (header, row)
    edge = report.block("adaptive", [{**point, "tokens_per_problem": 40.0}], fixed)["points"][0]
    assert edge["fixed_weighted_at_equal_tokens"] == pytest.approx(0.7)


def test_a_policy_takes_a_reward_function_or_name():
    """README's snippets pass a Policy its reward; a function was passed on as it was and failed on its first call
    with a TypeError (review 2026-12-06)."""
    from rlvjax.rewards.registry import Rewards
    from rlvjax.strategies.policy import as_rewards

    def exact(completions, target, **kwargs):
        return [float(c.strip() == t) for c, t in zip(completions, target)]

    graded = as_rewards(exact, 0.5)(["p", "q"], [" 5", "6"], [{"prompt": "p", "target": "5"},
                                                             {"prompt": "q", "target": "7"}])
    assert graded.rewards.tolist() == [1.0, 0.0] and graded.correct.tolist() == [True, False]
    assert as_rewards("math", 0.7).names == ("math",) and as_rewards("math", 0.7).threshold == 0.7
    given = Rewards(("math",))
    assert as_rewards(given, 0.7) is given
    with pytest.raises(ValueError, match="^reward=3 is neither a reward function, a reward's name nor an "):
        as_rewards(3, 0.5)
