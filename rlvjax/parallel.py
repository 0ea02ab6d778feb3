"""Device mesh from config, partition rules as data, and multi-host initialisation.

Sharding is a table of ``(param-path regex, PartitionSpec)``: the first rule whose regex is found in a leaf's path
wins. Optimizer-state leaves carry their parameter's path inside theirs (``0/mu/layers/3/mlp/up_proj/kernel``), so
the same table shards them too. A dimension that the mesh axis does not divide is replicated instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import socket
import threading
import time
import zlib
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from rlvjax import job_stop
from rlvjax.fieldtypes import check_field_types

AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")  # the batch dimension is split over both data-parallel axes

# Megatron-style tensor parallelism (column-parallel in, row-parallel out) with FSDP over the other dimension.
PARTITION_RULES: tuple[tuple[str, P], ...] = (
    (r"embed_tokens/embedding$", P("tensor", "fsdp")),
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel$", P("fsdp", "tensor")),
    (r"(q_proj|k_proj|v_proj)/bias$", P("tensor")),
    (r"(o_proj|down_proj)/kernel$", P("tensor", "fsdp")),
    (r"lm_head/kernel$", P("fsdp", "tensor")),
    (r".*", P()),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes (one of them may be -1: all remaining devices) and how to join a multi-host job.

    Multi-host: run the same program on every host with ``coordinator_address`` ("host:port" of process 0, plus
    ``num_processes`` and ``process_id``), or ``"auto"`` to let ``jax.distributed`` detect the cluster (TPU pods,
    SLURM, Open MPI, Kubernetes). A field left None is read from the environment (``ENV``); nothing set anywhere
    means one process. The mesh then spans every process's devices.
    """

    data: int = -1  # data-parallel axis size (-1: all remaining devices)
    fsdp: int = 1  # fully sharded data-parallel axis size (weights and optimizer state sharded)
    tensor: int = 1  # tensor-parallel axis size
    coordinator_address: str | None = None  # multi-host: "host:port" of process 0, or "auto" (None: RLVJAX_COORDINATOR)
    num_processes: int | None = None  # multi-host: processes in the job (None: RLVJAX_NUM_PROCESSES)
    process_id: int | None = None  # multi-host: this process's index (None: RLVJAX_PROCESS_ID)
    initialization_timeout_s: int = 300  # how long to wait for every process to connect
    # A process silent this long is declared dead and every other process exits with an error naming it, instead
    # of waiting at its next collective forever. Heartbeats come from a background thread (a long compile does
    # not delay them), so only a host's network or scheduler hiccups need headroom.
    heartbeat_timeout_s: int = 100
    shutdown_timeout_s: int = 300  # how long a finished process waits at exit for the others to finish too

    def __post_init__(self):
        check_field_types(self)
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        bad = {name: size for name, size in sizes.items() if size < 1 and size != -1}
        if bad or list(sizes.values()).count(-1) > 1:
            raise ValueError(f"MeshConfig sizes {sizes}: each must be >= 1, or -1 (all remaining devices) for at "
                             "most one axis")


# Environment fallbacks for fields left None, first set wins (JAX_COORDINATOR_ADDRESS is jax.distributed's own).
ENV = {"coordinator_address": ("RLVJAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS"),
       "num_processes": ("RLVJAX_NUM_PROCESSES",), "process_id": ("RLVJAX_PROCESS_ID",)}
AUTO = "auto"


def distributed_args(cfg: MeshConfig, environ=os.environ) -> dict | None:
    """The keyword arguments of ``jax.distributed.initialize`` for ``cfg`` and ``environ``; None: one process."""
    def setting(name):
        value = getattr(cfg, name)
        if value is None:
            value = next((environ[var] for var in ENV[name] if environ.get(var)), None)
        return value

    address = setting("coordinator_address")
    if address is None:
        given = [n for n in ("num_processes", "process_id") if setting(n) is not None]
        if given:  # each host would train alone, a run of its own
            raise ValueError(f"{' and '.join(given)} set without a coordinator: set MeshConfig.coordinator_address "
                             f"(or RLVJAX_COORDINATOR) to host:port, or '{AUTO}' on a cluster that provides it")
        return None
    for name in ("initialization_timeout_s", "heartbeat_timeout_s", "shutdown_timeout_s"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"MeshConfig.{name}={value!r} must be a whole number of seconds >= 1")
    timeouts = dict(initialization_timeout=cfg.initialization_timeout_s,
                    heartbeat_timeout_seconds=cfg.heartbeat_timeout_s,
                    shutdown_timeout_seconds=cfg.shutdown_timeout_s)
    if address == AUTO:  # the cluster environment knows the coordinator, the process count and this process's id
        return timeouts
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:  # JAX crashed on these (IndexError, SIGSEGV)
        raise ValueError(f"coordinator_address {address!r} must be host:port with a port in 1-65535, e.g. "
                         "10.0.0.1:1234 (MeshConfig.coordinator_address or RLVJAX_COORDINATOR)")
    num_processes, process_id = setting("num_processes"), setting("process_id")
    if num_processes is None or process_id is None:
        raise ValueError(f"coordinator {address} needs num_processes and process_id too: set MeshConfig."
                         "num_processes / process_id or RLVJAX_NUM_PROCESSES / RLVJAX_PROCESS_ID, or use "
                         f"coordinator_address='{AUTO}' where the cluster provides them")
    try:
        num_processes, process_id = int(num_processes), int(process_id)
    except ValueError:
        raise ValueError(f"num_processes={num_processes!r}, process_id={process_id!r}: need integers") from None
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id}, num_processes={num_processes}; need 0 <= process_id < "
                         "num_processes")
    return dict(coordinator_address=address, num_processes=num_processes, process_id=process_id, **timeouts)


def initialize_distributed(cfg: MeshConfig) -> None:
    """Join the multi-host job when configured (gin or environment); a single process needs nothing.

    Must run before anything touches a device (JAX raises otherwise). A second call (e.g. the baseline run after
    the main one in the same process) joins nothing more. A script that joined the job itself
    (``jax.distributed.initialize``) gets the job's stop on any host's error (``job_stop.watch``) from here too.
    """
    global _join_tried
    args = distributed_args(cfg)
    if jax.distributed.is_initialized():
        job_stop.watch()
        return
    if args is None:
        return
    _join_tried = True
    if "coordinator_address" in args:
        _resolve(args["coordinator_address"], args["initialization_timeout"])
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        jax.distributed.initialize(**args)
    except ValueError as e:
        if "coordinator_address" in args:
            raise
        raise ValueError(f"coordinator_address='{AUTO}' found no cluster to join ({e}); JAX detects TPU pods, SLURM, "
                         "Open MPI and Kubernetes jobs. Elsewhere set RLVJAX_COORDINATOR=host:port, "
                         "RLVJAX_NUM_PROCESSES and RLVJAX_PROCESS_ID on every process") from None
    if callable(sigterm):  # the join installs JAX's preemption notifier in C over the Python handler in place
        signal.signal(signal.SIGTERM, sigterm)  # (rlvjax's start-up stop, an evaluation's): a SIGTERM was dropped
    job_stop.watch()


_join_tried = False  # initialize_distributed tried to join a job (and may have failed to)


def join_to_stop() -> bool:
    """Whether this process is in a multi-host job now: a process stopping on an error before it tried to join (its
    flags or gin files did not parse) joins the job its environment names (``RLVJAX_COORDINATOR``, ...), so that the
    others, waiting for it at the join, stop with its line (they waited until the join's timeout, 300 s, and aborted).
    """
    if not (_join_tried or jax.distributed.is_initialized()):
        with contextlib.suppress(Exception):  # a job it cannot join: it stops alone, as before
            initialize_distributed(MeshConfig())
    return jax.distributed.is_initialized()


def _resolve(address: str, timeout_s: float) -> None:
    """Waits (with backoff, up to ``timeout_s``, as JAX waits for its coordinator) until the coordinator's host
    resolves, e.g. a Kubernetes service whose record appears after its followers start; then one line. JAX's client
    aborted the process with a C++ stack trace instead."""
    host, _, port = address.rpartition(":")
    deadline, wait = time.monotonic() + timeout_s, 0.5
    while True:
        try:
            socket.getaddrinfo(host.strip("[]"), int(port))
            return
        except OSError as e:
            if time.monotonic() + wait > deadline:
                raise ValueError(f"coordinator_address {address!r}: host {host} did not resolve within "
                                 f"{timeout_s:g} s ({e.strerror}); set MeshConfig.coordinator_address / "
                                 "RLVJAX_COORDINATOR to the coordinator's (process 0's) reachable host:port") from None
        time.sleep(wait)
        wait = min(2 * wait, 10.0)


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]  # MeshConfig holds sizes >= 1 and at most one -1
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            given = "*".join(a for a, s in zip(AXES, sizes) if s != -1)
            raise ValueError(f"{len(devices)} devices do not split into {given}={known}; change the mesh sizes")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(AXES, sizes))} needs {int(np.prod(sizes))} devices but {len(devices)} are present; "
            "set MeshConfig sizes whose product is the device count"
        )
    return Mesh(np.asarray(devices).reshape(sizes), AXES, axis_types=(AxisType.Auto,) * len(AXES))


def path_str(path) -> str:
    """``/``-joined keys of a pytree path (dict keys, sequence indices, attribute names)."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh, rules=PARTITION_RULES) -> P:
    for pattern, spec in rules:
        if re.search(pattern, path):
            break
    else:
        raise ValueError(f"no partition rule matches {path!r}; end the rules with ('.*', P())")
    if len(spec) > len(shape):
        return P()  # e.g. an optimizer scalar that happens to share a path suffix
    fitted = []
    for dim, axis in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = axis if isinstance(axis, tuple) else (axis,) if axis else ()
        size = int(np.prod([mesh.shape[n] for n in names])) if names else 1
        fitted.append(axis if size > 1 and dim % size == 0 else None)
    while fitted and fitted[-1] is None:  # canonical form: P() for replicated, no trailing Nones
        fitted.pop()
    return P(*fitted)


def shardings(tree, mesh: Mesh, rules=PARTITION_RULES):
    """A ``NamedSharding`` per leaf of ``tree`` (arrays or ShapeDtypeStructs), from the rules table."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, spec_for(path_str(path), tuple(x.shape), mesh, rules)), tree)


def place_model(model, mesh: Mesh):
    """``model`` with its weights laid out on ``mesh`` by the partition rules, as the samplers take them: a loaded
    model's weights sit whole on one device (``load_hf``), which a sharded evaluation kept beside its share (the
    policy's whole size on device 0, which the memory plan does not count) until the caller drops the old model."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    pure = nnx.to_pure_dict(state)
    nnx.replace_by_pure_dict(state, jax.device_put(pure, shardings(pure, mesh)))
    return nnx.merge(graphdef, state)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Rows split over the data-parallel axes, everything else replicated."""
    return NamedSharding(mesh, P(BATCH, *([None] * (ndim - 1))))


def cache_spec(mesh, rows: int, num_kv_heads: int) -> P:
    """Layout of the sampler's ``[rows, kv_heads, slots, head_dim]`` KV cache arrays on ``mesh`` (a Mesh or an
    AbstractMesh).

    Heads split over ``tensor`` when each device keeps at least two, rows over the data axes. Otherwise
    (Qwen2.5-Math-1.5B has 2 kv heads: tensor = 2 leaves one per device, and XLA then copied every layer's cache in
    each decode step, 224 cache-sized copies a token) rows are split over every axis and each device keeps whole
    heads, so the cache is never resharded inside the loop.
    """
    tensor = mesh.shape["tensor"]
    if tensor == 1:
        return P(BATCH)
    if num_kv_heads % tensor == 0 and num_kv_heads // tensor > 1:
        return P(BATCH, "tensor")
    if rows % (mesh.shape["data"] * mesh.shape["fsdp"] * tensor) == 0:
        return P(AXES)
    return P(BATCH)


def cache_sharding(mesh: Mesh, rows: int, num_kv_heads: int) -> NamedSharding:
    return NamedSharding(mesh, cache_spec(mesh, rows, num_kv_heads))


def sampling_spec(spec: P, cache: P) -> P:
    """A weight's layout while sampling: its partition rule without ``fsdp`` (decoding would gather every weight
    again each step), and without ``tensor`` too where the cache splits rows over it (each device then decodes
    whole rows with every head), as Tunix and verl sample from a separately laid-out copy of the weights."""
    drop = {"data", "fsdp"} | ({"tensor"} if "tensor" in axis_names(cache[0] if len(cache) else None) else set())
    axes = [tuple(a for a in axis_names(axis) if a not in drop) for axis in spec]
    return P(*[a[0] if len(a) == 1 else (a or None) for a in axes])


def sampling_shardings(tree, mesh: Mesh, cache: NamedSharding):
    return jax.tree.map(lambda s: NamedSharding(mesh, sampling_spec(s.spec, cache.spec)), shardings(tree, mesh))


def axis_names(axis) -> tuple[str, ...]:
    return axis if isinstance(axis, tuple) else (axis,) if axis else ()


@dataclasses.dataclass(frozen=True)
class RowsConstraint:
    """``x -> x`` laid out with rows over the data axes (a hashable callable, so jitted steps can close over it).

    FSDP shards each weight over ``fsdp``; without this XLA may all-gather the activations of every row instead of
    the (smaller) weights of one layer, keeping twice the activations alive in the update."""

    mesh: Mesh

    def __call__(self, x):
        return jax.lax.with_sharding_constraint(x, batch_sharding(self.mesh, x.ndim))


def rows_constraint(mesh: Mesh) -> RowsConstraint | None:
    return RowsConstraint(mesh) if mesh.shape["fsdp"] > 1 or mesh.shape["data"] > 1 else None


def to_global(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array that every process holds whole -> one global array laid out by ``sharding``."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(x) -> np.ndarray:
    """On every process's host: a global array whole, or a host array (each process's own, alike in shape)
    concatenated over the processes in process order.

    Returns once every local device holds its copy. ``multihost_utils.process_allgather`` returns once the first
    one does, and a process that then exits leaves its peers waiting in the unfinished gather (gloo, 2 processes x
    2 CPU devices, a gather then exit: 1 run in 45 hung ~150 s in its teardown, and failed CI).
    """
    if jax.process_count() == 1:
        return np.asarray(x)
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        mesh = Mesh(np.asarray(jax.devices()).reshape(jax.process_count(), -1), ("processes", "local"))
        x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("processes")), np.atleast_1d(x))
    devices = np.asarray(sorted(x.sharding.device_set, key=lambda d: d.id))
    whole = jax.jit(_same, out_shardings=NamedSharding(Mesh(devices, ("all",)), P()))(x)
    return np.asarray(whole.block_until_ready().addressable_data(0))


def _same(x):  # one function, so that the gather of a shape compiles once
    return x


def primary_says(flag: bool) -> bool:
    """Process 0's ``flag`` on every process: a decision from files that only process 0 writes (the exports, the
    report), which the others may not see, taken alike everywhere (else some would wait at a collective)."""
    return bool(to_host(np.asarray([flag]))[0])


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any."""
    return bool(to_host(np.asarray([flag])).any())


def barrier(name: str) -> None:
    """No process goes on before every process has reached the ``barrier`` of this name."""
    tag = zlib.crc32(name.encode())
    tags = to_host(np.asarray([tag], np.uint32))
    if (tags != tag).any():
        raise RuntimeError(f"processes out of step: at barrier {name!r}, not all processes are at the same barrier")


LAUNCH_FIELDS = ("coordinator_address", "num_processes", "process_id")  # MeshConfig's, one host's own


def check_same_settings(settings: dict) -> None:
    """One line on every process when a setting differs between processes (``settings``: name -> JSON-able value).

    Each host is launched on its own, with its own flags and files: a typo in one host's ``num_steps`` trained
    until a collective's sizes disagreed (a gloo crash after 3 steps), another data file trained each host's share
    of different problems, silently.
    """
    if not jax.distributed.is_initialized() or jax.process_count() == 1:  # (one process: no backend started yet)
        return
    local = [sum(d.process_index == i for d in jax.devices()) for i in range(jax.process_count())]  # known everywhere
    if len(set(local)) > 1:  # every gather below assumes it: "cannot reshape array of size 5 into shape (2,newaxis)"
        raise ValueError("the processes have different numbers of devices (" + ", ".join(
            f"process {i}: {n}" for i, n in enumerate(local)) + "); give every host the same number (check "
                         "CUDA_VISIBLE_DEVICES or the platform's device flags on each)")
    names = sorted(settings)
    counts = to_host(np.asarray([len(names)]))
    if (counts != counts[0]).any():
        raise ValueError(f"the processes run different versions of rlvjax ({counts.tolist()} settings); install the "
                         "same version on every host")
    digests = [zlib.crc32(json.dumps(settings[n], sort_keys=True, default=str).encode()) for n in names]
    everywhere = to_host(np.asarray(digests, np.uint32)).reshape(jax.process_count(), -1)
    differ = [names[i] for i in np.flatnonzero((everywhere != everywhere[0]).any(axis=0))]
    if differ:
        hosts = [int(i) for i in np.flatnonzero((everywhere != everywhere[0]).any(axis=1))]
        raise ValueError(f"processes {hosts} were started with other settings than process 0 ("
                         f"{', '.join(differ[:6])}{', …' if len(differ) > 6 else ''}); launch every process with the "
                         "same gin files, --gin_param and flags, and the same data files")


def check_batch(rows: int, mesh: Mesh, what: str = "batch", *, per_process: bool = True) -> None:
    """One line when ``rows`` do not split evenly over the data axes, or (``per_process``: each process loads its
    share) over the processes; a tensor axis across hosts makes those differ."""
    parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    if rows % parallel:
        raise ValueError(
            f"{what} of {rows} rows does not divide over data*fsdp={parallel} devices; "
            f"pick a size that is a multiple of {parallel}"
        )
    if per_process and rows % jax.process_count():
        raise ValueError(f"{what} of {rows} rows does not divide over the {jax.process_count()} processes, which "
                         f"each load an equal share; pick a multiple of {math.lcm(parallel, jax.process_count())}")
