"""update_step against direct computations of the RL and verification objectives on a tiny random model."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rlvjax.model.transformer import ModelConfig, Transformer
from rlvjax.rl import losses, steps
from rlvjax.rl.config import OptimConfig, RLConfig

SUFFIX = (3, 20, 21)
YES, NO, STOP = 4, 5, 2


@pytest.fixture(scope="module")
def setup():
    cfg = ModelConfig(vocab_size=48, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      qkv_bias=True)
    model = Transformer(cfg, nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    return graphdef, params


def make_step_setup(graphdef, suppress_ids=(), **rl):
    rl = RLConfig(**{"group_size": 2, "max_new_tokens": 6, "temperature": 0.9, **rl})
    tx = OptimConfig(learning_rate=1e-3).make(10)
    return steps.StepSetup(graphdef, tx, rl, SUFFIX, YES, NO, (STOP,), 0, suppress_ids)


def rollouts_and_labels(step_setup, params):
    prompts = jnp.asarray([[0, 0, 7, 8, 9], [10, 11, 12, 13, 14]])
    mask = prompts > 0
    roll = steps.rollout_step(step_setup, params, prompts, mask, jax.random.key(0))
    # Force a mix of finished / truncated rows so both layouts are exercised.
    tokens = np.asarray(roll.tokens).copy()
    tokens[0, 0, 2], tokens[0, 0, 3:] = STOP, 0
    lengths = np.asarray(roll.lengths).copy()
    lengths[0, 0] = 3
    finished = np.asarray(roll.finished).copy()
    finished[0, 0] = True
    roll = roll._replace(tokens=jnp.asarray(tokens), lengths=jnp.asarray(lengths), finished=jnp.asarray(finished))
    correct = jnp.asarray([[True, False], [False, True]])  # the rollouts' verdicts (Rewards')
    # The forced stop token was not sampled: its log-prob is the policy's (teacher forced), as the sampler's would be
    # (a stale one made a first-minibatch gap of 1e-2 wherever this row landed in it).
    batch = steps.build_update_batch(step_setup, roll, jnp.zeros(roll.tokens.shape), correct)
    forced = steps.policy_and_verify_logits(step_setup, params, batch)[0][0, 2]
    roll = roll._replace(logprobs=roll.logprobs.at[0, 0, 2].set(forced))
    return roll, correct


def direct_sequences(roll):
    """(prompt + completion incl. stop, prompt + completion without stop + suffix) as ragged lists per row."""
    out = []
    for b in range(2):
        prompt = [t for t in np.asarray(roll.prompt_ids[b]) if t > 0]
        for g in range(2):
            n = int(roll.lengths[b, g])
            comp = list(np.asarray(roll.tokens[b, g, :n]))
            body = comp[:-1] if bool(roll.finished[b, g]) else comp
            out.append((prompt, comp, prompt + body + list(SUFFIX)))
    return out


@pytest.mark.slow
def test_lambda_zero_is_plain_rl_and_masked_policy_is_verification_sft(setup):
    graphdef, params = setup
    step_setup = make_step_setup(graphdef, lambda_verify=0.0)
    roll, correct = rollouts_and_labels(step_setup, params)
    adv = jnp.asarray([[1.0, -1.0], [-0.5, 0.5]])
    batch = steps.build_update_batch(step_setup, roll, jnp.broadcast_to(adv[..., None], roll.tokens.shape), correct)
    grads = steps._minibatch_grads(step_setup, params, None, batch)[0]
    seqs = direct_sequences(roll)
    old = np.asarray(roll.logprobs).reshape(4, -1)

    def direct_rl(p):
        model = nnx.merge(graphdef, p)
        total, count = 0.0, 0
        for i, (prompt, comp, _) in enumerate(seqs):
            logits = model(jnp.asarray([prompt + comp]))[0] / 0.9
            logp = jax.nn.log_softmax(logits)[len(prompt) - 1:-1][jnp.arange(len(comp)), jnp.asarray(comp)]
            ratio = jnp.exp(logp - old[i, :len(comp)])
            a = adv.reshape(-1)[i]
            total += jnp.sum(-jnp.minimum(ratio * a, jnp.clip(ratio, 0.8, 1.2) * a))
            count += len(comp)
        return total / count

    expected = jax.jit(jax.grad(direct_rl))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), grads, expected)

    sft = make_step_setup(graphdef, lambda_verify=1.0)
    batch = batch._replace(target_mask=jnp.zeros_like(batch.target_mask))
    grads = steps._minibatch_grads(sft, params, None, batch)[0]

    def direct_sft(p):
        model = nnx.merge(graphdef, p)
        labels = [YES, NO, NO, YES]
        nll = [-jax.nn.log_softmax(model(jnp.asarray([v]))[0, -1])[y] for (_, _, v), y in zip(seqs, labels)]
        return sum(nll) / 4

    expected = jax.jit(jax.grad(direct_sft))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), grads, expected)


def test_the_policy_learns_the_stop_token_and_the_verifier_term_scales_with_lambda(setup):
    """Row 0 finished after 3 tokens, the last the stop token: the policy loss covers all 3 (the model learns to
    stop), the verifier reads the 2 before it. The objective is L_RL + lambda * L_V, so its gradient is linear in
    lambda, with a verifier part that is not zero (the slow direct-computation test checks lambda 0 and 1 only)."""
    graphdef, params = setup
    roll, correct = rollouts_and_labels(make_step_setup(graphdef), params)
    adv = jnp.broadcast_to(jnp.asarray([[1.0, -1.0], [-0.5, 0.5]])[..., None], roll.tokens.shape)
    batch = steps.build_update_batch(make_step_setup(graphdef), roll, adv, correct)
    np.testing.assert_array_equal(batch.target_mask[0], [1, 1, 1, 0, 0, 0])
    prompt = roll.prompt_ids.shape[1]
    np.testing.assert_array_equal(batch.input_mask[0, prompt:prompt + 6], [1, 1, 0, 0, 0, 0])
    grads = {lam: steps._minibatch_grads(make_step_setup(graphdef, lambda_verify=lam), params, None, batch)[0]
             for lam in (0.0, 1.0, 2.5)}
    verifier_part = jax.tree.map(jnp.subtract, grads[1.0], grads[0.0])
    assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(verifier_part)) > 1e-4
    jax.tree.map(lambda g, g0, v: np.testing.assert_allclose(g, g0 + 2.5 * v, atol=1e-6), grads[2.5], grads[0.0],
                 verifier_part)


def test_micro_batches_give_the_full_batch_gradient(setup):
    graphdef, params = setup
    roll, correct = rollouts_and_labels(make_step_setup(graphdef), params)
    for aggregation in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        full = make_step_setup(graphdef, aggregation=aggregation)
        micro = make_step_setup(graphdef, aggregation=aggregation, micro_batch_size=1)
        adv = jnp.broadcast_to(jnp.asarray([[1.0, -1.0], [-0.5, 0.5]])[..., None], roll.tokens.shape)
        batch = steps.build_update_batch(full, roll, adv, correct)
        g_full, s_full, _, _ = steps._minibatch_grads(full, params, None, batch)
        g_micro, s_micro, _, _ = steps._minibatch_grads(micro, params, None, batch)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g_full, g_micro)
        # the advantages sum to 0, so the loss is ~0 (1e-8 here): compared at the scale of its O(1) terms, as the
        # gradients are (rtol alone failed on an AVX-512 host: -1.5e-8 vs -4.5e-8)
        np.testing.assert_allclose(s_full["policy_loss"], s_micro["policy_loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("suppress_ids, beta", [((), 0.1), ((0, 1, 6, 30, 31), 0.0)])
def test_update_step_first_epoch_is_on_policy(setup, suppress_ids, beta):
    graphdef, params = setup
    step_setup = make_step_setup(graphdef, suppress_ids, num_ppo_epochs=2, num_minibatches=2, beta=beta)
    roll, correct = rollouts_and_labels(step_setup, params)
    state = steps.init_state(params, step_setup.tx, seed=0, keep_reference=beta > 0)
    adv = jnp.broadcast_to(jnp.asarray([[1.0, -1.0], [-0.5, 0.5]])[..., None], roll.tokens.shape)
    batch = steps.build_update_batch(step_setup, roll, adv, correct)
    new, metrics = jax.jit(lambda s, b: steps.update_step(step_setup, s, b))(state, batch)
    assert not np.isin(np.asarray(roll.tokens)[np.asarray(batch.target_mask).reshape(roll.tokens.shape)],
                       suppress_ids).any()
    # The sampler's log-probs are the trainer's (suppressed ids masked in both): no gap on the first minibatch.
    assert float(metrics["policy/logp_gap"]) < 1e-5
    # KL only against a reference policy (beta = 0 keeps none: a logged 0 would read as "no drift").
    assert ("policy/kl" in metrics) == (beta > 0)
    assert int(new.step) == 1 and int(metrics["nonfinite_updates"]) == 0
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new.params, params)
    assert max(jax.tree.leaves(moved)) > 0


def test_logged_verify_figures_read_the_rollouts_and_the_trained_loss_is_logged_beside(setup):
    """metrics.jsonl's verify_loss and verify/*: the verifier on the 4 rollouts (as a lambda = 0 baseline measures
    it), verify_loss_trained the L_V over them and their partial solutions; a first minibatch of partial solutions
    alone measured nothing: NaN, not 0 (review)."""
    graphdef, params = setup
    step_setup = make_step_setup(graphdef, verify_prefixes=1)
    roll, correct = rollouts_and_labels(step_setup, params)
    adv = jnp.zeros(roll.tokens.shape)
    batch = steps.build_update_batch(step_setup, roll, adv, correct)  # 4 rollouts, then their 4 partial solutions
    _, stats, _, vdiag = steps._minibatch_grads(step_setup, params, None, batch)
    state = steps.init_state(params, step_setup.tx, seed=0, keep_reference=False)
    _, metrics = jax.jit(lambda s, b: steps.update_step(step_setup, s, b))(state, batch)
    np.testing.assert_allclose(metrics["verify_loss"], losses.mean_diagnostics(vdiag)["nll"], rtol=1e-6)
    np.testing.assert_allclose(metrics["verify_loss_trained"], stats["verify_loss"], rtol=1e-6)
    assert metrics["verify/count"] == 4 and metrics["verify_loss"] != metrics["verify_loss_trained"]
    plain = make_step_setup(graphdef)
    _, metrics = jax.jit(lambda s, b: steps.update_step(plain, s, b))(
        steps.init_state(params, plain.tx, seed=0, keep_reference=False),
        steps.build_update_batch(plain, roll, adv, correct))
    assert "verify_loss_trained" not in metrics and metrics["verify/count"] == 4
    # 8 minibatches of one row: the first optimizer step's row is a rollout or a partial solution
    single = make_step_setup(graphdef, verify_prefixes=1, num_minibatches=8)
    firsts = []
    for seed in (0, 4):  # a partial solution first, then a rollout
        state = steps.init_state(params, single.tx, seed=seed, keep_reference=False)
        _, metrics = jax.jit(lambda s, b: steps.update_step(single, s, b))(state, batch)  # noqa: B023
        _, perm_key = jax.random.split(jax.random.wrap_key_data(state.rng))
        first = int(jax.random.permutation(jax.random.fold_in(perm_key, 0), 8)[0])
        firsts.append(first)
        assert int(metrics["verify/count"]) == (first < 4)
        assert np.isnan(metrics["verify_loss"]) == (first >= 4) == np.isnan(metrics["verify/accuracy"])
    assert firsts[0] >= 4 > firsts[1]


@pytest.mark.slow
def test_scanned_epochs_and_minibatches_equal_the_unrolled_loop(setup):
    """update_step's lax.scan over epochs x minibatches against the plain Python loop it replaced."""
    graphdef, params = setup
    step_setup = make_step_setup(graphdef, num_ppo_epochs=2, num_minibatches=2, beta=0.1)
    roll, correct = rollouts_and_labels(step_setup, params)
    state = steps.init_state(params, step_setup.tx, seed=3, keep_reference=True)
    adv = jnp.broadcast_to(jnp.asarray([[1.0, -1.0], [-0.5, 0.5]])[..., None], roll.tokens.shape)
    batch = steps.build_update_batch(step_setup, roll, adv, correct)
    new, metrics = jax.jit(lambda s, b: steps.update_step(step_setup, s, b))(state, batch)

    _, perm_key = jax.random.split(jax.random.wrap_key_data(state.rng))
    p, opt, losses_seen, rows = state.params, state.opt_state, [], batch.targets.shape[0]
    diagnostics = []
    for epoch in range(2):
        order = jax.random.permutation(jax.random.fold_in(perm_key, epoch), rows)
        for m in range(2):
            mb = jax.tree.map(lambda x: jnp.take(x, order[m * rows // 2:(m + 1) * rows // 2], axis=0), batch)
            grads, stats, pdiag, _ = steps._minibatch_grads(step_setup, p, state.ref_params, mb)
            updates, opt = step_setup.tx.update(grads, opt, p)
            p = optax.apply_updates(p, updates)
            losses_seen.append(float(stats["policy_loss"]))
            diagnostics.append({k: float(v) for k, v in pdiag.items()})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), new.params, p)
    np.testing.assert_allclose([metrics["policy_loss"], metrics["last_policy_loss"]],
                               [losses_seen[0], losses_seen[-1]], rtol=1e-5, atol=1e-7)
    assert losses_seen[0] != losses_seen[-1]  # four different minibatch updates, not one repeated
    # Ratios, clip fractions and KL over all four updates (they were the first, on-policy one's: always 1 and 0).
    tokens = sum(d["count"] for d in diagnostics)
    for key in ("ratio", "clipped", "clipped_low", "clipped_high", "kl"):
        np.testing.assert_allclose(metrics[f"policy/{key}"], sum(d[f"{key}_sum"] for d in diagnostics) / tokens,
                                   rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["policy/ratio_max"], max(d["ratio_max"] for d in diagnostics), rtol=1e-6)
    np.testing.assert_allclose(metrics["policy/logp_gap"], diagnostics[0]["logp_gap_sum"] / diagnostics[0]["count"],
                               rtol=1e-5, atol=1e-9)
    assert metrics["policy/ratio_max"] > 1.0 and diagnostics[0]["ratio_max"] == pytest.approx(1.0, abs=1e-5)


def test_verify_balance_weights_the_two_classes_equally_in_each_minibatch(setup):
    """The weights are the minibatch's own: with the rows shuffled into minibatches (num_minibatches > 1), weights of
    the whole batch would tilt each optimizer step towards the class its minibatch happened to draw more of."""
    graphdef, params = setup
    step_setup = make_step_setup(graphdef, verify_balance=True)
    roll, _ = rollouts_and_labels(step_setup, params)
    correct = jnp.asarray([[True, False], [False, False]])  # one right rollout of four
    batch = steps.build_update_batch(step_setup, roll, jnp.zeros(roll.tokens.shape), correct)
    np.testing.assert_array_equal(batch.verify_target, [YES, NO, NO, NO])
    logits = steps.policy_and_verify_logits(step_setup, params, batch)[1]
    ce = -np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32)))[np.arange(4), np.asarray(batch.verify_target)]
    for rows, expected in (([0, 1, 2], 0.5 * ce[0] + 0.5 * ce[1:3].mean()),  # 1 Yes, 2 No: half and half
                           ([0, 1, 2, 3], 0.5 * ce[0] + 0.5 * ce[1:].mean()),
                           ([1, 2, 3], ce[1:].mean())):  # one class only: a plain mean
        minibatch = jax.tree.map(lambda x: x[np.asarray(rows)], batch)  # noqa: B023
        _, stats, _, vdiag = steps._minibatch_grads(step_setup, params, None, minibatch)
        np.testing.assert_allclose(stats["verify_loss"], expected, rtol=1e-5)
        # the logged diagnostics stay unweighted: the verifier's cross-entropy and accuracy on these rollouts
        np.testing.assert_allclose(losses.mean_diagnostics(vdiag)["nll"], ce[rows].mean(), rtol=1e-5)
        assert losses.mean_diagnostics(vdiag)["count"] == len(rows)
    plain = make_step_setup(graphdef)
    _, stats, _, _ = steps._minibatch_grads(plain, params, None, jax.tree.map(lambda x: x[:3], batch))
    np.testing.assert_allclose(stats["verify_loss"], ce[:3].mean(), rtol=1e-5)


def test_the_verifier_learns_the_given_verdicts_and_the_policy_the_summed_reward(setup):
    """A format bonus every rollout earns lifts each summed reward to >= 0.5; the labels are still the verdicts
    given beside the rewards (``Rewards``' label reward), and the advantages still come from the sum."""
    graphdef, params = setup
    step_setup = make_step_setup(graphdef)
    roll, _ = rollouts_and_labels(step_setup, params)
    rewards = jnp.asarray([[1.5, 0.5], [0.5, 0.5]])  # 1 for a right answer + 0.5 for the format
    batch, adv = steps.prepare_update(step_setup, roll, rewards, rewards >= 1.0)
    np.testing.assert_array_equal(batch.verify_target, [YES, NO, NO, NO])
    assert adv[0, 0] > 0 > adv[0, 1] and not np.asarray(adv[1]).any()


@pytest.mark.parametrize("m", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_verify_prefixes_add_verify_only_rows_of_partial_solutions(setup, m):
    graphdef, params = setup
    step_setup = make_step_setup(graphdef, verify_prefixes=m)
    roll, correct = rollouts_and_labels(step_setup, params)
    adv = jnp.broadcast_to(jnp.asarray([[1.0, -1.0], [-0.5, 0.5]])[..., None], roll.tokens.shape)
    batch = steps.build_update_batch(step_setup, roll, adv, correct)
    plain = steps.build_update_batch(make_step_setup(graphdef), roll, adv, correct)
    assert batch.input_ids.shape[0] == 4 * (1 + m)
    # At lambda_verify = 0 (a lambda = 0 baseline or sweep point) the rows would carry no loss: none are built.
    unverified = steps.build_update_batch(make_step_setup(graphdef, verify_prefixes=m, lambda_verify=0.0), roll, adv,
                                          correct)
    chex.assert_trees_all_equal(unverified, plain)
    assert RLConfig(verify_prefixes=m, lambda_verify=0.0).update_rows_per_rollout == 1
    np.testing.assert_array_equal(batch.verify_target, np.tile([YES, NO, NO, YES], 1 + m))  # the rollout's label
    assert not np.asarray(batch.target_mask[4:]).any() and not np.asarray(batch.advantages[4:]).any()
    _, stats, _, vdiag = steps._minibatch_grads(step_setup, params, None, batch)
    _, plain_stats, _, plain_vdiag = steps._minibatch_grads(make_step_setup(graphdef), params, None, plain)
    np.testing.assert_allclose(stats["policy_loss"], plain_stats["policy_loss"], rtol=1e-6)  # no policy term added
    # The verify loss: mean cross-entropy over every rollout and its partial solutions cut after
    # max(body * j // (m + 1), 1) tokens, each followed by the verify prompt.
    model = nnx.merge(graphdef, params)
    losses_ = []
    for i, (prompt, comp, _) in enumerate(direct_sequences(roll)):
        body = comp[:-1] if i == 0 else comp  # row 0 ends on the stop token (rollouts_and_labels)
        for j in range(m + 1):
            cut = len(body) if j == 0 else max(len(body) * j // (m + 1), min(len(body), 1))
            logits = model(jnp.asarray([prompt + body[:cut] + list(SUFFIX)]))[0, -1]
            target = YES if i in (0, 3) else NO
            losses_.append(-float(jax.nn.log_softmax(logits)[target]))
    np.testing.assert_allclose(stats["verify_loss"], np.mean(losses_), rtol=1e-5)
    # The verifier's diagnostics (metrics.jsonl's verify_loss and verify/*) read the 4 rollouts alone, as a lambda =
    # 0 baseline's do (without partial rows): with them, the same model on the same rollouts logged other values
    for diag in (vdiag, plain_vdiag):
        seen = losses.mean_diagnostics(diag)
        assert seen["count"] == 4
        np.testing.assert_allclose(seen["nll"], np.mean(losses_[::m + 1]), rtol=1e-5)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        RLConfig(algorithm="ppo")
    with pytest.raises(ValueError, match="lambda_verify=-1"):
        RLConfig(lambda_verify=-1)
    with pytest.raises(ValueError, match="group_size=1"):
        RLConfig(group_size=1)
    with pytest.raises(ValueError, match="eps_low=0"):
        RLConfig(eps_low=0)
    with pytest.raises(ValueError, match="RLConfig.aggregation='mean' is unknown"):
        RLConfig(aggregation="mean")


@pytest.mark.parametrize("memory", [dict(remat="full"), dict(remat="dots_with_no_batch_dims_saveable"),
                                    dict(logprob_chunk_size=4), dict(remat="full", logprob_chunk_size=4)],
                         ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()))
def test_remat_and_chunked_logprobs_keep_loss_and_gradients(setup, memory):
    graphdef, params = setup
    plain = make_step_setup(graphdef, beta=0.1)
    roll, correct = rollouts_and_labels(plain, params)
    adv = jnp.broadcast_to(jnp.asarray([[1.0, -1.0], [-0.5, 0.5]])[..., None], roll.tokens.shape)
    batch = steps.build_update_batch(plain, roll, adv, correct)  # 6 completion positions: chunks of 4 and 2
    reference = jax.tree.map(lambda x: x * 1.01, params)  # a KL term with a nonzero gradient
    g0, s0, _, _ = steps._minibatch_grads(plain, params, reference, batch)
    g1, s1, _, _ = steps._minibatch_grads(make_step_setup(graphdef, beta=0.1, **memory), params, reference, batch)
    for key in ("policy_loss", "verify_loss"):
        np.testing.assert_allclose(s1[key], s0[key], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.abs(b).max())), g1, g0)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_without_warmup_the_first_update_runs_at_the_learning_rate(schedule):
    """warmup_steps = 0 is no warm-up (docs/config.md): optax's cosine warm-up of one step put the first update at
    learning rate 0."""
    tx = OptimConfig(learning_rate=1e-3, schedule=schedule, weight_decay=0.0).make(10)
    params = {"w": jnp.zeros(3)}
    updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -1e-3, rtol=1e-3)
