"""Partition rules as data: which spec each parameter path gets, the mesh/batch errors, and how a process finds
its multi-host job (config, environment or the cluster itself)."""

import dataclasses
import types

import jax
import pytest
from jax.sharding import PartitionSpec as P

from rlvjax import parallel
import forkserver

MESH = types.SimpleNamespace(shape={"data": 2, "fsdp": 4, "tensor": 2})


@pytest.mark.parametrize("path,shape,spec", [
    ("embed_tokens/embedding", (96, 64), P("tensor", "fsdp")),
    ("layers/0/self_attn/q_proj/kernel", (64, 64), P("fsdp", "tensor")),
    ("layers/3/mlp/down_proj/kernel", (112, 64), P("tensor", "fsdp")),
    ("layers/0/self_attn/k_proj/bias", (32,), P("tensor")),
    ("layers/1/input_layernorm/weight", (64,), P()),
    # optimizer moments carry the parameter path inside theirs
    ("0/mu/layers/2/mlp/up_proj/kernel", (64, 112), P("fsdp", "tensor")),
    # a dimension the axis does not divide is replicated instead
    ("layers/0/self_attn/v_proj/kernel", (64, 3), P("fsdp")),
    ("lm_head/kernel", (6, 97), P()),
    ("lm_head/kernel", (64, 96), P("fsdp", "tensor")),  # an untied head: 2 GiB at Qwen's widths, in f32
    ("0/count", (), P()),
])
def test_spec_for(path, shape, spec):
    assert parallel.spec_for(path, shape, MESH) == spec


def test_mesh_and_batch_errors():
    n = len(jax.devices())
    mesh = parallel.make_mesh(parallel.MeshConfig())
    assert dict(mesh.shape) == {"data": n, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="needs 3 devices"):
        parallel.make_mesh(parallel.MeshConfig(data=3, fsdp=1, tensor=1), devices=jax.devices()[:1])
    with pytest.raises(ValueError, match=r"^8 devices do not split into data\*tensor=3; "):  # it said fsdp*tensor
        parallel.make_mesh(parallel.MeshConfig(data=3, fsdp=-1), devices=jax.devices()[:1] * 8)
    for sizes in (dict(data=-1, fsdp=-1), dict(data=-1, fsdp=0), dict(data=-2, fsdp=-4)):
        with pytest.raises(ValueError, match=r"MeshConfig sizes \{.*\}: each must be >= 1, or -1 \(all remaining "
                                             r"devices\) for at most one axis"):
            parallel.MeshConfig(**sizes)
    with pytest.raises(ValueError, match="multiple of 8"):
        parallel.check_batch(12, MESH, "batch_size")


def test_a_batch_must_split_over_the_processes_too(monkeypatch):
    """A tensor axis across 2 hosts: 3 prompts divide over data*fsdp = 1, but not over the 2 processes that each
    load an equal share (each would load 1, training on 2)."""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    mesh = types.SimpleNamespace(shape={"data": 1, "fsdp": 1, "tensor": 4})
    with pytest.raises(ValueError, match=r"batch_size of 3 rows does not divide over the 2 processes, which each load "
                                         r"an equal share; pick a multiple of 2"):
        parallel.check_batch(3, mesh, "batch_size")
    parallel.check_batch(4, mesh, "batch_size")


TIMEOUTS = {"initialization_timeout": 300, "heartbeat_timeout_seconds": 100, "shutdown_timeout_seconds": 300}


def test_distributed_args_from_config_environment_or_cluster():
    one_process = parallel.MeshConfig()
    assert parallel.distributed_args(one_process, {}) is None
    # a process count or id without a coordinator: each host trained alone
    with pytest.raises(ValueError, match=r"^num_processes set without a coordinator: set MeshConfig."
                                         r"coordinator_address \(or RLVJAX_COORDINATOR\)"):
        parallel.distributed_args(one_process, {"RLVJAX_NUM_PROCESSES": "4"})
    with pytest.raises(ValueError, match=r"^num_processes and process_id set without a coordinator"):
        parallel.distributed_args(dataclasses.replace(one_process, num_processes=4, process_id=2), {})
    explicit = parallel.MeshConfig(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
                                   heartbeat_timeout_s=20)
    assert parallel.distributed_args(explicit, {"RLVJAX_PROCESS_ID": "0"}) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3,
        **TIMEOUTS, "heartbeat_timeout_seconds": 20}  # the config wins over the environment
    env = {"RLVJAX_COORDINATOR": "host:99", "JAX_COORDINATOR_ADDRESS": "other:1", "RLVJAX_NUM_PROCESSES": "2",
           "RLVJAX_PROCESS_ID": "1"}
    assert parallel.distributed_args(one_process, env) == {
        "coordinator_address": "host:99", "num_processes": 2, "process_id": 1, **TIMEOUTS}
    jax_env = {"JAX_COORDINATOR_ADDRESS": "other:1", "RLVJAX_NUM_PROCESSES": "2", "RLVJAX_PROCESS_ID": "0"}
    assert parallel.distributed_args(one_process, jax_env)["coordinator_address"] == "other:1"
    # "auto": jax.distributed finds the coordinator, process count and id itself (TPU pods, SLURM, ...)
    assert parallel.distributed_args(one_process, {"RLVJAX_COORDINATOR": "auto"}) == TIMEOUTS
    assert parallel.distributed_args(parallel.MeshConfig(coordinator_address="auto"), {}) == TIMEOUTS


def test_distributed_args_errors(monkeypatch):
    with pytest.raises(ValueError, match="needs num_processes and process_id too.*RLVJAX_NUM_PROCESSES"):
        parallel.distributed_args(parallel.MeshConfig(coordinator_address="h:1", num_processes=2), {})
    with pytest.raises(ValueError, match="process_id=2, num_processes=2; need 0 <= process_id < num_processes"):
        parallel.distributed_args(parallel.MeshConfig(), {"RLVJAX_COORDINATOR": "h:1", "RLVJAX_NUM_PROCESSES": "2",
                                                          "RLVJAX_PROCESS_ID": "2"})
    with pytest.raises(ValueError, match=r"MeshConfig.heartbeat_timeout_s=0 must be a whole number of seconds"):
        parallel.distributed_args(parallel.MeshConfig(coordinator_address="auto", heartbeat_timeout_s=0), {})
    with pytest.raises(ValueError, match="need integers"):
        parallel.distributed_args(parallel.MeshConfig(), {"RLVJAX_COORDINATOR": "h:1", "RLVJAX_NUM_PROCESSES": "two",
                                                          "RLVJAX_PROCESS_ID": "0"})
    # Addresses JAX crashed on: an IndexError traceback (no port), a segfault (a port that is not a number)
    for address in ("localhost", "localhost:abc", ":1234", "h:0", "h:70000"):
        with pytest.raises(ValueError, match=rf"^coordinator_address '{address}' must be host:port with a port in "
                                             r"1-65535, e.g. 10.0.0.1:1234 \(MeshConfig.coordinator_address or"):
            parallel.distributed_args(parallel.MeshConfig(coordinator_address=address, num_processes=2,
                                                          process_id=1), {})
    assert parallel.distributed_args(parallel.MeshConfig(coordinator_address="[::1]:1234", num_processes=2,
                                                         process_id=1), {})["coordinator_address"] == "[::1]:1234"
    # A host that does not resolve within the initialization timeout: JAX's client aborted the process (SIGABRT);
    # now one line. Until then it is tried again (a Kubernetes service's record can appear after its followers).
    with pytest.raises(ValueError, match=r"^coordinator_address 'nohost.invalid:1234': host nohost.invalid did not "
                                         r"resolve within 2 s \(.*\); set MeshConfig.coordinator_address / "):
        parallel.initialize_distributed(parallel.MeshConfig(coordinator_address="nohost.invalid:1234",
                                                            num_processes=2, process_id=1, initialization_timeout_s=2))
    assert not jax.distributed.is_initialized()
    tries = []

    def appears_later(host, port):
        tries.append(host)
        if len(tries) < 3:
            raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(parallel.socket, "getaddrinfo", appears_later)
    monkeypatch.setattr(parallel.time, "sleep", lambda s: None)
    parallel._resolve("svc.job:1234", 300)
    assert tries == ["svc.job"] * 3


def test_initialize_distributed_is_a_no_op_for_one_process(monkeypatch):
    for var in ("RLVJAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    parallel.initialize_distributed(parallel.MeshConfig())  # after the backend started: must not touch it
    assert not jax.distributed.is_initialized() and jax.process_count() == 1


def test_a_loaded_model_is_placed_by_the_partition_rules():
    """``load_hf`` puts every weight whole on device 0; a sharded evaluation kept that copy beside each device's
    share (a 1.5B f32 policy: ~5.75 GiB on device 0 the plan does not count). ``place_model`` lays it out by the
    rules: each device holds its share alone, with the same values."""
    import os
    import sys

    script = """
import jax
jax.config.update("jax_num_cpu_devices", 4)
import numpy as np
from flax import nnx
from rlvjax import memory, parallel
from rlvjax.model.transformer import ModelConfig, Transformer
model = Transformer(ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                                num_kv_heads=2), nnx.Rngs(0))
mesh = parallel.make_mesh(parallel.MeshConfig(data=1, fsdp=2, tensor=2))
placed = parallel.place_model(model, mesh)
params = nnx.to_pure_dict(nnx.split(placed)[1])
before = nnx.to_pure_dict(nnx.split(model)[1])
pairs = zip(jax.tree.leaves(params), jax.tree.leaves(before))
same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in pairs)
held = max(sum(s.data.nbytes for x in jax.tree.leaves(params) for s in x.addressable_shards if s.device == d)
           for d in jax.devices())
print(same, held, memory.sharded_bytes(params, mesh), sum(x.nbytes for x in jax.tree.leaves(before)))
"""
    out = forkserver.run([sys.executable, "-c", script], timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    same, held, planned, whole = out.stdout.split()
    assert same == "True" and int(held) == int(planned) < int(whole) // 2, out.stdout
