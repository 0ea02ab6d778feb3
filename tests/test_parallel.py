"""Partition rules as data: which spec each parameter path gets, and the mesh/batch errors."""

import types

import jax
import pytest
from jax.sharding import PartitionSpec as P

from rlvjax import parallel

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
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        parallel.make_mesh(parallel.MeshConfig(data=-1, fsdp=-1))
    with pytest.raises(ValueError, match="multiple of 8"):
        parallel.check_batch(12, MESH, "batch_size")
