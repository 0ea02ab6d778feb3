"""The training loop end to end on the trivial digit task: resume, meshes, algorithms, logs (learning and the logs'
contents: test_pipeline's digit run)."""

import json
import os
import sys
from pathlib import Path

import gin
import numpy as np
import pytest

from rlvjax import train
from rlvjax.config import Config
from conftest import xla_flags
import forkserver

REPO = Path(__file__).resolve().parents[1]
DIGIT = str(REPO / "configs" / "digit_smoke.gin")
FAST = ["WarmStartConfig.num_steps = 150", "RunConfig.eval_every = 0", "RunConfig.export_final = False"]
TIMING = ("time/", "_per_s")


def run(workdir, bindings=(), *, resume=False):
    gin.clear_config()
    gin.parse_config_files_and_bindings([DIGIT], list(bindings))
    try:
        return train.train(Config.from_gin(), str(workdir), resume=resume)
    finally:
        gin.clear_config()


def deterministic(metrics):
    return [{k: v for k, v in m.items() if not any(t in k for t in TIMING)} for m in metrics]


def test_resume_continues_exactly(tmp_path):
    full = run(tmp_path / "full", FAST + ["RunConfig.num_steps = 6", "RunConfig.checkpoint_every = 3"])
    run(tmp_path / "split", FAST + ["RunConfig.num_steps = 3", "RunConfig.checkpoint_every = 3"])
    resumed = run(tmp_path / "split", FAST + ["RunConfig.num_steps = 6", "RunConfig.checkpoint_every = 3"],
                  resume=True)
    assert len(resumed) == 3
    assert deterministic(resumed) == deterministic(full[3:])


def test_a_resume_replaces_the_unstamped_final_policy_of_an_older_rlvjax(tmp_path):
    """Exports were stamped from 2026-12-03 on, and a save refuses to replace a folder that is not a stamped
    export: a run from before that could not even be resumed, its own final/ refused as another tool's model."""
    from safetensors.numpy import load_file, save_file

    from rlvjax.model.hf import export_stamp

    steps = ["WarmStartConfig.num_steps = 150", "RunConfig.eval_every = 0"]
    run(tmp_path, steps + ["RunConfig.num_steps = 2"])
    weights = tmp_path / "final" / "model.safetensors"
    save_file(load_file(weights), weights, metadata={"format": "pt"})  # as an older rlvjax wrote it
    assert export_stamp(tmp_path / "final") == {"format": "pt"}
    assert len(run(tmp_path, steps + ["RunConfig.num_steps = 3"], resume=True)) == 1
    assert export_stamp(tmp_path / "final")["rlvjax_step"] == "3"


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "rloo", "vineppo"])
def test_every_algorithm_config_runs(tmp_path, algorithm):
    gin.clear_config()
    gin.parse_config_files_and_bindings(
        [DIGIT, str(REPO / "configs" / "algorithms" / f"{algorithm}.gin")],
        FAST + ["RunConfig.num_steps = 3", "RLConfig.beta = 0.05", "RLConfig.num_minibatches = 2",
                "RLConfig.micro_batch_size = 16", "RLConfig.vineppo_samples = 2", "OptimConfig.schedule = 'cosine'",
                "OptimConfig.warmup_steps = 3"])
    try:
        config = Config.from_gin()
        history = train.train(config, str(tmp_path))
    finally:
        gin.clear_config()
    assert len(history) == 3 and all(np.isfinite(m["policy_loss"]) for m in history)
    assert all(m["policy/kl"] >= 0 for m in history)
    # Each step's learning rate at its first of 2 optimizer steps (of 6): warm-up to step 3, then a cosine to 10%
    # over the other 3 (at step 4 of 6: 0.1 + 0.9 * (1 + cos(pi / 3)) / 2 = 0.775 of the peak).
    np.testing.assert_allclose([m["learning_rate"] for m in history],
                               np.array([0.0, 2 / 3, 0.775]) * config.optim.learning_rate, rtol=1e-6)
    # VinePPO's value pass is timed and described apart from the update (it was counted as update time)
    value_keys = {"time/value_s", "vineppo/steps_per_rollout", "vineppo/value_prefix", "vineppo/states_sampled"}
    assert all((value_keys <= m.keys()) == (algorithm == "vineppo") for m in history)
    if algorithm == "vineppo":
        assert all(m["time/value_s"] > 0 and m["vineppo/steps_per_rollout"] >= 1 for m in history)
        assert all(0 < m["vineppo/states_sampled"] <= 1 for m in history)


MESH_SCRIPT = """
import json, sys, gin
from rlvjax import train
from rlvjax.config import Config
gin.parse_config_files_and_bindings([sys.argv[1]], sys.argv[3:])
history = train.train(Config.from_gin(), sys.argv[2])
print("RESULT" + json.dumps([m["policy_loss"] + m["verify_loss"] for m in history]))
"""


def run_on_devices(tmp_path, name, devices, bindings):
    env = {**os.environ, "XLA_FLAGS": xla_flags(devices), "JAX_PLATFORMS": "cpu"}
    out = forkserver.run([sys.executable, "-c", MESH_SCRIPT, DIGIT, str(tmp_path / name), *FAST,
                          "WarmStartConfig.num_steps = 20", "RunConfig.num_steps = 3", *bindings],
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return np.asarray(json.loads(out.stdout.split("RESULT")[-1]))


def test_sharded_meshes_match_one_device(tmp_path):
    single = run_on_devices(tmp_path, "one", 1, [])
    fsdp_tp = run_on_devices(tmp_path, "fsdp_tp", 8, ["MeshConfig.data = 1", "MeshConfig.fsdp = 4",
                                                       "MeshConfig.tensor = 2"])
    data = run_on_devices(tmp_path, "data", 8, ["MeshConfig.data = 8"])
    np.testing.assert_allclose(fsdp_tp, single, rtol=1e-4)
    np.testing.assert_allclose(data, single, rtol=1e-4)


LAYOUT_SCRIPT = """
import collections, json, sys, gin, jax
from rlvjax import train
from rlvjax.config import Config
from rlvjax.rl import steps

def measure(step_setup, mesh, state):  # the run's first look at its state: what each device holds then
    held = collections.Counter()
    for a in jax.live_arrays():
        for shard in a.addressable_shards:
            held[shard.device.id] += shard.data.nbytes
    whole = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params))
    print("RESULT" + json.dumps({"whole": whole, "held": [held[d.id] for d in jax.devices()]}))
    raise SystemExit(0)

steps.jit_steps = measure
gin.parse_config_files_and_bindings([sys.argv[1]], sys.argv[3:])
train.train(Config.from_gin(), sys.argv[2])
"""


@pytest.mark.parametrize("warm_steps", [0, 20])
def test_the_state_is_laid_out_over_the_mesh_without_a_whole_copy_on_one_device(tmp_path, warm_steps):
    """The loaded weights stayed whole on the first device for the whole run (and the AdamW moments were built there
    before being split: 3x the weights at start-up): a 1.5B model's 6 GB the memory plan never counted."""
    env = {**os.environ, "XLA_FLAGS": xla_flags(4), "JAX_PLATFORMS": "cpu"}
    out = forkserver.run([sys.executable, "-c", LAYOUT_SCRIPT, DIGIT, str(tmp_path / "run"), *FAST,
                          f"WarmStartConfig.num_steps = {warm_steps}", "MeshConfig.data = 1", "MeshConfig.fsdp = 4",
                          "ModelSpec.hidden_size = 256", "ModelSpec.intermediate_size = 1024",
                          "ModelSpec.num_heads = 4", "ModelSpec.num_kv_heads = 4"],
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    measured = json.loads(out.stdout.split("RESULT")[-1])
    held, whole = measured["held"], measured["whole"]
    assert max(held) <= 1.1 * min(held), held  # it was 112 vs 48 MiB for 64 MiB of weights
    assert max(held) < 3 * whole / 4 * 1.2, (held, whole)  # a quarter of params + moments, and small state


def test_vineppo_value_pass_on_two_devices_matches_one(tmp_path):
    """VinePPO's value pass runs the engine on the mesh (prefixes split over the data axis, padded to it): the
    losses of 2 steps equal one device's, so every Monte-Carlo value was the same."""
    vine = ["RLConfig.algorithm = 'vineppo'", "RLConfig.vineppo_samples = 2", "RLConfig.whiten_advantages = True",
            "RunConfig.num_steps = 2"]
    single = run_on_devices(tmp_path, "one", 1, vine)
    data = run_on_devices(tmp_path, "data", 2, vine + ["MeshConfig.data = 2"])
    np.testing.assert_allclose(data, single, rtol=1e-4)


def test_bfloat16_compute_with_remat_and_chunked_logprobs_trains(tmp_path):
    """The accelerator settings on the CPU: two RL steps with bf16 compute, remat and chunked log-probs give finite
    losses and log the sampler-vs-trainer log-prob gap (bf16 sampler, bf16 trainer: small, not zero)."""
    metrics = run(tmp_path / "bf16", FAST + ["WarmStartConfig.num_steps = 0", "RunConfig.num_steps = 2",
                                             "ModelSpec.compute_dtype = 'bfloat16'", "RLConfig.remat = 'full'",
                                             "RLConfig.logprob_chunk_size = 3"])
    assert len(metrics) == 2
    for m in metrics:
        assert np.isfinite([m["policy_loss"], m["verify_loss"], m["grad_norm"]]).all()
        assert m["nonfinite_updates"] == 0 and 1e-5 < m["policy/logp_gap"] < 0.01  # f32: ~1e-7
