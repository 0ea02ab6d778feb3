"""Advantage estimators against values computed by hand."""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlvjax.rl import advantages as adv


def close(a, b, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b, np.float32), rtol=1e-5, atol=atol)


# ---------------------------------------------------------------------------------------------------- registry


def test_registry_names_and_lookup():
    assert adv.names() == ["dr_grpo", "grpo", "rloo", "vineppo"]
    assert adv.get("grpo") is adv.grpo and adv.get("rloo") is adv.rloo and adv.get("dr_grpo") is adv.dr_grpo
    assert adv.get("vineppo") is adv.step_advantages
    assert adv.uses_step_values("vineppo") and not adv.uses_step_values("grpo")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'.*dr_grpo.*grpo.*rloo.*vineppo"):
        adv.get("ppo")


def test_register_keeps_rlvjax_names_and_replaces_a_users(tmp_path, monkeypatch):
    """rlvjax's names are kept; a user's is replaced (a notebook cell run again after an edit failed with "already
    registered"); "module:function" imports the module, so a new process knows the name (review 2026-12-06)."""
    with pytest.raises(ValueError, match="advantage estimator 'grpo' is rlvjax's own; register yours under another"):
        adv.register("grpo")(lambda r: r)
    adv.register("test_twice")(lambda r: r)
    adv.register("test_twice", step_values=True)(second := lambda v, r, m: v)
    assert adv.get("test_twice") is second and adv.uses_step_values("test_twice")
    adv.register("test_twice")(third := lambda r: -r)
    assert adv.get("test_twice") is third and not adv.uses_step_values("test_twice")
    # by name, not by function: rlvjax's function under a name of yours is yours (review diff18)
    adv.register("my_rloo")(adv.rloo)
    adv.register("my_rloo")(adv.rloo)
    assert adv.known_only_here("my_rloo") == "your code" and adv.known_only_here("rloo") is None
    # a step estimator stays one when a name it also has is replaced
    adv.register("test_step_a", step_values=True)(stepped := lambda v, r, m: v)
    adv.register("test_step_b", step_values=True)(stepped)
    adv.register("test_step_a")(lambda r: r)
    assert adv.uses_step_values("test_step_b")
    (tmp_path / "my_estimators.py").write_text(
        "from rlvjax.rl import advantages\n"
        "@advantages.register('my_step', step_values=True)\n"
        "def doubled(step_values, rewards, step_mask=None):\n"
        "    return 2 * advantages.get('vineppo')(step_values, rewards, step_mask)\n"
        "def flipped(rewards):\n"
        "    return -advantages.get('rloo')(rewards)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert adv.uses_step_values("my_estimators:doubled") and not adv.uses_step_values("my_estimators:flipped")
    np.testing.assert_allclose(adv.get("my_estimators:flipped")(jnp.asarray([[1.0, 0.0]])), [[-1.0, 1.0]])
    with pytest.raises(ValueError, match="RLConfig.algorithm: cannot import 'my_estimators:nope'"):
        adv.get("my_estimators:nope")
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'sevens'.*'module:function'"):
        adv.get("sevens")


def test_a_group_estimators_shape_is_checked():
    """``[1, G]`` and ``[B, 1]`` broadcast over the rollouts and trained without a word; ``[B]`` was a sharding
    traceback (review 2026-12-06)."""
    from rlvjax.rl import steps
    from rlvjax.rl.config import RLConfig

    rewards = jnp.asarray([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    for name, fn, shape in (("test_row", lambda r: r[:1], (1, 2)), ("test_column", lambda r: r[:, :1], (3, 1)),
                            ("test_flat", lambda r: r[:, 0], (3,))):
        adv.register(name)(fn)
        with pytest.raises(ValueError, match=rf"advantage estimator '{name}' returned shape {re.escape(str(shape))}; a "
                                             r"group estimator returns one advantage per rollout, "
                                             r"\[problems, samples\] = \(3, 2\)"):
            steps.group_advantages(RLConfig(algorithm=name), rewards)
    adv.register("test_step_unmarked")(lambda step_values, rewards, step_mask: step_values)
    with pytest.raises(ValueError, match=r"'test_step_unmarked' raised TypeError: .*missing 2 required positional "
                                         r"arguments.*; a group estimator is fn\(rewards \[problems, samples\]\) run "
                                         r"under jit \(use jax.numpy, not numpy or float\(\)\); a step estimator is "):
        steps.group_advantages(RLConfig(algorithm="test_step_unmarked"), rewards)
    adv.register("test_fine")(lambda r: r - r.mean(axis=1, keepdims=True))
    np.testing.assert_allclose(steps.group_advantages(RLConfig(algorithm="test_fine"), rewards),
                               [[0.5, -0.5], [0, 0], [0, 0]])


# ---------------------------------------------------------------------------------------------------- grpo


def test_grpo_by_hand():
    # [1, 0, 0, 1]: mean 0.5, deviations +-0.5, var_ddof1 = 4 * 0.25 / 3 = 1/3, std = 0.5773503
    # -> A = +-0.5 / 0.5773503 = +-0.8660254.
    # [1, 0, 0, 0]: mean 0.25, var_ddof1 = (0.5625 + 3 * 0.0625) / 3 = 0.25, std = 0.5
    # -> A = 0.75 / 0.5 = 1.5 and -0.25 / 0.5 = -0.5.
    out = adv.grpo(jnp.array([[1.0, 0, 0, 1], [1, 0, 0, 0]]), eps=0.0)
    close(out, [[0.8660254, -0.8660254, -0.8660254, 0.8660254], [1.5, -0.5, -0.5, -0.5]])


def test_grpo_eps_enters_denominator():
    # [1, 0, 0, 0] with eps = 0.5: std + eps = 1.0, so A = r - mean.
    close(adv.grpo(jnp.array([[1.0, 0, 0, 0]]), eps=0.5), [[0.75, -0.25, -0.25, -0.25]])
    # Default eps=1e-6 barely moves the value: 1.5 * 0.5 / (0.5 + 1e-6).
    close(adv.grpo(jnp.array([[1.0, 0, 0, 0]]))[0, 0], 1.5 * 0.5 / 0.500001)


def test_grpo_g2():
    # [1, 0]: mean 0.5, var_ddof1 = 2 * 0.25 / 1 = 0.5, std = 0.7071068 -> A = +-0.7071068.
    close(adv.grpo(jnp.array([[1.0, 0.0], [0.0, 1.0]]), eps=0.0), [[0.7071068, -0.7071068], [-0.7071068, 0.7071068]])


@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_zero_variance_groups_give_exact_zero(eps):
    # G = 8: the float32 mean of eight 0.9s (or 0.2s) is not exactly 0.9 (0.2), so r - mean is ~6e-8 unless the
    # estimators force constant groups to 0.
    rewards = jnp.array([[0.0] * 8, [1.0] * 8, [0.9] * 8, [0.2] * 8])
    assert np.any(np.asarray(rewards - rewards.mean(axis=1, keepdims=True)) != 0.0)
    for fn in (lambda r: adv.grpo(r, eps=eps), adv.dr_grpo, adv.rloo):
        out = np.asarray(fn(rewards))
        assert np.all(out == 0.0), out


def test_grpo_finite_under_jit():
    out = jax.jit(adv.grpo)(jnp.array([[1.0, 1.0], [0.0, 1.0]]))
    assert np.all(np.isfinite(np.asarray(out)))


def test_group_estimators_check_shapes():
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        adv.grpo(jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="G >= 2"):
        adv.grpo(jnp.array([[1.0]]))


def test_integer_rewards_accepted():
    close(adv.dr_grpo(jnp.array([[1, 0]])), [[0.5, -0.5]])


# ---------------------------------------------------------------------------------------------------- dr_grpo / rloo


def test_dr_grpo_by_hand():
    # [1, 0, 0]: mean 1/3 -> [2/3, -1/3, -1/3]; [1, 1, 0, 0]: mean 0.5 -> +-0.5 (no std division).
    close(adv.dr_grpo(jnp.array([[1.0, 0, 0]])), [[0.6666667, -0.3333333, -0.3333333]])
    close(adv.dr_grpo(jnp.array([[1.0, 1, 0, 0]])), [[0.5, 0.5, -0.5, -0.5]])


def test_rloo_by_hand():
    # [1, 0, 0, 1]: A_0 = 1 - mean(0, 0, 1) = 2/3; A_1 = 0 - mean(1, 0, 1) = -2/3.
    close(adv.rloo(jnp.array([[1.0, 0, 0, 1]])), [[0.6666667, -0.6666667, -0.6666667, 0.6666667]])
    # [1, 0, 0]: A_0 = 1 - 0 = 1; A_1 = 0 - mean(1, 0) = -0.5.
    close(adv.rloo(jnp.array([[1.0, 0, 0]])), [[1.0, -0.5, -0.5]])
    # G = 2: each sample's baseline is the other one: [1, 0] -> [1, -1].
    close(adv.rloo(jnp.array([[1.0, 0.0]])), [[1.0, -1.0]])


def test_rloo_needs_two_samples():
    with pytest.raises(ValueError, match="G >= 2"):
        adv.rloo(jnp.array([[1.0], [0.0]]))


# ---------------------------------------------------------------------------------------------------- split_steps
# Expected splits are VinePPO's own (`split_solution_inplace`), which gives the same boundaries on each text here.

MATH500 = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500.jsonl"
VINEPPO_STEPS = MATH500.with_name("vineppo_steps_math500.jsonl")


def assert_split(text, expected):
    steps = adv.split_steps(text)
    assert steps == expected
    assert "".join(steps) == text


def test_split_at_sentence_ends_and_newlines():
    # The whitespace after a period, and a newline, open the next step.
    assert_split(
        "We add the two numbers. Then we divide by three.\nSo the mean is four.",
        ["We add the two numbers.", " Then we divide by three.", "\nSo the mean is four."],
    )
    # "e.g." and "Mr." are abbreviations, not sentence ends.
    assert_split("We use e.g. Vieta's formulas here. Then the sum is easy to find.",
                 ["We use e.g. Vieta's formulas here.", " Then the sum is easy to find."])
    assert_split("Mr. Smith has five apples. He eats two of them.",
                 ["Mr. Smith has five apples.", " He eats two of them."])


def test_periods_inside_math_do_not_cut_but_newlines_do():
    # "1.5. Then" inside $...$ is no sentence end; the newline inside it is a step end, as an align row's is.
    # "\nNext we finish it." (18 characters) is a short last piece: it joins the step before it.
    assert_split(
        "First note $x = 1.5. Then y\n= 2$ holds here.\nNext we finish it.",
        ["First note $x = 1.5. Then y", "\n= 2$ holds here.\nNext we finish it."],
    )
    assert_split(
        "The equation is\n\\[\nx = 1. Y = 2.\n\\]\nwhich we solve.\n$$a.\nB$$ is also true.",
        ["The equation is\n\\[", "\nx = 1. Y = 2.", "\n\\]", "\nwhich we solve.\n$$a.", "\nB$$ is also true."],
    )


def test_environment_rows_are_steps_and_a_lone_opening_joins_the_next():
    assert_split(
        "Note \\(a. B\\) is positive here.\n\\begin{align}\nx &= 1. Z\\\\\ny &= 2\n\\end{align}\nDone with it now.",
        ["Note \\(a. B\\) is positive here.", "\n\\begin{align}\nx &= 1. Z\\\\", "\ny &= 2",
         "\n\\end{align}\nDone with it now."],
    )


def test_math_ending_with_a_period_ends_a_step():
    # Each piece is under 20 characters, yet ends a sentence inside its math: none is merged.
    assert_split("So $x = 3.$ Then $y = 4.$ Hence the answer follows.",
                 ["So $x = 3.$", " Then $y = 4.$", " Hence the answer follows."])
    assert_split("The sum is $3 + 4 = 7$. Therefore the answer is $\\boxed{7}$.",
                 ["The sum is $3 + 4 = 7$.", " Therefore the answer is $\\boxed{7}$."])


def test_escaped_dollar_is_not_math():
    # With "\$5 ... \$20" taken as math, the sentence end between them would be hidden.
    assert_split("It costs \\$5 per apple. Then we pay \\$20 for all of them.",
                 ["It costs \\$5 per apple.", " Then we pay \\$20 for all of them."])


def test_short_pieces_merge():
    # Under 20 characters: "Step 1:" joins the step it announces; "Ok." at the end joins the last step; the
    # arithmetic lines "12+7=19" are all short, so the whole solution is one step.
    assert_split(
        "Step 1:\nCompute the sum first.\nStep 2:\nDivide it by two.\nOk.",
        ["Step 1:\nCompute the sum first.", "\nStep 2:\nDivide it by two.\nOk."],
    )
    assert_split("12+7=19\n19-5=14\n\\boxed{14}", ["12+7=19\n19-5=14\n\\boxed{14}"])


def test_steps_over_100_characters_are_halved():
    # At the prose comma nearest the middle that leaves both halves >= 40 characters.
    assert_split(
        "We list the multiples of seven below fifty, which are 7, 14, 21, 28, 35, 42 and 49, and there are seven "
        "of them in all.",
        ["We list the multiples of seven below fifty, which are 7, 14,",
         " 21, 28, 35, 42 and 49, and there are seven of them in all."],
    )
    # Math has no prose comma: at the "=" nearest the middle.
    assert_split(
        "$$(x+1)(x+2)(x+3)(x+4) = x^4 + 10x^3 + 35x^2 + 50x + 24 = (x^2+5x+4)(x^2+5x+6) = (x^2 + 5x + 5)^2 - 1.$$",
        ["$$(x+1)(x+2)(x+3)(x+4) = x^4 + 10x^3 + 35x^2 + 50x + 24 =",
         " (x^2+5x+4)(x^2+5x+6) = (x^2 + 5x + 5)^2 - 1.$$"],
    )


def test_split_degenerate_inputs():
    # VinePPO's splitter fails on texts under 20 characters; here they are one step.
    assert adv.split_steps("") == [] and adv.step_boundaries("") == []
    assert_split("short", ["short"])
    assert_split("\n\n  \n", ["\n\n  \n"])
    assert_split("A single sentence without an end", ["A single sentence without an end"])


def test_step_boundaries_are_char_offsets():
    text = "We add the two numbers. Then we divide by three.\nSo the mean is four."
    starts = adv.step_boundaries(text)
    assert starts == [0, 23, 48]
    assert [text[s:e] for s, e in zip(starts, starts[1:] + [len(text)])] == adv.split_steps(text)


@pytest.mark.skipif(not VINEPPO_STEPS.exists(), reason="../shared/data/vineppo_steps_math500.jsonl absent")
def test_splits_math500_as_vineppo_does():
    solutions = [json.loads(line)["solution"] for line in MATH500.read_text(encoding="utf-8").splitlines()]
    reference = [json.loads(line) for line in VINEPPO_STEPS.read_text(encoding="utf-8").splitlines()]
    ours = [adv.step_boundaries(solutions[r["index"]]) for r in reference]
    # VinePPO's boundaries end with len(solution); ours are the step starts only.
    differ = [r["index"] for r, b in zip(reference, ours) if b != r["boundaries"][:-1]]
    identical = 1 - len(differ) / len(reference)
    steps_ours = sum(map(len, ours)) / len(ours)
    steps_theirs = sum(len(r["steps"]) for r in reference) / len(reference)
    print(f"identical splits {identical:.3f}; steps per solution {steps_ours:.3f} (VinePPO {steps_theirs:.3f})")
    assert len(reference) == 500
    assert identical >= 0.95, f"splits differ from VinePPO's on solutions {differ[:10]}"
    # Measured: all 500 identical (9.618 steps per solution); any change of the splitter must keep that.
    assert not differ and steps_ours == steps_theirs, f"splits differ from VinePPO's on solutions {differ[:10]}"


# ---------------------------------------------------------------------------------------------------- step advantages


def test_step_advantages_by_hand():
    # Row 0: V = [0.5, 0.25, 1.0], reward 1 -> A = [0.25-0.5, 1.0-0.25, 1-1.0] = [-0.25, 0.75, 0].
    # Row 1: V = [0.5, 0.0], reward 0 (2 valid steps) -> A = [0-0.5, 0-0] = [-0.5, 0]; padding -> 0.
    # Row 2: V = [0.2] (one step), reward 1 -> A = [0.8].
    values = jnp.array([[0.5, 0.25, 1.0], [0.5, 0.0, 0.9], [0.2, 0.7, 0.7]])
    mask = jnp.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    out = adv.step_advantages(values, jnp.array([1.0, 0.0, 1.0]), mask)
    close(out, [[-0.25, 0.75, 0.0], [-0.5, 0.0, 0.0], [0.8, 0.0, 0.0]])
    # The registered name is the same function.
    close(adv.get("vineppo")(values, jnp.array([1.0, 0.0, 1.0]), mask), out)


def test_step_advantages_sum_to_reward_minus_prompt_value():
    # Telescoping: sum_k A_k = reward - V(s_0).
    values = jnp.array([0.3, 0.6, 0.1, 0.4])
    out = adv.step_advantages(values, 1.0)
    close(out, [0.3, -0.5, 0.3, 0.6])
    close(out.sum(), 1.0 - 0.3)


def test_broadcast_step_advantages():
    step_adv = jnp.array([[-0.25, 0.75, 0.0], [-0.5, 0.0, 0.0]])
    token_steps = jnp.array([[0, 0, 1, 2, 2], [0, 1, 1, 0, 0]])
    mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    out = adv.broadcast_step_advantages(step_adv, token_steps, mask)
    close(out, [[-0.25, -0.25, 0.75, 0.0, 0.0], [-0.5, 0.0, 0.0, 0.0, 0.0]])
