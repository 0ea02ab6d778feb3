"""What a device has for a run, and the refusal of a plan (``rlvjax.memory.plan``) that exceeds it.

``check`` turns a plan into a one-line ``ValueError`` before anything is compiled, naming what to change
(``advice``); ``enforce`` prints the plan's table and checks it against the device's ``bytes_limit`` or
``MemoryConfig.device_memory_gib``.
"""

from __future__ import annotations

import dataclasses
import os

import jax

from rlvjax.fieldtypes import check_field_types
from rlvjax.activations import keeps_activations
from rlvjax.memory import GiB, MemoryPlan, size


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """``device_memory_gib``: the per-device budget; None reads the device's ``bytes_limit``, or on CPU (which
    reports none) the host's memory shared by its local devices. ``refuse = False`` prints a warning instead of
    raising, for when the estimate is known to be pessimistic (e.g. an XLA flag that changes what it keeps
    alive)."""

    # per-device budget; None: the device's own limit (CPU: host memory; a dry run on faked devices: none)
    device_memory_gib: float | None = None
    refuse: bool = True  # False: warn instead of refusing a run whose plan exceeds the budget

    def __post_init__(self):
        check_field_types(self)
        if self.device_memory_gib is not None and not self.device_memory_gib > 0:
            raise ValueError(f"MemoryConfig.device_memory_gib={self.device_memory_gib} must be > 0 (or None: the "
                             "device's own limit)")


def host_memory_bytes() -> int:
    """This machine's physical memory: the budget of a CPU device, which reports none."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def advice(p: MemoryPlan, phase: str | None = None, limit_bytes: int | None = None) -> str:
    """What to change for ``phase`` (default: the plan's peak), biggest lever first, naming each knob and its
    value; for an evaluate plan with ``limit_bytes``, the largest value of each that fits (``_eval_fits``)."""
    k, own = p.knobs, {i.name: i.bytes_per_device for i in p.items}
    if "num_samples" in k and (phase or p.peak_phase) == "particles":
        return (f"lower --particles (the largest now {k['particles']}: {k['particle_rows']} rows at once) or "
                f"--max_new_tokens (now {k['max_new_tokens']})")
    if "num_samples" in k:  # an evaluate plan
        fixes = [] if limit_bytes is None else _eval_fits(p, limit_bytes)
        if fixes:
            return " / ".join(fixes)
        alone = "no one setting fits alone: " if limit_bytes is not None else ""
        return alone + " / ".join(text for _, text in sorted([
            (own["KV cache"], f"reduce --batch_size (now {k['batch_size']}) or --max_new_tokens (now "
                              f"{k['max_new_tokens']})"),
            (own["sampled tokens"], f"reduce --num_samples (now {k['num_samples']}) or --max_new_tokens"),
            (own["policy"], "load it with --dtype bfloat16 (every device holds the whole policy)"
             if k.get("dtype") == "float32" and k["dtype_flag"] else
             "use a device with more memory (each holds the whole policy)")],
            key=lambda o: -o[0]))
    micro = f"now {k['micro_batch_size']}" if k["micro_batch_size"] else f"now 0: minibatches of {k['micro_rows']}"

    def switch(change, text, asked, replan=k["replan"]):  # offered where the plan with it is smaller in the phase,
        if asked != (phase or p.peak_phase):  # its peak no higher, weighed by what it saves in the phase (every phase's
            return []  # options are built; the asked one's read)
        other = replan(**change)
        saved = p.phases[asked] - other.phases.get(asked, p.phases[asked])
        return [(saved, text)] if saved > 0 and other.peak_bytes <= p.peak_bytes else []

    def splits(mesh):  # the batches the run splits over the data axes (train's check_batch)
        rows = mesh["data"] * mesh["fsdp"]
        return all(n % rows == 0 for n in (k["batch_size"], k["micro_batch_size"], k["warm_start_rows"]) if n)

    def more_fsdp(asked):  # a factor of 2 moved to fsdp from data or tensor (the same devices), or twice the devices
        shape, found = dict(p.mesh_shape), []
        for source in ("data", "tensor"):
            mesh = {**shape, source: shape[source] // 2, "fsdp": shape["fsdp"] * 2}
            if shape[source] % 2 == 0 and splits(mesh):
                text = (f"set MeshConfig.fsdp = {mesh['fsdp']} and {source} = {mesh[source]} (now {shape['fsdp']} "
                        f"and {shape[source]}: the same devices)")
                found += switch(mesh, text, asked, k["replan_mesh"])
        if splits(mesh := {**shape, "fsdp": shape["fsdp"] * 2}):
            found += switch(mesh, f"use twice the devices, with MeshConfig.fsdp = {mesh['fsdp']}", asked,
                            k["replan_mesh"])
        return found

    def remat_option(asked):
        return switch({"remat": "full"}, f"set RLConfig.remat = 'full' (now {k['remat']!r})", asked) \
            if keeps_activations(k["remat"]) else []

    def chunk_option(asked):  # fewer positions than a chunk, or a small vocabulary: it saves nothing
        return switch({"logprob_chunk_size": 128}, "set RLConfig.logprob_chunk_size = 128 (now 0)", asked) \
            if not k["logprob_chunk_size"] else []

    options = {
        "warm start": [(own.get("warm activations", 0),
                        f"reduce WarmStartConfig.batch_size (now {k['warm_start_rows']})")] + more_fsdp("warm start")
                      + remat_option("warm start") + chunk_option("warm start"),
        "rollout": [(own["KV cache"], f"reduce RunConfig.batch_size (now {k['batch_size']}) or RLConfig.group_size "
                                      f"(now {k['group_size']})")] + more_fsdp("rollout"),
        "update": [(own["activations"], f"reduce RLConfig.micro_batch_size ({micro}, {k['update_rows']} row(s) "
                                        "per device)") if k["update_rows"] > 1 else
                   (own["activations"], f"shorten RLConfig.max_new_tokens (now {k['max_new_tokens']}) or the "
                                        f"prompts, or add tensor parallelism (MeshConfig.tensor, now {k['tensor']})")]
                  + more_fsdp("update") + remat_option("update") + chunk_option("update"),
        "value pass": [(own.get("value KV cache", 0), f"reduce RLConfig.vineppo_samples (now {k['vineppo_samples']}) "
                                                      f"or RLConfig.max_new_tokens (now {k['max_new_tokens']})")]
                      + more_fsdp("value pass"),
        "optimizer": more_fsdp("optimizer"),
        "eval": [(own.get("eval KV cache", 0), f"reduce RunConfig.eval_samples (now {k['eval_samples']})")]
                + more_fsdp("eval"),
        "final eval": [(own.get("final KV cache", 0), f"reduce RunConfig.final_eval_samples (now "
                                                      f"{k['final_eval_samples']})")] + more_fsdp("final eval"),
    }[phase or p.peak_phase]
    return " / ".join(text for _, text in sorted(options, key=lambda o: -o[0]))


def _eval_fits(p: MemoryPlan, limit_bytes: int) -> list[str]:
    """Each evaluate setting that makes every phase fit ``limit_bytes`` on its own (a particle search's too, which
    the peak phase alone missed), at its largest value that does (the plan replanned: ``memory.eval_plan``'s
    ``replan``): naming a lever by its share of the plan offered ones that could not help (half precision saving
    KiB of a plan of token buffers). ``--dtype`` only where it applies (not to a ``--checkpoint``)."""
    k = p.knobs

    def fits(**change) -> bool:
        return k["replan"](**change).peak_bytes <= limit_bytes

    def largest(name: str, values) -> int | None:  # values ascending; fitting is monotone in each
        if not values or not fits(**{name: values[0]}):
            return None
        lo, hi = 0, len(values) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(**{name: values[mid]}) else (lo, mid - 1)
        return values[lo]

    found = []
    samples = largest("samples", [2 ** e for e in range(1, k["num_samples"].bit_length() - 1)])
    if samples:
        found.append(f"lower --num_samples to {samples} (now {k['num_samples']})")
    rows = largest("rows", range(1, k["batch_size"]))
    if rows:
        found.append(f"lower --batch_size to {rows} (now {k['batch_size']} rows decode at once)")
    tokens = largest("new_tokens", range(1, k["max_new_tokens"]))
    if tokens:
        found.append(f"lower --max_new_tokens to {tokens} (now {k['max_new_tokens']})")
    if k["dtype"] == "float32" and k["dtype_flag"] and fits(dtype="bfloat16"):
        found.append("load it with --dtype bfloat16")
    return found


def check(p: MemoryPlan, limit_bytes: int | None) -> None:
    """Raise a one-line ``ValueError`` when the plan's peak exceeds ``limit_bytes`` (None: nothing to check)."""
    if limit_bytes is None or p.peak_bytes <= limit_bytes:
        return
    raise ValueError(f"needs {size(p.peak_bytes)} per device ({p.peak_phase} phase), has {size(limit_bytes)}: "
                     f"{advice(p, limit_bytes=limit_bytes)}")


def device_limit(cfg: MemoryConfig | None = None, *, host: bool = True) -> int | None:
    """The per-device budget: ``MemoryConfig.device_memory_gib``, capped by the device's ``bytes_limit`` where it
    reports one (what JAX may allocate: ``XLA_PYTHON_CLIENT_MEM_FRACTION`` of it), else that limit, else (``host``,
    CPU devices, which report none) this machine's memory shared by its local devices, else None. A dry run,
    planning for other hardware on fake CPU devices, passes ``host=False``."""
    cfg = cfg or MemoryConfig()
    limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    if cfg.device_memory_gib is not None:
        budget = int(cfg.device_memory_gib * GiB)
        return budget if limit is None else min(budget, limit)
    if limit is None and host and jax.default_backend() == "cpu":
        return host_memory_bytes() // jax.local_device_count()
    return limit


def enforce(p: MemoryPlan, cfg: MemoryConfig | None = None, *, echo: bool = True) -> None:
    """Print the plan (``echo``) and refuse a run that cannot fit, before anything is compiled."""
    cfg = cfg or MemoryConfig()
    limit = device_limit(cfg)
    if echo:
        print(p.table(limit), flush=True)
    if cfg.refuse:
        check(p, limit)
    elif limit is not None and p.peak_bytes > limit and echo:
        print(f"warning: the plan needs {size(p.peak_bytes)} per device, more than {size(limit)} "
              "(MemoryConfig.refuse = False: going on)", flush=True)
