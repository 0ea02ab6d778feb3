"""The memory plan and the scale-out configs: every gin parses, Qwen2.5-Math-1.5B's shapes and per-device bytes
without allocating its weights, refusals name the numbers, and the estimates track XLA's buffer assignment."""

import dataclasses
import functools
import json
import os
import re
import sys
from pathlib import Path

import gin
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AbstractMesh
from flax import nnx

from rlvjax import budget, experiment, memory, parallel, sampling
from rlvjax.config import Config
from rlvjax.model.hf_config import config_from_hf
from rlvjax.model.transformer import ModelConfig, Transformer
from rlvjax.rl import steps
from rlvjax.rl.config import OptimConfig, RLConfig
from conftest import xla_flags
import forkserver

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
EXPERIMENT = CONFIGS / "experiments" / "rlv_grpo_math.gin"
HARDWARE = sorted((CONFIGS / "hardware").glob("*.gin"))
GiB = memory.GiB

QWEN_MATH_1_5B = json.loads((CONFIGS / "models" / "qwen2_5_math_1_5b" / "config.json").read_text())
R1_DISTILL_1_5B = json.loads((CONFIGS / "models" / "r1_distill_qwen_1_5b" / "config.json").read_text())
QWEN_PROMPT_TOKENS, QWEN_VERIFY_TOKENS = 1024, 20
DEVICES = {"cpu": 1, "4xa100": 4, "tpu_v4_8": 4, "tpu_v5e_8": 8}


def configs_of(*files, bindings=()):
    """The run's dataclasses as gin builds them from ``files``."""
    gin.clear_config()
    gin.parse_config_files_and_bindings([str(f) for f in files], list(bindings))
    try:
        c = Config.from_gin()
        return {"model": c.model, "task": c.task, "run": c.run, "rl": c.rl, "optim": c.optim, "mesh": c.mesh,
                "warm": c.warm_start, "memory": c.memory}
    finally:
        gin.clear_config()


def qwen_plan(hardware: str, num_devices: int, bindings=(), prompt_tokens=QWEN_PROMPT_TOKENS, **kwargs):
    c = configs_of(EXPERIMENT, CONFIGS / "hardware" / f"{hardware}.gin", bindings=bindings)
    cfg = config_from_hf(QWEN_MATH_1_5B, jnp.dtype(c["model"].dtype), c["model"].compute_dtype)
    return memory.plan(cfg, c["rl"], c["run"], memory.mesh_shape(c["mesh"], num_devices),
                       prompt_tokens=prompt_tokens, verify_tokens=QWEN_VERIFY_TOKENS, optim=c["optim"], **kwargs)


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.gin")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_gin_file_parses_and_builds_the_dataclasses(path):
    c = configs_of(path)
    assert c["rl"].group_size >= 1 and c["run"].batch_size >= 1


@pytest.mark.parametrize("hardware", HARDWARE, ids=lambda p: p.stem)
def test_experiment_with_each_hardware_config(hardware):
    c = configs_of(EXPERIMENT, hardware)
    assert c["model"].hf_dir and c["task"].name == "file" and c["task"].train_file and c["task"].eval_file
    assert c["rl"].algorithm == "grpo" and c["rl"].max_new_tokens == 1024 and c["model"].dtype == "float32"
    assert c["task"].max_prompt_tokens == 1024 and c["model"].config_json
    if hardware.stem != "cpu":  # an accelerator: bf16 compute, remat, chunked log-probs, >= 4 rows per replica
        mesh = c["mesh"]
        assert -1 not in (mesh.data, mesh.fsdp, mesh.tensor)
        assert c["model"].compute_dtype == "bfloat16" and c["rl"].remat == "full" and c["rl"].logprob_chunk_size
        assert c["rl"].micro_batch_size >= 4 * mesh.data * mesh.fsdp and c["memory"].device_memory_gib
        parallel.check_batch(c["run"].batch_size, AbstractMesh(
            (mesh.data, mesh.fsdp, mesh.tensor), parallel.AXES), "batch_size")


def test_shipped_architectures_without_allocating():
    cfg = config_from_hf(QWEN_MATH_1_5B)
    assert (cfg.kv_dim, cfg.qkv_bias, cfg.tie_word_embeddings, cfg.rope_theta) == (128, True, True, 10000.0)
    params = memory.abstract_params(cfg)
    leaves = jax.tree.leaves(params)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # shapes only: no 6 GB of weights
    d, f, v, layers, q, kv = 1536, 8960, 151936, 28, 12 * 128, 2 * 128
    per_layer = (d * q + q) + 2 * (d * kv + kv) + q * d + 3 * d * f + 2 * d  # attention + biases, MLP, 2 norms
    assert v * d + layers * per_layer + d == 1_543_714_304  # embedding (tied head) + layers + final norm
    assert memory.count_params(params) == 1_543_714_304
    layer0 = params["layers"][0]
    assert layer0["self_attn"]["k_proj"]["kernel"].shape == (1536, 256)
    assert layer0["mlp"]["down_proj"]["kernel"].shape == (8960, 1536)
    assert "lm_head" not in params  # tied
    r1 = config_from_hf(R1_DISTILL_1_5B)  # the same decoder with an untied head
    assert not r1.tie_word_embeddings and memory.count_params(memory.abstract_params(r1)) == 1_543_714_304 + v * d
    c = configs_of(EXPERIMENT, CONFIGS / "hardware" / "4xa100.gin")
    assert experiment.abstract_policy(c["model"])[0] == config_from_hf(QWEN_MATH_1_5B, jnp.float32, "bfloat16")
    # one layer traced and repeated: the whole model's shapes, dtypes and layout (tied and untied), and a copy the
    # caller may change without changing the next plan's
    for small in (dataclasses.replace(cfg, num_layers=3, hidden_size=64, intermediate_size=96, num_heads=4,
                                      num_kv_heads=2, head_dim=16, vocab_size=100),
                  dataclasses.replace(r1, num_layers=2, hidden_size=32, intermediate_size=48, num_heads=2,
                                      num_kv_heads=1, head_dim=16, vocab_size=50, dtype="bfloat16")):
        traced = nnx.to_pure_dict(nnx.split(nnx.eval_shape(lambda: Transformer(small, nnx.Rngs(0))))[1])
        planned = memory.abstract_params(small)
        assert jax.tree.structure(planned) == jax.tree.structure(traced)
        assert jax.tree.leaves(planned) == jax.tree.leaves(traced)
        planned["layers"].pop(0)
        assert memory.abstract_params(small)["layers"].keys() == traced["layers"].keys()


def test_qwen_plan_fits_4xa100_and_tpu_v4_8():
    for hardware, gib in (("4xa100", 35.5), ("tpu_v4_8", 31.0)):
        plan = qwen_plan(hardware, 4)
        budget.check(plan, int(gib * GiB))  # does not raise
        assert plan.num_params == 1_543_714_304
        assert plan.phases["rollout"] <= 16 * GiB and plan.phases["update"] <= 30 * GiB
        assert plan.knobs["update_rows"] >= 4  # rows of ~2k tokens per micro-batch per device
        by_name = {i.name: i.bytes_per_device for i in plan.items}
        # fsdp=2 x tensor=2: f32 params split 4 ways except norms and q/k/v biases (replicated over fsdp)
        assert by_name["params"] == pytest.approx(1_543_714_304 * 4 / 4, rel=0.01)
        assert by_name["optimizer state"] == pytest.approx(2 * by_name["params"], rel=1e-4)  # mu + nu in f32
        # 64 x 8 rollouts, rows over all 4 devices (2 kv heads do not split over tensor = 2), whole heads, bf16:
        # 128 rows x 2068 slots x 28 layers x (k, v) x 2 heads x 128
        rows, slots = 128, QWEN_PROMPT_TOKENS + 1024 + QWEN_VERIFY_TOKENS
        assert by_name["KV cache"] == rows * slots * 28 * 2 * 2 * 128 * 2
        assert "128 rollout rows and " in plan.table()  # the header's count (it divided by data x fsdp only: 256)
        assert by_name["sampling weights"] == pytest.approx(1_543_714_304 * 2, rel=1e-3)  # bf16, every device


def test_qwen_plan_on_tpu_v5e_8_fits():
    plan = qwen_plan("tpu_v5e_8", 8)
    budget.check(plan, int(15.75 * GiB))
    with pytest.raises(ValueError, match=r"^needs \d+\.\d\d GiB per device \(update phase\), has 15\.75 GiB: .*"
                                         r"set RLConfig.remat = 'full'"):
        budget.check(qwen_plan("tpu_v5e_8", 8, ["RLConfig.remat = 'none'", "RLConfig.logprob_chunk_size = 0"]),
                     int(15.75 * GiB))


def test_absurd_setup_is_refused_with_one_line():
    plan = qwen_plan("cpu", 1, ["RLConfig.micro_batch_size = 64"])
    with pytest.raises(ValueError) as err:
        budget.check(plan, 16 * GiB)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("needs ") and "GiB per device (update phase), has 16.00 GiB" in message
    assert "reduce RLConfig.micro_batch_size (now 64, 64 row(s) per device)" in message
    assert "use twice the devices, with MeshConfig.fsdp = 2" in message
    assert "set RLConfig.remat = 'full' (now 'none')" in message
    assert "set RLConfig.logprob_chunk_size = 128 (now 0)" in message
    levers = ("micro_batch_size", "remat", "fsdp", "logprob_chunk_size")  # what each saves, largest first
    assert sorted(levers, key=message.index) == list(levers)
    short = budget.advice(qwen_plan("cpu", 1, ["RLConfig.micro_batch_size = 64", "RLConfig.max_new_tokens = 64"]),
                          "update")
    assert "logprob_chunk_size" not in short  # 64 new tokens: chunks of 128 would change nothing
    # Each switch is weighed by what the plan with it saves in that phase: chunking 1,024 positions of a 151,936
    # vocabulary saves more here than the micro-batch cannot (it is refused with both named).
    for change in ({"remat": "full"}, {"logprob_chunk_size": 128}):
        other = plan.knobs["replan"](**change)
        assert other.phases["update"] < plan.phases["update"]
        assert other.phases["rollout"] == plan.phases["rollout"]  # the switches change the update, not the sampling
    # micro_batch_size = 0 is whole minibatches: the advice says so, not "now 64" (the effective size).
    unset = budget.advice(qwen_plan("cpu", 1, ["RLConfig.micro_batch_size = 0"]), "update")
    assert "reduce RLConfig.micro_batch_size (now 0: minibatches of " in unset


def test_a_switch_that_would_not_shrink_the_phase_is_not_advised():
    """160 positions of a 32,768-token vocabulary: chunks of 128 keep 3 f32 copies of 128 positions (with the head's
    f32 gradient summed over the chunks) against 2 copies of 160, a bigger update; it was advised all the same."""
    small = config_from_hf({**QWEN_MATH_1_5B, "vocab_size": 32_768, "num_hidden_layers": 2})
    rl, run = RLConfig(max_new_tokens=160, micro_batch_size=1), experiment.RunConfig(batch_size=8)
    base = memory.plan(small, rl, run, {"data": 1, "fsdp": 1, "tensor": 1}, prompt_tokens=64)
    chunked = memory.plan(small, dataclasses.replace(rl, logprob_chunk_size=128), run,
                          {"data": 1, "fsdp": 1, "tensor": 1}, prompt_tokens=64)
    assert chunked.phases["update"] > base.phases["update"]
    assert base.knobs["replan"](logprob_chunk_size=128).phases == chunked.phases
    assert "logprob_chunk_size" not in budget.advice(base, "update")


def test_a_mesh_is_advised_only_where_its_plan_is_smaller():
    """"use more fsdp" on 4xa100's 4 devices meant fsdp 4 x tensor 1, whose rollout plans bigger (the sampling
    weights drop the fsdp split, and tensor 2 halved them); the advice now names meshes its plan has weighed."""
    plan = qwen_plan("4xa100", 4, ["RLConfig.group_size = 32"])
    same_devices = plan.knobs["replan_mesh"](data=1, fsdp=4, tensor=1)
    assert same_devices.phases["rollout"] > plan.phases["rollout"] > 35.5 * GiB
    advice = budget.advice(plan)
    assert "tensor = 1" not in advice and "use twice the devices, with MeshConfig.fsdp = 4" in advice, advice
    assert plan.knobs["replan_mesh"](data=1, fsdp=4, tensor=2).phases["rollout"] < plan.phases["rollout"]
    # where moving a factor to fsdp on the same devices helps (the optimizer state of a data-parallel mesh), it is
    # named with the axis it comes from
    data = qwen_plan("4xa100", 4, ["MeshConfig.data = 2", "MeshConfig.fsdp = 1"])
    advice = budget.advice(data, "optimizer")
    assert "set MeshConfig.fsdp = 2 and data = 1 (now 1 and 2: the same devices)" in advice, advice
    assert data.knobs["replan_mesh"](data=1, fsdp=2, tensor=2).phases["optimizer"] < data.phases["optimizer"]
    # a mesh the run would refuse (micro-batches of 2 rows over data x fsdp = 4) is not named, nor one whose plan
    # shrinks the refused phase but raises the peak (data 4 x tensor 2, group 16: the rollout's fsdp 2 x tensor 1
    # moved the peak to the update, 21.29 -> 21.42 GiB)
    micro = qwen_plan("4xa100", 4, ["RLConfig.micro_batch_size = 2"])
    assert "MeshConfig.fsdp" not in budget.advice(micro, "update")
    wide = qwen_plan("4xa100", 8, ["MeshConfig.data = 4", "MeshConfig.fsdp = 1", "MeshConfig.tensor = 2",
                                   "RLConfig.group_size = 16"])
    moved = wide.knobs["replan_mesh"](data=4, fsdp=2, tensor=1)
    assert wide.peak_phase == "rollout" and moved.phases["rollout"] < wide.phases["rollout"]
    assert moved.peak_bytes > wide.peak_bytes and "tensor = 1" not in budget.advice(wide), budget.advice(wide)
    # a refused end-of-run report is offered meshes too (it named none: review diff13)
    final = qwen_plan("4xa100", 4, ["MeshConfig.fsdp = 1", "MeshConfig.tensor = 4", "RunConfig.batch_size = 2",
                                    "RLConfig.micro_batch_size = 8"])
    assert final.peak_phase == "final eval", final.phases
    assert "set MeshConfig.fsdp = 2 and tensor = 2 (now 1 and 4: the same devices)" in budget.advice(final)


def test_refusals_name_the_phase_that_does_not_fit():
    with pytest.raises(ValueError, match=r"\(final eval phase\).*reduce RunConfig.final_eval_samples \(now 128"):
        budget.check(qwen_plan("4xa100", 4, ["RunConfig.final_eval_samples = 128"]), int(35.5 * GiB))
    with pytest.raises(ValueError, match=r"\(rollout phase\).*reduce RunConfig.batch_size \(now 512\)"):
        budget.check(qwen_plan("4xa100", 4, ["RunConfig.batch_size = 512"]), int(35.5 * GiB))


def test_the_warm_start_is_planned_without_the_rl_state_and_refused_by_its_own_knobs():
    """A warm start of Qwen2.5-Math-1.5B on one 40 GB device (64 rows of 600 tokens): every position's log-softmax
    over 151,936 tokens makes it the run's peak; the refusal names the warm start's batch and the memory knobs it
    shares with the update."""
    base = qwen_plan("cpu", 1, ["RLConfig.micro_batch_size = 4"])
    warm = qwen_plan("cpu", 1, ["RLConfig.micro_batch_size = 4"], warm_start_rows=64, warm_start_width=600)
    assert "warm start" not in base.phases and warm.peak_phase == "warm start"
    own = {i.name: i.bytes_per_device for i in warm.items if i.phase == "warm start"}
    # before the RL state exists: its own params and AdamW moments (m, v in f32), not the RL optimizer's on top
    assert warm.phase_bytes("warm start") == sum(own.values())
    params = next(i.bytes_per_device for i in warm.items if i.name == "params")
    assert own["warm params"] == params and 2 * params < own["warm optimizer state"] < 2 * params + 64  # + counts
    assert own["warm activations"] > 64 * 599 * 151936 * 4  # at least one f32 copy of the logits
    with pytest.raises(ValueError) as err:
        budget.check(warm, 40 * GiB)
    message = str(err.value)
    assert "(warm start phase)" in message and "\n" not in message
    assert "reduce WarmStartConfig.batch_size (now 64)" in message
    assert "set RLConfig.remat = 'full' (now 'none')" in message
    assert "set RLConfig.logprob_chunk_size = 128 (now 0)" in message  # 599 positions > one chunk


TINY = ModelConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                   qkv_bias=True, tie_word_embeddings=True)


def test_tiny_config_bytes_by_hand():
    """fsdp=2: kernels and the embedding are split in two, biases and norms replicated (tensor=1)."""
    mesh = {"data": 1, "fsdp": 2, "tensor": 1}
    embedding = 64 * 16 // 2 * 4  # [64, 16] split on its hidden dimension
    attention = (16 * 16 // 2 + 16) * 4 + 2 * (16 * 8 // 2 + 8) * 4 + 16 * 16 // 2 * 4  # q, k, v (+ biases), o
    mlp = 3 * 16 * 32 // 2 * 4
    norms = 3 * 16 * 4
    per_device = embedding + attention + mlp + norms
    assert per_device == 6976
    rl = RLConfig(group_size=2, max_new_tokens=4)
    run = experiment.RunConfig(batch_size=2)
    plan = memory.plan(TINY, rl, run, mesh, prompt_tokens=8, verify_tokens=4, eval_problems=0)
    by_name = {i.name: i.bytes_per_device for i in plan.items}
    assert plan.num_params == 3408
    assert by_name["params"] == per_device
    assert 0 < by_name["optimizer state"] - 2 * per_device < 64  # mu, nu + a few scalar counters
    assert "reference params" not in by_name
    assert by_name["gradients"] == 2 * per_device
    # the optax step: the gradients and the updates beside the moments (and the params, persistent)
    assert by_name["grads + updates + moments"] == 2 * per_device + by_name["optimizer state"]
    assert plan.phase_bytes("optimizer") == 3 * per_device + 2 * by_name["optimizer state"]
    assert by_name["tied embedding gradient"] == embedding  # the head's part of the embedding's gradient
    assert "embedding gradient, whole" not in by_name  # only where data and fsdp both split
    data_x_fsdp = memory.plan(TINY, rl, experiment.RunConfig(batch_size=4), {"data": 2, "fsdp": 2, "tensor": 1},
                              prompt_tokens=8, verify_tokens=4, eval_problems=0)
    assert {i.name: i.bytes_per_device for i in data_x_fsdp.items}["embedding gradient, whole"] == 64 * 16 * 4 // 2
    # 2 prompts x 2 samples over 2 devices = 2 rows per device of 8 + 4 + 4 slots; 1 layer of k and v, 1 kv head
    # of 8, f32.
    assert by_name["KV cache"] == 2 * (2 * 16 * 1 * 8 * 4)
    assert by_name["gathered weights"] == 64 * 16 * 4 // 2 + (16 * 16 + 2 * 16 * 8 + 16 * 16 + 3 * 16 * 32) * 4 // 2
    # fsdp alone splits the embedding, o and down only on their second dimension: relaid out for sampling through
    # one more (whole) copy of each
    assert by_name["relayout temps"] == (64 * 16 + 16 * 16 + 32 * 16) * 4
    # Rows over fsdp x tensor = 4 devices: 6 eval problems (5 padded to fsdp) x 4 samples give each device 6
    # requests, which come from 3 consecutive prompts (it prefills all three), not 6 / 4 rounded up.
    straddled = memory.plan(TINY, rl, experiment.RunConfig(batch_size=4, eval_samples=4),
                            {"data": 1, "fsdp": 2, "tensor": 2}, prompt_tokens=8, verify_tokens=4, eval_problems=5)
    assert {i.name: i.bytes_per_device for i in straddled.items}["eval prompt KV cache"] == 3 * 8 * (2 * 8 * 4)
    with_reference = memory.plan(TINY, RLConfig(group_size=2, max_new_tokens=4, beta=0.1), run, mesh,
                                 prompt_tokens=8, verify_tokens=4, eval_problems=0)
    assert {i.name: i.bytes_per_device for i in with_reference.items}["reference params"] == per_device
    assert set(plan.phases) == {"rollout", "update", "optimizer"}  # no eval problems, no final report
    # The evaluator samples batches of up to 32 problems, padded to the data axes, its rows split over them.
    with_eval = memory.plan(TINY, rl, experiment.RunConfig(batch_size=2, eval_samples=3, final_eval_samples=2), mesh,
                            prompt_tokens=8, verify_tokens=4, eval_problems=5)
    kv = {i.name: i.bytes_per_device for i in with_eval.items}
    assert kv["eval KV cache"] == 6 * 3 // 2 * (2 * 16 * 1 * 8 * 4)  # 6 problems (5 padded to 2 devices) x 3
    assert kv["final KV cache"] == 6 * 2 // 2 * (2 * 16 * 1 * 8 * 4)
    # fsdp=2: sampling uses a copy without the fsdp split, every weight (f32 here) on each device
    assert kv["sampling weights"] == kv["eval sampling weights"] == 3408 * 4
    assert set(with_eval.phases) == {"rollout", "update", "optimizer", "eval", "final eval"}
    no_eval = memory.plan(TINY, rl, experiment.RunConfig(batch_size=2, final_eval_samples=2), mesh,
                          prompt_tokens=8, verify_tokens=4, eval_problems=0)
    assert set(no_eval.phases) == {"rollout", "update", "optimizer"}
    # VinePPO's value pass: 64 step prefixes (as wide as the 16-slot bucket of a prompt and a completion) x 3
    # continuations, split over the 2 devices, 16 + 4 slots each, no verify suffix.
    value = memory.plan(TINY, RLConfig(algorithm="vineppo", group_size=2, max_new_tokens=4, vineppo_samples=3),
                        run, mesh, prompt_tokens=8, verify_tokens=4, eval_problems=0)
    assert {i.name: i.bytes_per_device for i in value.items}["value KV cache"] == 64 * 3 // 2 * (20 * 1 * 8 * 2 * 4)
    assert set(value.phases) == {"rollout", "value pass", "update", "optimizer"}
    assert "reduce RLConfig.vineppo_samples (now 3)" in budget.advice(value, "value pass")
    # 64 prefixes do not split over 3 data devices: padded to 66, as PoolSampler pads them (the plan raised
    # jax's IndivisibleError, and with it every VinePPO run on such a mesh).
    three = memory.plan(TINY, RLConfig(algorithm="vineppo", group_size=2, max_new_tokens=4, vineppo_samples=2),
                        experiment.RunConfig(batch_size=6, final_eval_samples=0), {"data": 3}, prompt_tokens=8,
                        verify_tokens=4, eval_problems=0)
    assert {i.name: i.bytes_per_device for i in three.items}["value KV cache"] == 66 * 2 // 3 * (20 * 1 * 8 * 2 * 4)
    table = plan.table(limit_bytes=GiB)
    assert "3,408 params" in table and "fits" in table and "<- peak" in table


SHARDED_BYTES = """
import jax
from flax import nnx
from rlvjax import memory, parallel
from rlvjax.model.transformer import ModelConfig, Transformer
cfg = ModelConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
params = nnx.to_pure_dict(nnx.split(Transformer(cfg, nnx.Rngs(0)))[1])
for axes in ({"fsdp": 4}, {"data": 2, "fsdp": 2}, {"fsdp": 2, "tensor": 2}):
    mesh = parallel.make_mesh(parallel.MeshConfig(**{"data": 1, "fsdp": 1, "tensor": 1, **axes}))
    placed = jax.device_put(params, parallel.shardings(params, mesh))
    held = [sum(s.data.nbytes for x in jax.tree.leaves(placed) for s in x.addressable_shards if s.device == d)
            for d in jax.devices()]
    print(memory.sharded_bytes(params, mesh), max(held), sum(x.nbytes for x in jax.tree.leaves(params)))
"""


UPDATE_ON_MESHES = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 4)
from rlvjax import dry_run, experiment, memory, parallel
from rlvjax.model.hf_config import config_from_hf
from rlvjax.rl.config import OptimConfig, RLConfig
cfg = config_from_hf({**json.loads(open(sys.argv[1]).read()), "num_hidden_layers": 2})
# configs/experiments/rlv_grpo_math.gin on configs/hardware/4xa100.gin: 512 rows of 1024 + 1024 + 32 tokens
rl = RLConfig(group_size=8, max_new_tokens=1024, micro_batch_size=16, remat="full", logprob_chunk_size=128)
run, optim = experiment.RunConfig(batch_size=64, num_steps=10), OptimConfig(learning_rate=1e-6, warmup_steps=10,
                                                                            weight_decay=0.0)
for axes in ({"data": 2, "fsdp": 2}, {"data": 4}, {"fsdp": 4}):
    mesh = parallel.make_mesh(parallel.MeshConfig(**{"data": 1, "fsdp": 1, "tensor": 1, **axes}))
    compiled = dry_run.compile_update(cfg, rl, run, optim, mesh, prompt_tokens=1024, verify_tokens=32)
    plan = memory.plan(cfg, rl, run, mesh, prompt_tokens=1024, verify_tokens=32, eval_problems=0, optim=optim)
    planned = max(plan.phase_bytes("update"), plan.phase_bytes("optimizer"))
    print(axes, compiled.bytes_per_device / planned)
"""


@pytest.mark.slow
def test_the_update_plan_tracks_xla_on_data_and_fsdp_meshes():
    """Qwen2.5-Math's widths (2 layers, tied, f32) on 4 fake devices: the update's compiled memory over its plan.
    On data 2 x fsdp 2 it was 1.18 (the plan lacked the tied head's part of the embedding gradient and the
    partitioner's unsplit sum of it), which a budget between the two would pass and then run out of memory."""
    ratios, out = compiled_over_plan(UPDATE_ON_MESHES)
    assert len(ratios) == 3 and all(0.9 <= r <= 1.1 for r in ratios), out


HEADS_OVER_TENSOR = """
import jax
jax.config.update("jax_num_cpu_devices", 8)
from rlvjax import dry_run, experiment, memory, parallel
from rlvjax.model.transformer import ModelConfig
from rlvjax.rl.config import OptimConfig, RLConfig
rl = RLConfig(group_size=4, max_new_tokens=256, micro_batch_size=8, remat="full", logprob_chunk_size=128)
run = experiment.RunConfig(batch_size=8)
for heads, kv, head_dim, tensor in ((12, 2, 32, 8), (12, 2, 128, 8), (14, 2, 32, 8), (14, 2, 32, 4), (12, 2, 32, 4),
                                    (16, 2, 32, 8), (24, 3, 64, 8), (24, 6, 64, 8), (28, 7, 64, 4)):
    cfg = ModelConfig(vocab_size=8192, hidden_size=heads * head_dim, intermediate_size=1024, num_layers=2,
                      num_heads=heads, num_kv_heads=kv, head_dim=head_dim, tie_word_embeddings=True)
    mesh = parallel.make_mesh(parallel.MeshConfig(data=1, fsdp=1, tensor=tensor), jax.devices()[:tensor])
    compiled = dry_run.compile_update(cfg, rl, run, OptimConfig(), mesh, prompt_tokens=256, verify_tokens=16)
    plan = memory.plan(cfg, rl, run, mesh, prompt_tokens=256, verify_tokens=16, eval_problems=0)
    print(heads, kv, tensor, compiled.bytes_per_device / max(plan.phase_bytes("update"), plan.phase_bytes("optimizer")))
"""


@pytest.mark.slow
def test_heads_that_do_not_divide_over_tensor_are_planned_as_xla_splits_them():
    """12 heads over tensor 8 (Qwen2.5-Math's heads on 8 GPUs): the plan kept every head's attention scores on each
    device, 0.38 of the compiled update here (0.43 at Qwen2.5-Math's widths): it ranked tensor 8 above tensor 4 and
    refused runs that fit. Planned as evenly split (2 a device), 14 heads over 8 were 1.6x their plan: XLA splits the
    heads over the largest factor of tensor that divides them (14 over 8: 2 ways, 7 heads a device), and only as far as
    the split tiles the scores' [kv heads, groups] layout: 24 heads / 3 kv over 8 were 2.1x a plan of 3 heads a
    device (XLA kept all 24; 24 / 6 kv over 8 kept 12, 28 / 7 kv over 4 all 28)."""
    ratios, out = compiled_over_plan(HEADS_OVER_TENSOR)
    assert len(ratios) == 9 and all(0.8 <= r <= 1.1 for r in ratios), out


NARROW_WEIGHTS = """
import dataclasses, json, sys
import jax
jax.config.update("jax_num_cpu_devices", 4)
from rlvjax import dry_run, experiment, memory, parallel
from rlvjax.model.hf_config import config_from_hf
from rlvjax.rl.config import OptimConfig, RLConfig
cfg = config_from_hf({**json.loads(open(sys.argv[1]).read()), "num_hidden_layers": 2})
cfg = dataclasses.replace(cfg, dtype="bfloat16", compute_dtype="float32")
rl = RLConfig(group_size=4, max_new_tokens=512, micro_batch_size=8, remat="full", logprob_chunk_size=128)
run = experiment.RunConfig(batch_size=16)
for axes in ({"fsdp": 4}, {"fsdp": 2, "tensor": 2}):
    mesh = parallel.make_mesh(parallel.MeshConfig(**{"data": 1, "fsdp": 1, "tensor": 1, **axes}))
    compiled = dry_run.compile_update(cfg, rl, run, OptimConfig(), mesh, prompt_tokens=2048, verify_tokens=16)
    plan = memory.plan(cfg, rl, run, mesh, prompt_tokens=2048, verify_tokens=16, eval_problems=0)
    print(axes, compiled.bytes_per_device / max(plan.phase_bytes("update"), plan.phase_bytes("optimizer")))
"""


@pytest.mark.slow
def test_weights_narrower_than_the_compute_dtype_are_planned_cast():
    """bf16 weights with f32 compute (Qwen2.5-Math's widths, 2 layers): XLA casts the weights before gathering them,
    so the gathered weights and the gradients are f32. Planned in bf16, the update was 1.26x its plan on fsdp 4
    (1.17 on fsdp 2 x tensor 2, at 2,048-token prompts)."""
    ratios, out = compiled_over_plan(NARROW_WEIGHTS)
    assert len(ratios) == 2 and all(0.9 <= r <= 1.1 for r in ratios), out


UNREMATTED_ON_FSDP = """
import jax
jax.config.update("jax_num_cpu_devices", 4)
from rlvjax import dry_run, experiment, memory, parallel
from rlvjax.model.transformer import ModelConfig
from rlvjax.rl.config import OptimConfig, RLConfig
rl, run = RLConfig(group_size=4, max_new_tokens=16, micro_batch_size=8), experiment.RunConfig(batch_size=8)
for tied, axes in ((False, {"fsdp": 4}), (True, {"fsdp": 4}), (True, {"data": 2, "fsdp": 2}),
                   (False, {"fsdp": 2, "tensor": 2})):
    cfg = ModelConfig(vocab_size=8192, hidden_size=512, intermediate_size=1536, num_layers=2, num_heads=8,
                      num_kv_heads=2, tie_word_embeddings=tied)
    mesh = parallel.make_mesh(parallel.MeshConfig(**{"data": 1, "fsdp": 1, "tensor": 1, **axes}))
    compiled = dry_run.compile_update(cfg, rl, run, OptimConfig(), mesh, prompt_tokens=16, verify_tokens=16)
    plan = memory.plan(cfg, rl, run, mesh, prompt_tokens=16, verify_tokens=16, eval_problems=0)
    planned = max(plan.phase_bytes("update"), plan.phase_bytes("optimizer"))
    print(tied, axes, compiled.bytes_per_device / planned)
"""


@pytest.mark.slow
def test_the_update_plan_without_remat_tracks_xla_where_the_weights_outweigh_the_activations():
    """Hidden 512, 2 layers, 16 + 16 + 16 tokens, one row per device, no remat, f32, on 4 fake devices: the
    update's compiled memory over its plan. Without remat every layer's gradient is formed unsplit over fsdp before
    its reduction (on XLA's CPU backend all of them at once); before the plan counted that the ratios were 1.4-2.6,
    a run that passed the plan and then ran out of memory."""
    ratios, out = compiled_over_plan(UNREMATTED_ON_FSDP)
    assert len(ratios) == 4 and all(0.9 <= r <= 1.1 for r in ratios), out


TIED_UNREMATTED_AT_QWEN_WIDTHS = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 4)
from rlvjax import dry_run, experiment, memory, parallel
from rlvjax.model.hf_config import config_from_hf
from rlvjax.rl.config import OptimConfig, RLConfig
cfg = config_from_hf({**json.loads(open(sys.argv[1]).read()), "num_hidden_layers": 2})
assert cfg.tie_word_embeddings
run = experiment.RunConfig(batch_size=8)
for axes, prompt, new in (({"fsdp": 4}, 256, 256), ({"fsdp": 4}, 512, 1024), ({"fsdp": 2, "tensor": 2}, 256, 256)):
    rl = RLConfig(group_size=8, max_new_tokens=new, micro_batch_size=8, num_minibatches=1)
    mesh = parallel.make_mesh(parallel.MeshConfig(**{"data": 1, "fsdp": 1, "tensor": 1, **axes}))
    compiled = dry_run.compile_update(cfg, rl, run, OptimConfig(), mesh, prompt_tokens=prompt, verify_tokens=8)
    plan = memory.plan(cfg, rl, run, mesh, prompt_tokens=prompt, verify_tokens=8, eval_problems=0)
    print(axes, prompt, new, compiled.bytes_per_device / max(plan.phase_bytes("update"), plan.phase_bytes("optimizer")))
"""


@pytest.mark.slow
def test_the_update_plan_without_remat_holds_a_tied_embeddings_gradients_beside_the_activations():
    """Qwen2.5-Math-1.5B's widths (vocab 151936, tied) with 2 layers, no remat (the default), f32, on 4 fake devices:
    the tied embedding's two whole gradients are held while the activations are, which the plan did not count where
    the activations outweigh the unsplit gradients: 1.11x, 1.18x and 1.28x short (a run that passed the plan, the only
    check a real run makes, and ran out of memory; a 2026-12-07 review)."""
    ratios, out = compiled_over_plan(TIED_UNREMATTED_AT_QWEN_WIDTHS)
    assert len(ratios) == 3 and all(0.88 <= r <= 1.02 for r in ratios), out


def compiled_over_plan(script: str) -> tuple[list[float], str]:
    """Run ``script`` on Qwen2.5-Math-1.5B's config.json: the ratio ending each line it prints, and its output."""
    out = forkserver.run([sys.executable, "-c", script, str(CONFIGS / "models" / "qwen2_5_math_1_5b" / "config.json")],
                         timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    return [float(line.rsplit(" ", 1)[1]) for line in out.stdout.splitlines()], out.stdout


WARM_START_ON_MESHES = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 4)
from rlvjax import dry_run, memory, parallel, sft
from rlvjax.model.hf_config import config_from_hf
from rlvjax.rl.config import RLConfig
cfg = config_from_hf({**json.loads(open(sys.argv[1]).read()), "num_hidden_layers": 2})
warm, width = sft.WarmStartConfig(num_steps=100, batch_size=32), 200
for rl in (RLConfig(), RLConfig(remat="full", logprob_chunk_size=64)):
    for axes in ({"data": 2, "fsdp": 2}, {"fsdp": 4}, {"fsdp": 2, "tensor": 2}):
        mesh = parallel.make_mesh(parallel.MeshConfig(**{"data": 1, "fsdp": 1, "tensor": 1, **axes}))
        compiled = dry_run.compile_warm_start(cfg, rl, warm, mesh, width=width)
        items = memory.warm_start_items(cfg, memory.abstract_params(cfg), mesh, rows=warm.batch_size, width=width,
                                        remat=rl.remat, logprob_chunk=rl.logprob_chunk_size)
        print(rl.remat, axes, compiled.bytes_per_device / sum(i.bytes_per_device for i in items))
"""


@pytest.mark.slow
def test_the_warm_start_plan_tracks_xla_on_data_fsdp_and_tensor_meshes():
    """Qwen2.5-Math's widths (2 layers, its 151,936-token vocabulary, f32), 32 rows of 200 tokens on 4 fake devices:
    the warm start's compiled memory over its plan, with and without remat and chunked logits. Never under by more
    than 10% (a budget between the two would pass and then run out of memory). Before the plan counted the head's
    gradient that the scan over logit chunks holds gathered over fsdp, remat with chunks of 64 was 1.25-1.32 on
    data 2 x fsdp 2 and fsdp 4. Without remat on fsdp the plan also counts every weight's gradient formed unsplit
    before its reduction (the test above), which these widths partly overlap with the freed logits: 0.84 there,
    the one place the plan is more than 15% over."""
    ratios, out = compiled_over_plan(WARM_START_ON_MESHES)
    assert len(ratios) == 6 and all(0.8 <= r <= 1.1 for r in ratios), out


def test_sharded_bytes_match_arrays_placed_on_a_mesh():
    # On 4 fake devices (in one pytest process there is 1 device, where nothing is split and any count would do).
    out = forkserver.run([sys.executable, "-c", SHARDED_BYTES], timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu",
                              "XLA_FLAGS": xla_flags(4)})
    assert out.returncode == 0, out.stderr[-2000:]
    for line in out.stdout.splitlines():
        planned, held, whole = map(int, line.split())
        assert planned == held < whole, line


def _xla_temp_bytes(cfg, rl, run, prompt_tokens, verify_tokens):
    """XLA's own temporary buffers for the update and the rollout step, compiled for one CPU device."""
    tx = OptimConfig().make(10)
    graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))[0]
    params = memory.abstract_params(cfg)
    state = jax.eval_shape(lambda p: steps.init_state(p, tx, seed=0, keep_reference=False), params)
    step_setup = steps.StepSetup(graphdef, tx, rl, tuple(range(5, 5 + verify_tokens)), 1, 2, (3,), 0)
    rows, n, t = run.batch_size * rl.group_size, rl.max_new_tokens, prompt_tokens + rl.max_new_tokens + verify_tokens
    s = jax.ShapeDtypeStruct
    batch = steps.UpdateBatch(s((rows, t), jnp.int32), s((rows, t), bool), s((rows, n), jnp.int32),
                              s((rows, n), bool), s((rows, n), jnp.float32), s((rows, n), jnp.float32),
                              s((rows,), jnp.int32), s((rows,), jnp.float32))
    update = jax.jit(functools.partial(steps.update_step, step_setup), donate_argnums=(0,)).lower(state, batch)
    rollout = jax.jit(functools.partial(steps.rollout_step, step_setup)).lower(
        params, s((run.batch_size, prompt_tokens), jnp.int32), s((run.batch_size, prompt_tokens), bool),
        jax.random.key(0))
    return {"update": update.compile().memory_analysis().temp_size_in_bytes,
            "rollout": rollout.compile().memory_analysis().temp_size_in_bytes}


@pytest.mark.slow
def test_estimates_track_xla_buffer_assignment():
    """The update's and the rollout's own buffers within -15%..+20% of what XLA allocates (f32 on CPU: the CPU backend
    upcasts bf16, so only f32 is comparable here)."""
    cfg = ModelConfig(vocab_size=4096, hidden_size=128, intermediate_size=384, num_layers=2, num_heads=4,
                      num_kv_heads=2, qkv_bias=True, tie_word_embeddings=True)
    rl = RLConfig(group_size=8, max_new_tokens=192, micro_batch_size=4)
    run = experiment.RunConfig(batch_size=1, num_steps=10)
    xla = _xla_temp_bytes(cfg, rl, run, prompt_tokens=48, verify_tokens=8)
    plan = memory.plan(cfg, rl, run, {"data": 1}, prompt_tokens=48, verify_tokens=8)
    for phase in ("update", "rollout"):
        own = sum(i.bytes_per_device for i in plan.items if i.phase == phase)
        assert 0.85 < own / xla[phase] < 1.2, (phase, own, xla[phase])


@pytest.mark.slow
def test_qwen3_query_key_norms_are_planned_as_xla_allocates_them():
    """What Qwen3's query/key norms add to the update (their outputs and f32 inputs, every layer) is what they add to
    XLA's buffers, within 10% (they were not planned: 8% of the update's buffers at these widths)."""
    rl, run = RLConfig(group_size=8, max_new_tokens=192, micro_batch_size=4), experiment.RunConfig(batch_size=1)
    added = {}
    for qk_norm in (False, True):
        cfg = ModelConfig(vocab_size=4096, hidden_size=128, intermediate_size=384, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=64, tie_word_embeddings=True, qk_norm=qk_norm)
        plan = memory.plan(cfg, rl, run, {"data": 1}, prompt_tokens=48, verify_tokens=8)
        own = sum(i.bytes_per_device for i in plan.items if i.phase == "update")
        added[qk_norm] = (own, _xla_temp_bytes(cfg, rl, run, prompt_tokens=48, verify_tokens=8)["update"])
    planned, compiled = (added[True][i] - added[False][i] for i in (0, 1))
    assert compiled > 0.05 * added[False][1] and 0.9 < planned / compiled < 1.1, (planned, compiled)


def test_enforce_uses_the_configured_limit(capsys):
    plan = memory.plan(TINY, RLConfig(group_size=2, max_new_tokens=4), experiment.RunConfig(batch_size=2),
                       {"data": 1}, prompt_tokens=8, verify_tokens=4)
    if jax.devices()[0].platform == "cpu":  # CPU devices report no limit: they share this machine's memory
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert budget.device_limit() == host // jax.local_device_count()
        assert budget.device_limit(host=False) is None  # a dry run plans for other hardware
        budget.enforce(plan)
        assert "memory plan per device" in capsys.readouterr().out
    with pytest.raises(ValueError, match="has 1.05 KiB"):
        budget.enforce(plan, budget.MemoryConfig(device_memory_gib=1e-6), echo=False)
    budget.enforce(plan, budget.MemoryConfig(device_memory_gib=1e-6, refuse=False))
    assert "warning: the plan needs" in capsys.readouterr().out


def test_a_configured_budget_is_capped_by_what_the_device_may_allocate(monkeypatch):
    """4xa100.gin's 35.5 GiB assumes XLA_PYTHON_CLIENT_MEM_FRACTION = 0.9; at JAX's default 0.75 an A100-40GB
    allocates ~29.6 GiB, and a plan between the two passed and then ran out of memory."""
    class Device:
        def __init__(self, limit):
            self.limit = limit

        def memory_stats(self):
            return None if self.limit is None else {"bytes_limit": self.limit}

    config = budget.MemoryConfig(device_memory_gib=35.5)
    monkeypatch.setattr(jax, "local_devices", lambda: [Device(int(29.6 * GiB))])
    assert budget.device_limit(config) == int(29.6 * GiB)
    monkeypatch.setattr(jax, "local_devices", lambda: [Device(int(72 * GiB))])
    assert budget.device_limit(config) == int(35.5 * GiB)
    monkeypatch.setattr(jax, "local_devices", lambda: [Device(None)])  # CPU devices, fake ones of a dry run
    assert budget.device_limit(config, host=False) == int(35.5 * GiB)


def test_evaluates_memory_advice_never_suggests_devices_that_would_not_help():
    """evaluate runs on a data-only mesh: every device holds the whole policy, so "use more devices" (its first
    advice when the policy dominated) could not help; half precision does."""
    cfg = config_from_hf({**QWEN_MATH_1_5B, "num_hidden_layers": 28})
    plan = memory.eval_plan(cfg, {"data": 8}, prompts=8, samples=2, rows=16, prompt_tokens=64, new_tokens=64,
                            verify_tokens=20)
    advice = budget.advice(plan)
    assert advice.startswith("load it with --dtype bfloat16 (every device holds the whole policy)") and \
        "more devices" not in advice
    bf16 = config_from_hf({**QWEN_MATH_1_5B, "num_hidden_layers": 28}, jnp.bfloat16)
    assert "use a device with more memory" in budget.advice(memory.eval_plan(
        bf16, {"data": 8}, prompts=8, samples=2, rows=16, prompt_tokens=64, new_tokens=64, verify_tokens=20))


def test_evaluates_refusal_names_the_largest_value_of_each_setting_that_fits():
    """Each setting offered fits alone at the value named, and not one step above it. A plan of token buffers
    (K = 2**30) was told to lower --batch_size or load bfloat16 too, which saved KiB of its 320 GiB."""
    cfg = config_from_hf({**QWEN_MATH_1_5B, "num_hidden_layers": 28})
    shape = dict(prompts=32, prompt_tokens=64, verify_tokens=20)
    plan = memory.eval_plan(cfg, {"data": 1}, samples=512, rows=256, new_tokens=8192, **shape)
    limit = int(70 * GiB)
    advice = budget.advice(plan, limit_bytes=limit)
    fixes = {flag: int(v) for flag, v in re.findall(r"lower --(\w+) to (\d+)", advice)}
    assert set(fixes) == {"num_samples", "batch_size", "max_new_tokens"} and "--dtype bfloat16" in advice, advice

    def peak(**change):
        return memory.eval_plan(cfg, {"data": 1}, **{"samples": 512, "rows": 256, "new_tokens": 8192, **change},
                                **shape).peak_bytes

    k, rows, new = fixes["num_samples"], fixes["batch_size"], fixes["max_new_tokens"]
    assert peak(samples=k) <= limit < peak(samples=2 * k)
    assert peak(rows=rows) <= limit < peak(rows=rows + 1)
    assert peak(new_tokens=new) <= limit < peak(new_tokens=new + 1)
    tokens = memory.eval_plan(cfg, {"data": 1}, samples=2 ** 30, rows=256, new_tokens=8, **shape)
    assert re.fullmatch(r"lower --num_samples to \d+ \(now 1073741824\)", budget.advice(tokens, limit_bytes=limit))
    # nothing fits alone (the policy itself is over the limit): every lever, biggest first, said so
    assert budget.advice(plan, limit_bytes=2 ** 20).startswith("no one setting fits alone: ")
    # --dtype is not offered where it does not apply (a --checkpoint)
    assert "bfloat16" not in budget.advice(memory.eval_plan(cfg, {"data": 1}, samples=512, rows=256, new_tokens=8192,
                                                            dtype_flag=False, **shape), limit_bytes=limit)
    # with a particle search after the pool, a setting is offered only where both phases then fit (the pool's alone
    # offered --num_samples and --batch_size, which left the search over the limit)
    search = dict(particle_rows=32 * 3, particles=3)  # 92 GiB, the pool 134
    with_search = memory.eval_plan(cfg, {"data": 1}, samples=512, rows=256, new_tokens=8192, **search, **shape)
    assert with_search.phases["particles"] > limit and with_search.peak_phase == "eval"
    offered = {flag: int(v) for flag, v in re.findall(r"lower --(\w+) to (\d+)",
                                                      budget.advice(with_search, limit_bytes=limit))}
    knob = {"num_samples": "samples", "batch_size": "rows", "max_new_tokens": "new_tokens"}
    assert offered and all(memory.eval_plan(cfg, {"data": 1}, **{"samples": 512, "rows": 256, "new_tokens": 8192,
                                                                knob[f]: v}, **search, **shape).peak_bytes <= limit
                           for f, v in offered.items())


def test_the_longest_prompt_and_its_batch_width_round_up_like_the_sampler():
    class Chars:
        def encode(self, text, add_special_tokens=False):
            return list(text)

    assert memory.longest_prompt(Chars(), ["ab", "x" * 17]) == 17
    for longest, width in ((17, 32), (16, 16), (33, 64), (257, 512), (1000, 1024)):
        assert sampling.bucket_width(memory.longest_prompt(Chars(), ["x" * longest])) == width
        ids, _ = sampling.left_pad([[1] * longest])
        assert ids.shape[1] == width
    widths = {sampling.bucket_width(n) for n in range(1, 1025)}  # MATH's prompts: 8 compilations at most
    assert widths == {16, 32, 64, 128, 256, 512, 768, 1024}
    assert memory.mesh_shape(parallel.MeshConfig(data=-1, fsdp=2), 8) == {"data": 4, "fsdp": 2, "tensor": 1}
    with pytest.raises(ValueError, match="needs 4 devices"):
        memory.mesh_shape(parallel.MeshConfig(data=1, fsdp=4), 8)


def test_particle_search_plan_covers_what_its_steps_compile_to():
    """The particle strategy's rows and temporaries (``memory.particle_items``) against the largest of its three
    compiled calls (advance, score, take), without the weights: the plan covers each, by at most 15%."""
    from rlvjax.sampling import stepwise
    from rlvjax.sampling.choice import SamplingParams

    cfg = ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2)
    graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
    prompts, particles, prompt_tokens, new_tokens, suffix = 4, 8, 16, 48, (5, 6, 7)
    decoder = stepwise.Decoder(graphdef, SamplingParams(temperature=1.0, stop_ids=(1,), pad_id=0), new_tokens,
                               suffix, (8, 9))
    ids = jnp.ones((prompts, prompt_tokens), jnp.int32)
    rng, r = jax.random.key(0), prompts * particles
    rows = decoder.start(state, ids, jnp.ones_like(ids), rng, particles)
    weights = sum(x.nbytes for x in jax.tree.leaves(state))
    calls = {"advance": (stepwise._advance, (decoder, state, rows, rng, jnp.full((r,), new_tokens, jnp.int32), (3,))),
             "score": (stepwise._score, (decoder, state, rows)),
             "take": (stepwise._take, (rows, jnp.arange(r, dtype=jnp.int32)))}
    held = {}
    for name, (call, args) in calls.items():
        m = call.lower(*args).compile().memory_analysis()
        held[name] = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
                      - (weights if name != "take" else 0))
    planned = sum(i.bytes_per_device for i in memory.particle_items(
        cfg, rows=r, prompt_tokens=prompt_tokens, new_tokens=new_tokens, verify_tokens=len(suffix)))
    assert max(held.values()) <= planned <= 1.15 * max(held.values()), (planned, held)


PLAN_GAPS = """
import jax
jax.config.update("jax_num_cpu_devices", 4)
from rlvjax import dry_run, experiment, memory, parallel
from rlvjax.model.transformer import ModelConfig
from rlvjax.rl.config import OptimConfig, RLConfig
small = dict(hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2, num_kv_heads=1)
cases = [("vocab 8190 over tensor 4", dict(vocab_size=8190), RLConfig(group_size=2, max_new_tokens=512), {"tensor": 4}),
         ("beta 0.1", dict(vocab_size=8192), RLConfig(group_size=2, max_new_tokens=512, beta=0.1), {}),
         ("everything_saveable", dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_layers=4,
                                      num_heads=4, num_kv_heads=2),
          RLConfig(group_size=4, max_new_tokens=256, remat="everything_saveable"), {})]
for name, model, rl, axes in cases:
    cfg = ModelConfig(**{**small, **model})
    run = experiment.RunConfig(batch_size=2 if rl.group_size == 2 else 8)
    mesh = parallel.make_mesh(parallel.MeshConfig(**{"data": 1, "fsdp": 1, "tensor": 1, **axes}),
                              jax.devices()[:max(1, axes.get("tensor", 1))])
    compiled = dry_run.compile_update(cfg, rl, run, OptimConfig(), mesh, prompt_tokens=32, verify_tokens=16)
    plan = memory.plan(cfg, rl, run, mesh, prompt_tokens=32, verify_tokens=16, eval_problems=0)
    print(name, compiled.bytes_per_device / max(plan.phase_bytes("update"), plan.phase_bytes("optimizer")))
"""


@pytest.mark.slow
def test_the_update_plan_counts_unsplit_widths_the_reference_logits_and_saveable_remat():
    """Compiled update over its plan where the plan under-counted: a vocabulary the tensor axis does not divide
    (its logits stay whole, as ``parallel.spec_for`` leaves the head; planned as split, 2.22), beta > 0 (the
    reference policy's f32 log-probs, left out: 1.31) and a remat policy that saves activations (planned as "full":
    everything_saveable 2.09)."""
    out = forkserver.run([sys.executable, "-c", PLAN_GAPS], timeout=600,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    ratios = [float(line.rsplit(" ", 1)[1]) for line in out.stdout.splitlines()]
    assert len(ratios) == 3 and all(0.8 <= r <= 1.1 for r in ratios), out.stdout
