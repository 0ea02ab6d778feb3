"""Policy / KL / verification losses against values computed by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvjax.rl import losses


def close(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b, np.float32), rtol=1e-5, atol=atol)


# A 2x3 example with eps_low = 0.2, eps_high = 0.3 (clip range [0.8, 1.3]).
# Row 0 has A = +1, row 1 has A = -2; the last token of row 1 is padding (its ratio 3.0 must not show up anywhere).
# ratios              per-token pg loss = -min(ratio * A, clip(ratio) * A)
#   row 0: 1.5  ->  -min(1.5, 1.3) = -1.3   (clip high active: A > 0, ratio > 1.3)
#          0.5  ->  -min(0.5, 0.8) = -0.5   (not clipped: the unclipped term is the smaller one)
#          1.0  ->  -1.0
#   row 1: 0.5  ->  -min(-1.0, -1.6) = 1.6  (clip low active: A < 0, ratio < 0.8)
#          1.5  ->  -min(-3.0, -2.6) = 3.0  (not clipped)
#          3.0  ->  masked
RATIOS = np.array([[1.5, 0.5, 1.0], [0.5, 1.5, 3.0]], np.float32)
OLD_LOGP = jnp.array([[-1.0, -2.0, -0.5], [-1.0, -1.0, -3.0]])
LOGP = OLD_LOGP + jnp.log(jnp.asarray(RATIOS))
ADV = jnp.array([1.0, -2.0])
MASK = jnp.array([[1, 1, 1], [1, 1, 0]])
CLIP = dict(eps_low=0.2, eps_high=0.3)


def test_policy_loss_token_mean_by_hand():
    loss_sum, count, diag = losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, **CLIP)
    # -1.3 - 0.5 - 1.0 + 1.6 + 3.0 = 1.8 over 5 tokens.
    close(loss_sum, 1.8)
    close(count, 5)
    close(diag["count"], 5)
    close(diag["pg_loss_sum"], 1.8)
    close(diag["clipped_high_sum"], 1)
    close(diag["clipped_low_sum"], 1)
    close(diag["clipped_sum"], 2)
    close(diag["ratio_sum"], 1.5 + 0.5 + 1.0 + 0.5 + 1.5)
    close(diag["ratio_max"], 1.5)
    close(diag["logp_gap_sum"], 2 * (math.log(1.5) + math.log(2.0)))  # 2.1972246
    close(diag["kl_sum"], 0.0)
    means = losses.mean_diagnostics(diag)
    close(means["clipped"], 2 / 5)  # clip fraction
    close(means["ratio"], 5.0 / 5)
    close(means["pg_loss"], 1.8 / 5)


def test_each_clip_counts_only_the_tokens_it_clips():
    """Clip low acts on A < 0 tokens below 1 - eps_low, clip high on A > 0 tokens above 1 + eps_high: the same ratios
    [0.5, 1.5] count one clipped-high token under A = +1 and one clipped-low token under A = -1 (the fixture above
    has one of each, so swapped conditions would count the same there)."""
    old = jnp.zeros((1, 2))
    logp = jnp.log(jnp.array([[0.5, 1.5]]))
    for adv, low, high in ((1.0, 0, 1), (-1.0, 1, 0)):
        _, _, diag = losses.policy_loss(logp, old, jnp.array([adv]), jnp.ones((1, 2)), **CLIP)
        close(diag["clipped_low_sum"], low)
        close(diag["clipped_high_sum"], high)
        close(diag["clipped_sum"], 1)


def test_per_token_advantages_equal_broadcast_ones():
    per_token = jnp.broadcast_to(ADV[:, None], (2, 3))
    a = losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, **CLIP)
    b = losses.policy_loss(LOGP, OLD_LOGP, per_token, MASK, **CLIP)
    jax.tree.map(lambda x, y: close(x, y), a, b)


def test_symmetric_eps_changes_only_the_clipped_tokens():
    # eps_high = 0.2 (range [0.8, 1.2]): token (0, 0) now gives -1.2 instead of -1.3; everything else unchanged.
    loss_sum, _, _ = losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, eps_low=0.2, eps_high=0.2)
    close(loss_sum, 1.8 + 0.1)


def test_aggregations_by_hand():
    # Row sums: -1.3 - 0.5 - 1.0 = -2.8 over 3 tokens; 1.6 + 3.0 = 4.6 over 2 tokens.
    s, c, _ = losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, aggregation="seq_mean_token_mean", **CLIP)
    close(s, -2.8 / 3 + 4.6 / 2)  # 1.3666667
    close(c, 2)
    s, c, _ = losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, aggregation="seq_mean_token_sum_norm", max_len=4, **CLIP)
    close(s, (-2.8 + 4.6) / 4)  # 0.45
    close(c, 2)


def test_kl_estimators_by_hand():
    # d = ref - logp = [0, 1, -1, 0.5]:  k1 = -d;  k3 = e^d - d - 1 = [0, e - 2, e^-1, e^0.5 - 1.5].
    logp = jnp.array([[-1.0, -2.0, -1.0, -1.0]])
    ref = logp + jnp.array([[0.0, 1.0, -1.0, 0.5]])
    close(losses.kl_penalty(logp, ref, "k1"), [[0.0, -1.0, 1.0, -0.5]])
    close(losses.kl_penalty(logp, ref, "k3"), [[0.0, 0.7182818, 0.3678794, 0.1487213]])
    with pytest.raises(ValueError, match=r"unknown KL estimator 'k2'.*k1.*k3"):
        losses.kl_penalty(logp, ref, "k2")


def test_policy_loss_with_kl_by_hand():
    # d = ref - logp = [[0, 1, -1], [0.5, 0, (masked) 7]] -> k3 = [[0, 0.7182818, 0.3678794], [0.1487213, 0, -]].
    ref = LOGP + jnp.array([[0.0, 1.0, -1.0], [0.5, 0.0, 7.0]])
    kl_sum = 0.7182818 + 0.3678794 + 0.1487213  # 1.2348825
    loss_sum, count, diag = losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, ref_logp=ref, beta=0.1, **CLIP)
    close(loss_sum, 1.8 + 0.1 * kl_sum)
    close(count, 5)
    close(diag["kl_sum"], kl_sum)
    close(diag["pg_loss_sum"], 1.8)
    # k1 variant: sum of -d over valid tokens = -(0 + 1 - 1 + 0.5 + 0) = -0.5.
    loss_sum, _, diag = losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, ref_logp=ref, beta=0.1, kl_estimator="k1",
                                           **CLIP)
    close(loss_sum, 1.8 - 0.05)
    # beta = 0 with a reference: KL is reported, not added.
    loss_sum, _, diag = losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, ref_logp=ref, **CLIP)
    close(loss_sum, 1.8)
    close(diag["kl_sum"], kl_sum)


def test_argument_errors():
    with pytest.raises(ValueError, match="needs ref_logp"):
        losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, beta=0.1)
    with pytest.raises(ValueError, match="needs max_len"):
        losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, aggregation="seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match=r"unknown aggregation 'seq_mean'.*seq_mean_token_mean.*token_mean"):
        losses.policy_loss(LOGP, OLD_LOGP, ADV, MASK, aggregation="seq_mean")


def random_batch(seed=0, b=6, t=7):
    rng = np.random.default_rng(seed)
    old = rng.normal(-1.5, 0.5, (b, t)).astype(np.float32)
    logp = old + rng.normal(0, 0.4, (b, t)).astype(np.float32)
    ref = old + rng.normal(0, 0.3, (b, t)).astype(np.float32)
    lengths = np.array([7, 3, 0, 5, 1, 6])  # includes an empty (padding) row
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    adv = rng.normal(0, 1, (b,)).astype(np.float32)
    return logp, old, adv, mask, ref


@pytest.mark.parametrize("aggregation", sorted(losses.AGGREGATIONS))
def test_micro_batches_reproduce_the_full_batch(aggregation):
    logp, old, adv, mask, ref = random_batch()
    kw = dict(aggregation=aggregation, max_len=7, ref_logp=ref, beta=0.05, eps_low=0.2, eps_high=0.28)
    full_sum, full_count, full_diag = losses.policy_loss(logp, old, adv, mask, **{**kw, "ref_logp": ref})
    parts = [losses.policy_loss(logp[s], old[s], adv[s], mask[s], **{**kw, "ref_logp": ref[s]})
             for s in (slice(0, 2), slice(2, 5), slice(5, 6))]
    close(sum(p[0] for p in parts) / sum(p[1] for p in parts), full_sum / full_count)
    merged = parts[0][2]
    for p in parts[1:]:
        merged = losses.merge_diagnostics(merged, p[2])
    jax.tree.map(lambda x, y: close(x, y), merged, full_diag)
    means = losses.mean_diagnostics(full_diag)
    close(means["ratio"], np.sum(np.exp(logp - old) * mask) / mask.sum())
    assert "ratio_max" in means and "count" in means


@pytest.mark.parametrize("aggregation,per_token_denominator", [
    ("token_mean", lambda mask: mask.sum()),
    ("seq_mean_token_mean", lambda mask: mask.sum(1, keepdims=True) * (mask.sum(1) > 0).sum()),
    ("seq_mean_token_sum_norm", lambda mask: 7.0 * (mask.sum(1) > 0).sum()),
])
def test_gradient_at_ratio_one_is_minus_advantage_over_count(aggregation, per_token_denominator):
    # At ratio = 1 the clip is inactive: d/dlogp [loss_sum / count] = -A * mask / denominator.
    _, old, adv, mask, _ = random_batch(1)

    def objective(logp):
        s, c, _ = losses.policy_loss(logp, old, adv, mask, aggregation=aggregation, max_len=7)
        return s / c

    grad = jax.grad(objective)(jnp.asarray(old))
    denom = np.maximum(per_token_denominator(mask), 1.0)
    close(grad, -adv[:, None] * mask / denom)


def test_gradient_is_zero_where_clip_is_active():
    grad = jax.grad(lambda lp: losses.policy_loss(lp, OLD_LOGP, ADV, MASK, **CLIP)[0])(LOGP)
    # Clipped tokens (0, 0) and (1, 0) and the masked token (1, 2) get no gradient; others get -A * ratio.
    close(grad, [[0.0, -0.5, -1.0], [0.0, 2.0 * 1.5, 0.0]])


# ---------------------------------------------------------------------------------------------------- verify_loss

# V = 3 with yes_id = 0, no_id = 1 and an unrelated token 2. Row 3 is padding (mask 0).
V_LOGITS = jnp.array([[2.0, 1.0, 0.0], [0.0, 1.0, 5.0], [1.0, 3.0, 0.0], [9.0, 0.0, 0.0]])
V_TARGETS = jnp.array([0, 0, 1, 1])
V_MASK = jnp.array([1, 1, 1, 0])


def test_verify_loss_by_hand():
    # nll_0 = log(e^2 + e + 1) - 2 = 0.4076060; nll_1 = log(1 + e + e^5) - 0 = 5.0247449;
    # nll_2 = log(e + e^3 + 1) - 3 = 0.1698460.
    s, c, diag = losses.verify_loss(V_LOGITS, V_TARGETS, V_MASK, yes_id=0, no_id=1)
    close(s, 0.4076060 + 5.0247449 + 0.1698460)
    close(c, 3)
    # Decision over {Yes, No}: row 0 Yes (right), row 1 No (wrong: target Yes), row 2 No (right).
    close(diag["accuracy_sum"], 2)
    close(losses.mean_diagnostics(diag)["accuracy"], 2 / 3)
    # p(Yes) + p(No): (e^2 + e) / (e^2 + e + 1) = 0.9099694, (1 + e) / (1 + e + e^5) = 0.0244412,
    # (e + e^3) / (e + e^3 + 1) = 0.9579899.
    close(diag["label_mass_sum"], 0.9099694 + 0.0244412 + 0.9579899)


def test_a_yes_no_tie_is_decided_no():
    """The decision over {Yes, No} (the verifier accuracy diagnostic): a tie goes to No."""
    tied = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    _, _, diag = losses.verify_loss(tied, jnp.array([1, 0]), yes_id=0, no_id=1)
    close(diag["accuracy_sum"], 1)  # the No target counts right, the Yes target wrong
    _, _, diag = losses.verify_loss(tied, jnp.array([1, 1]), yes_id=0, no_id=1)
    close(diag["accuracy_sum"], 2)


def test_verify_loss_matches_manual_log_softmax():
    logits = np.asarray(V_LOGITS, np.float64)
    manual = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(
        1, keepdims=True)
    expected = -manual[np.arange(4), np.asarray(V_TARGETS)]
    s, c, diag = losses.verify_loss(V_LOGITS, V_TARGETS)
    close(s, expected.sum())
    close(c, 4)
    # Without label ids the prediction is the full-vocabulary argmax [0, 2, 1, 0]: rows 0 and 2 are right.
    close(diag["accuracy_sum"], 2)
    assert "label_mass_sum" not in diag


def test_verify_loss_is_stable_for_huge_logits():
    s, _, _ = losses.verify_loss(jnp.array([[1000.0, 0.0, -1000.0]]), jnp.array([1]))
    close(s, 1000.0)


def test_verify_loss_gradient_is_softmax_minus_onehot():
    logits = V_LOGITS[:1]
    grad = jax.grad(lambda x: losses.verify_loss(x, V_TARGETS[:1])[0])(logits)
    close(grad, jax.nn.softmax(logits) - jnp.array([[1.0, 0.0, 0.0]]))


def test_class_balanced_weights_by_hand():
    # 1 Yes among 4 rows: the Yes row weighs 4 / (2 * 1) = 2, each No row 4 / (2 * 3) = 2/3; each class sums to 2.
    close(losses.class_balanced_weights(jnp.array([True, False, False, False])), [2.0, 2 / 3, 2 / 3, 2 / 3])
    close(losses.class_balanced_weights(jnp.array([True, True, False, False])), [1.0, 1.0, 1.0, 1.0])
    close(losses.class_balanced_weights(jnp.array([False, False, False])), [1.0, 1.0, 1.0])  # one class: plain CE
    # As the verification mask: the mean loss is the average of the two classes' mean losses, (nll_0 + nll_1) / 2
    # for rows 0 (Yes, nll 0.4076060) and 1..3 (No, logits [0, 1, 5]: nll log(1 + e + e^5) - 1 = 4.0247449 each).
    logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 1.0, 5.0], [0.0, 1.0, 5.0], [0.0, 1.0, 5.0]])
    weights = losses.class_balanced_weights(jnp.array([True, False, False, False]))
    s, c, _ = losses.verify_loss(logits, jnp.array([0, 1, 1, 1]), weights, yes_id=0, no_id=1)
    close(s / c, (0.4076060 + 4.0247449) / 2)
