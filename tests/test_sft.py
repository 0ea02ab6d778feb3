"""Warm-start rows and loss by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlvjax import sft
from rlvjax.model.transformer import ModelConfig, Transformer
from conftest import xla_flags
import forkserver


def test_rows_and_loss_mask_by_hand():
    policy = sft.encode_example([7, 8], [9, 10], eos_id=2)
    verdict = sft.encode_example([7, 8], [9, 10], eos_id=2, verify_suffix=(30, 31), verdict_id=4)
    assert policy == ([7, 8, 9, 10, 2], 2) and verdict == ([7, 8, 9, 10, 30, 31, 4], 6)
    ids, mask, loss_mask = sft.sft_batch([policy, verdict], pad_id=0, width=8)
    np.testing.assert_array_equal(ids[0], [7, 8, 9, 10, 2, 0, 0, 0])
    # position t is supervised when token t + 1 is: the completion and eos (row 0), the verdict only (row 1)
    np.testing.assert_array_equal(loss_mask[0], [0, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(loss_mask[1], [0, 0, 0, 0, 0, 1, 0, 0])
    assert mask.sum() == 12
    with pytest.raises(ValueError, match="row of 7 tokens is wider than its batch"):  # it was cut to 6: no verdict
        sft.sft_batch([policy, verdict], pad_id=0, width=6)
    assert sft.row_width([([7, 8], [9, 10], True)], verify_tokens=2) == len(verdict[0])  # the widest row, whole

    cfg = ModelConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    total, count = sft.sft_loss(graphdef, params, *map(jnp.asarray, (ids, mask, loss_mask)))
    logp = jax.nn.log_softmax(nnx.merge(graphdef, params)(jnp.asarray(ids), jnp.asarray(mask)))
    expected = -(logp[0, 1, 9] + logp[0, 2, 10] + logp[0, 3, 2] + logp[1, 5, 4])
    assert int(count) == 4
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    # the update's memory knobs (layers recomputed in the backward pass, logits 3 positions at a time: 7 = 2 x 3 + 1)
    # change neither the loss nor its gradient
    batch = tuple(map(jnp.asarray, (ids, mask, loss_mask)))
    plain = jax.value_and_grad(lambda p: sft.sft_loss(graphdef, p, *batch)[0])(params)
    low = jax.value_and_grad(lambda p: sft.sft_loss(graphdef, p, *batch, remat="full", chunk_size=3)[0])(params)
    np.testing.assert_allclose(low[0], expected, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(plain[1]), jax.tree.leaves(low[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("labels", ["random", "graded"])
def test_row_verdicts(labels):
    cfg = sft.WarmStartConfig(verify_format_rate=0.4, verify_labels=labels)
    rng = np.random.default_rng(0)
    correct = rng.random(4000) < 0.3
    verdicts = [sft.row_verdict(rng, cfg, bool(c), (4, 5)) for c in correct]
    chosen = np.asarray([v is not None for v in verdicts])
    assert 0.37 < chosen.mean() < 0.43  # the verification share
    yes = np.asarray([v == 4 for v in verdicts])
    if labels == "graded":  # the verdict is the solution's correctness
        assert np.array_equal(yes[chosen], correct[chosen])
    else:  # format only: Yes half the time, whatever the solution
        assert abs(yes[chosen & correct].mean() - 0.5) < 0.08 and abs(yes[chosen & ~correct].mean() - 0.5) < 0.05
    assert sft.row_verdict(rng, cfg, True, ()) is None  # no verdict ids: policy rows only


def test_an_empty_prompt_supervises_every_token_after_the_first():
    _, _, loss_mask = sft.sft_batch([sft.encode_example([], [5, 6], eos_id=2)], pad_id=0, width=5)
    np.testing.assert_array_equal(loss_mask[0], [1, 1, 0, 0, 0])  # 6 and eos; nothing comes before 5 to predict it


@pytest.mark.parametrize("field,value,message", [
    ("verify_labels", "gold", "verify_labels='gold'; use 'random' or 'graded'"),
    ("batch_size", 0, "WarmStartConfig.batch_size=0 and num_examples=20000 must be >= 1"),
    ("learning_rate", -1e-3, "WarmStartConfig.learning_rate=-0.001 must be > 0"),
    ("mistake_rate", 2.0, r"WarmStartConfig.mistake_rate=2.0 must be in \[0, 1\]"),
    ("verify_format_rate", 1.5, r"WarmStartConfig.verify_format_rate=1.5 must be in \[0, 1\]"),
    ("num_steps", -1, "WarmStartConfig.num_steps=-1 must be >= 0"),
])
def test_bad_warm_start_settings_are_one_line_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        sft.WarmStartConfig(**{field: value})


def test_bad_rl_and_verifier_settings_are_one_line_errors():
    from rlvjax.rl.config import RLConfig
    from rlvjax.rl.verifier import VerifierConfig

    with pytest.raises(ValueError, match=r"RLConfig.eps_low=1.5 must be in \(0, 1\) \(the ratio's lower clip"):
        RLConfig(eps_low=1.5)
    with pytest.raises(ValueError, match=r"^VerifierConfig.threshold=nan must be a finite number$"):  # no "1e9"
        VerifierConfig(threshold=float("nan"))


WARM_ON_A_MESH = """
import json, numpy as np, jax
from flax import nnx
from rlvjax import experiment, parallel, sft
from rlvjax.data import tasks
model, tok = experiment.build_policy(experiment.ModelSpec(hidden_size=32, intermediate_size=64, num_layers=1,
                                                          num_heads=2, num_kv_heads=1))
graphdef, params = nnx.split(model)
params = nnx.to_pure_dict(params)
spec = experiment.TaskSpec(name="digit")
pairs = sft.tokenize(tok, tasks.warm_start_pairs(spec, 64, 0.3, 0))
cfg = sft.WarmStartConfig(num_steps=3, batch_size=8, num_examples=64)
kw = dict(eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, progress=False)
mesh = parallel.make_mesh(parallel.MeshConfig(data=2, fsdp=2))
sharded = sft.warm_start(graphdef, params, pairs, cfg, mesh=mesh, **kw)
alone = sft.warm_start(graphdef, params, pairs, cfg, **kw)
embedding = sharded["embed_tokens"]["embedding"]
gap = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(jax.tree.leaves(sharded),
                                                                             jax.tree.leaves(alone)))
print("RESULT" + json.dumps({"devices": len(embedding.sharding.device_set),
                             "shard_rows": embedding.addressable_shards[0].data.shape[1], "gap": gap}))
"""


@pytest.mark.slow
def test_the_warm_start_runs_on_the_mesh_and_matches_one_device():
    """With a mesh, the warm start's params and optimizer state are sharded by the partition rules (fsdp splits the
    embedding) and its rows over the data axes, and it computes what one device does."""
    import json
    import os
    import sys

    env = {**os.environ, "XLA_FLAGS": xla_flags(4), "JAX_PLATFORMS": "cpu"}
    out = forkserver.run([sys.executable, "-c", WARM_ON_A_MESH], env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT")[-1])
    assert result["devices"] == 4 and result["shard_rows"] == 16  # hidden 32 split over fsdp = 2
    assert result["gap"] < 1e-5


def test_the_first_warm_start_step_moves_the_weights():
    """The warm-up starts at lr / warmup, not 0: a one-step warm start (warm-up of one step) was a no-op."""
    from rlvjax import experiment
    from rlvjax.data import tasks

    model, tok = experiment.build_policy(experiment.ModelSpec(hidden_size=32, intermediate_size=64, num_layers=1,
                                                              num_heads=2, num_kv_heads=1))
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    pairs = sft.tokenize(tok, tasks.warm_start_pairs(experiment.TaskSpec(name="digit"), 16, 0.3, 0))
    cfg = sft.WarmStartConfig(num_steps=1, batch_size=8, num_examples=16, learning_rate=1e-3)
    after = sft.warm_start(graphdef, params, pairs, cfg, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                           progress=False)
    moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(jax.tree.leaves(after),
                                                                                   jax.tree.leaves(params)))
    assert moved == pytest.approx(1e-3, rel=0.05)  # Adam's first step: lr times the gradient's sign
    # donated (as the run does): the same step, in the given buffers, which are gone after it
    given = jax.tree.map(jnp.copy, params)
    again = sft.warm_start(graphdef, given, pairs, cfg, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                           progress=False, donate=True)
    assert all(x.is_deleted() for x in jax.tree.leaves(given))
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("labels", ["random", "graded"])
def test_the_warm_start_trains_verdicts_after_the_verify_prompt(monkeypatch, labels):
    """Every row the warm start trains on is a policy row (prompt + completion + eos) or a verdict row (prompt +
    completion + the verify prompt + Yes/No, only the verdict supervised); built without the verify prompt, the
    verdict followed the solution directly and nothing failed. "graded": each verdict is its solution's grade; the
    two steps draw different examples (every verdict Yes, and one batch every step, passed, review)."""
    from rlvjax import experiment
    from rlvjax.data import tasks

    model, tok = experiment.build_policy(experiment.ModelSpec(hidden_size=32, intermediate_size=64, num_layers=1,
                                                              num_heads=2, num_kv_heads=1))
    graphdef, params = nnx.split(model)
    pairs = sft.tokenize(tok, tasks.warm_start_pairs(experiment.TaskSpec(name="digit"), 16, 0.3, 0))
    built, batch = [], sft.sft_batch
    monkeypatch.setattr(sft, "sft_batch", lambda rows, **kwargs: built.extend(rows) or batch(rows, **kwargs))
    cfg = sft.WarmStartConfig(num_steps=2, batch_size=8, num_examples=16, verify_format_rate=0.5,
                              verify_labels=labels)
    sft.warm_start(graphdef, nnx.to_pure_dict(params), pairs, cfg, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                   verify_suffix=(5, 6, 7), verdict_ids=(8, 9), progress=False)
    solutions = {tuple(prompt + completion): ok for prompt, completion, ok in pairs}
    assert 0 < sum(solutions.values()) < len(solutions)  # right and wrong solutions both drawn from
    verdicts = [(ids, first) for ids, first in built if ids[-1] != tok.eos_token_id]
    assert len(built) == 16 and 0 < len(verdicts) < 16
    for ids, first in verdicts:
        assert tuple(ids[:-4]) in solutions and ids[-4:-1] == [5, 6, 7] and ids[-1] in (8, 9), ids
        assert first == len(ids) - 1
    graded = [ids[-1] == (8 if solutions[tuple(ids[:-4])] else 9) for ids, _ in verdicts]
    assert all(graded) if labels == "graded" else not all(graded)
    drawn = [{tuple(ids[:-4] if ids[-1] != tok.eos_token_id else ids[:-1]) for ids, _ in built[i:i + 8]}
             for i in (0, 8)]
    assert drawn[0] != drawn[1]  # reshuffled: each step draws its own examples
    for ids, first in built:
        if (ids, first) not in verdicts:
            assert tuple(ids[:-1]) in solutions and ids[:first] in [list(p) for p, _, _ in pairs]


@pytest.mark.parametrize("made,got", [(lambda n: [("1+1", "2", True)] * (n // 2), "8 examples"),
                                      (lambda n: [], "0 examples"), (lambda n: ["1+1=2"] * n, "a list that is not")])
def test_a_task_that_generates_too_few_warm_start_examples_is_refused(monkeypatch, made, got):
    """A task's own generator returning fewer examples than asked failed inside the warm start in numpy's words
    ("Cannot take a larger sample than population", or "max() arg is an empty sequence"), after the workdir was
    written (review); now one line naming the task and the knob, before anything runs."""
    from rlvjax import experiment
    from rlvjax.data import tasks

    monkeypatch.setitem(tasks._TASKS, "few", tasks.Task(records=tasks.get("digit").records,
                                                        warm_start_pairs=lambda spec, n, rate, seed: made(n)))
    with pytest.raises(ValueError, match=f"^task 'few' generated {got}.* WarmStartConfig.num_examples=16; its "
                                         "warm_start_pairs must return at least num"):
        tasks.warm_start_pairs(experiment.TaskSpec(name="few"), 16, 0.3, 0)
    assert tasks.warm_start_pairs(experiment.TaskSpec(name="few"), 0, 0.3, 0) is not None  # the dry run's count
    more = lambda spec, n, rate, seed: [("1+1", "2", True)] * (2 * n)  # noqa: E731
    monkeypatch.setitem(tasks._TASKS, "many", tasks.Task(records=tasks.get("digit").records, warm_start_pairs=more))
    assert len(tasks.warm_start_pairs(experiment.TaskSpec(name="many"), 16, 0.3, 0)) == 32  # more than asked: fine
