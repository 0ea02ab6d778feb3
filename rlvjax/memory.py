"""How much device memory a run needs, per device, worked out before anything is allocated or compiled.

``plan`` adds up what one device holds in each phase of a run:

- ``warm start`` (``sft.warm_start``, before the RL state exists): the policy, its own AdamW moments, and what its
  backward pass holds as the update's does (below), for ``WarmStartConfig.batch_size`` rows with every position's
  log-softmax supervised.
- in every training phase (``persistent``): the parameters, the AdamW state and (``beta > 0``) the frozen reference
  policy. Their shapes come from ``jax.eval_shape`` of the model and of ``init_state``, and each leaf's per-device
  size from the sharding ``parallel.shardings`` gives it on the mesh: exact, not estimated.
- ``rollout`` (``rollout_step``): the KV cache in the compute dtype and ``parallel.cache_spec``'s layout, the
  weights cast to the compute dtype in their sampling layout (``parallel.sampling_spec``), and the largest of the
  prefill, decode-step and verifier-score temporaries.
- ``update`` (``update_step``): two gradient trees (the micro-batch accumulator and one micro-batch's gradient), the
  weights FSDP gathers (one layer's at a time with remat, every layer's without; still split over ``tensor``;
  without remat also every layer's gradient unsplit over ``fsdp`` and its reduction, where they outweigh the
  activations the backward pass frees as it forms them), the training rows, what the backward pass keeps for one
  micro-batch (every layer's activations, or with ``RLConfig.remat`` each layer's input and one layer's
  activations, plus the layers' weights stacked for the scan), and the f32 logits of
  ``RLConfig.logprob_chunk_size`` completion positions, with the head's f32 gradient that the scan over those
  chunks holds gathered over ``fsdp``.
- ``value pass`` (VinePPO): the engine on ``vineppo.VALUE_CHUNK`` step prefixes x ``vineppo_samples``
  continuations, prefixes as wide as a prompt and a completion, no verifier score.
- ``optimizer``: the gradients, the updates and the new moments.
- ``eval`` / ``final eval``: the periodic eval and the end-of-run report sample batches of problems with
  ``steps.jit_rollout`` on the same mesh; the final report runs after the training state is gone.

The activation (``rlvjax.activations``) and temporary figures are estimates of what XLA keeps alive.
``python -m rlvjax.train ... --dry_run`` (``dry_run.py``) prints them beside XLA's compiled memory for the configured
mesh;
``tests/test_dry_run.py`` holds every hardware config within 10% at the real widths in f32 (the CPU backend
computes bf16 matmuls in f32, with copies an accelerator does not make, so only f32 compares on a CPU). At toy
widths (hidden 256, a few layers) the update and warm start compile up to 1.27x their plan: a few MiB a model that
size never lacks, from per-token terms the activation model leaves out (a 2026-12-07 review).
``rlvjax.budget`` holds a plan against what a device has.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AbstractMesh, Mesh, NamedSharding

from rlvjax import parallel, sampling, sft
from rlvjax.activations import activation_bytes_per_row, tensor_split
from rlvjax.data.encoding import encode_prompts
from rlvjax.model.transformer import ModelConfig, Transformer, kv_blocks
from rlvjax.pool import EVAL_PROMPTS
from rlvjax.rl import advantages, steps, vineppo
from rlvjax.rl.config import OptimConfig, RLConfig

GiB = 1024 ** 3
PHASES = ("warm start", "rollout", "value pass", "update", "optimizer", "eval", "particles", "final eval")
WITHOUT_TRAINING_STATE = ("warm start", "final eval")  # phases before and after the RL state exists


@dataclasses.dataclass(frozen=True)
class Item:
    name: str
    phase: str  # "persistent" or one of PHASES
    bytes_per_device: int
    note: str = ""


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    items: tuple[Item, ...]
    mesh_shape: tuple[tuple[str, int], ...]
    num_params: int
    knobs: dict  # the config values the refusal names, e.g. {"micro_batch_size": 4, "update_rows": 1}

    def phase_bytes(self, phase: str) -> int:
        """Peak bytes per device during ``phase``: its own buffers, plus the training state except in the warm start
        and the final eval (which run before and after training)."""
        own = sum(i.bytes_per_device for i in self.items if i.phase == phase)
        if phase in WITHOUT_TRAINING_STATE:
            return own
        return own + sum(i.bytes_per_device for i in self.items if i.phase == "persistent")

    @property
    def phases(self) -> dict[str, int]:
        """Peak bytes per device of each phase this run goes through."""
        present = {i.phase for i in self.items}
        return {p: self.phase_bytes(p) for p in PHASES if p in present}

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    @property
    def peak_bytes(self) -> int:
        return self.phases[self.peak_phase]

    def table(self, limit_bytes: int | None = None) -> str:
        mesh = " x ".join(f"{k}={v}" for k, v in self.mesh_shape)
        k = self.knobs
        rows = (f"{k['rollout_rows']} rollout rows and {k['update_rows']} update row(s) per micro-batch per device"
                if "update_rows" in k else f"{k['batch_size']} sampling rows")
        lines = [f"memory plan per device: mesh {mesh}, {self.num_params:,} params, {rows}",
                 f"  {'phase':<11}{'component':<30}{'size':>10}  note"]
        lines += [f"  {i.phase:<11}{i.name:<30}{size(i.bytes_per_device):>10}  {i.note}" for i in self.items]
        for phase, total in self.phases.items():
            mark = "  <- peak" if phase == self.peak_phase else ""
            lines.append(f"  {'total':<11}{phase:<30}{size(total):>10}{mark}")
        if limit_bytes is not None:
            verdict = "fits" if self.peak_bytes <= limit_bytes else "does NOT fit"
            lines.append(f"  device limit {size(limit_bytes)}: {verdict}")
        return "\n".join(lines)


def size(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def mesh_shape(cfg: parallel.MeshConfig, num_devices: int) -> dict[str, int]:
    """Axis sizes of ``cfg`` on ``num_devices`` devices (the -1 axis filled), without making a mesh."""
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh {dict(zip(parallel.AXES, sizes))} does not fit {num_devices} devices")
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(f"mesh {dict(zip(parallel.AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                         f"not {num_devices}")
    return dict(zip(parallel.AXES, sizes))


def _as_mesh(mesh) -> Mesh | AbstractMesh:
    if isinstance(mesh, (Mesh, AbstractMesh)):
        return mesh
    if isinstance(mesh, Mapping):
        return AbstractMesh(tuple(int(mesh.get(a, 1)) for a in parallel.AXES), parallel.AXES)
    raise TypeError(f"mesh must be a jax Mesh, an AbstractMesh or an {{axis: size}} dict, not {type(mesh).__name__}")


def abstract_params(cfg: ModelConfig):
    """The policy's parameters as ``ShapeDtypeStruct``s, in ``train.py``'s pure-dict layout; nothing allocated."""
    return jax.tree.map(lambda x: x, _abstract_params(cfg))  # a copy of the cached dicts: a caller may change one


@functools.lru_cache(maxsize=8)
def _abstract_params(cfg: ModelConfig):
    # One layer is traced and repeated (the layers are alike): tracing them all grew faster than their number (at
    # Qwen2.5-Math-1.5B's widths 28 layers 1.3-1.6 s, 96 layers 18 s; docs/benchmarks.md), and a plan is made anew
    # for each alternative a refusal advises.
    _, state = nnx.split(nnx.eval_shape(lambda: Transformer(dataclasses.replace(cfg, num_layers=1), nnx.Rngs(0))))
    params = nnx.to_pure_dict(state)
    params["layers"] = {i: params["layers"][0] for i in range(cfg.num_layers)}
    return params


def count_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape)) * jnp.dtype(dtype).itemsize


def sharded_bytes(tree, mesh, *, dtype=None, spec_of=lambda spec: spec) -> int:
    """Bytes one device holds of ``tree`` (arrays or ShapeDtypeStructs) laid out by the partition rules (mapped by
    ``spec_of``, e.g. ``parallel.sampling_spec``), each leaf in ``dtype`` (None: its own)."""
    mesh = _as_mesh(mesh)

    def one(path, x):
        spec = spec_of(parallel.spec_for(parallel.path_str(path), tuple(x.shape), mesh))
        return _nbytes(NamedSharding(mesh, spec).shard_shape(x.shape), dtype or x.dtype)

    return sum(jax.tree.leaves(jax.tree_util.tree_map_with_path(one, tree)))


def _regathered_bytes(params, mesh, cache: jax.sharding.PartitionSpec, dtype) -> int:
    """Per-device bytes, in their sampling layout, of the weights whose partition rule splits only a dimension after
    the first, over an axis the sampling layout drops (with ``tensor = 1``: the embedding, o and down projections):
    XLA copies them (transposed) around the all-gather that lays them out for sampling, one more copy of each.
    Weights split on their first dimension too are gathered without it (both measured with ``memory_analysis``:
    fsdp 4 x tensor 1 and fsdp 2 x tensor 2 at Qwen2.5-Math-1.5B's widths)."""
    mesh = _as_mesh(mesh)

    def one(path, x):
        spec = parallel.spec_for(parallel.path_str(path), tuple(x.shape), mesh)
        sampling = parallel.sampling_spec(spec, cache)
        split = lambda axes: {a for axis in axes for a in parallel.axis_names(axis) if mesh.shape[a] > 1}
        first, later = split(tuple(spec)[:1]), split(tuple(spec)[1:])
        if first or not later - split(tuple(sampling)):
            return 0
        return _nbytes(NamedSharding(mesh, sampling).shard_shape(x.shape), dtype)

    return sum(jax.tree.leaves(jax.tree_util.tree_map_with_path(one, params)))


def _gathered_bytes(params, mesh, *, every_layer: bool = False) -> int:
    """What sharding all-gathers at once in the forward pass: the (tied) embedding or head, and one decoder layer
    (``every_layer``: all of them, as a backward pass without remat keeps each layer's gathered weights). Gathered
    over ``fsdp`` only: a weight stays split over ``tensor``."""
    mesh = _as_mesh(mesh)
    gathered = lambda s: NamedSharding(mesh, parallel.sampling_spec(s.spec, jax.sharding.PartitionSpec()))
    extra = jax.tree.map(lambda x, s: _nbytes(gathered(s).shard_shape(x.shape), x.dtype)
                         - _nbytes(s.shard_shape(x.shape), x.dtype), params, parallel.shardings(params, mesh))
    total = sum(jax.tree.leaves({k: v for k, v in extra.items() if k in ("embed_tokens", "lm_head")}))
    per_layer = [sum(jax.tree.leaves(layer)) for layer in extra.get("layers", {}).values()]
    return total + (sum(per_layer) if every_layer else max(per_layer, default=0))


def _sampling_items(cfg: ModelConfig, params, mesh, phase: str, what: str, prompts: int, samples: int,
                    prompt_tokens: int, new_tokens: int, verify_tokens: int, rows: int | None = None) -> list[Item]:
    """What ``steps.rollout_step`` holds on one device for ``prompts`` prompts x ``samples``, ``rows`` of them
    decoding at once (None: all), beside the params.

    The weights cast to the compute dtype in their sampling layout (``parallel.sampling_spec``; no copy when
    neither dtype nor layout changes), the engine's KV cache in ``parallel.cache_spec``'s layout for the whole loop,
    the prompts' own cache (each prompt is prefilled once; its samples' rows copy it), and the largest of the
    temporaries: a prefill step (``steps.prefill_rows`` prompts' f32 scores and probabilities over one cache
    block, or their MLP intermediates: 0.42 GiB of eval uncounted at Qwen2.5-Math's widths on fsdp 4), a decode
    step (``[rows, V]`` f32 logits and their exponentials), a verifier score (the copied cache of the rows scored
    together and their scores) and one layer of the half-size batch the engine shrinks into.
    """
    mesh = _as_mesh(mesh)
    it = cfg.jnp_compute_dtype.itemsize
    ceil = lambda a, b: -(-a // b)
    requests = prompts * samples
    seq = sampling.cache_slots(prompt_tokens, new_tokens, verify_tokens)
    cache = parallel.cache_spec(mesh, requests, cfg.num_kv_heads)
    requests_local, kv_local = NamedSharding(mesh, cache).shard_shape((requests, cfg.num_kv_heads))
    row_shards, q_local = requests // requests_local, ceil(cfg.num_heads, cfg.num_kv_heads // kv_local)
    rows = min(rows or requests, requests)
    rows_local = max(sampling.MIN_BATCH, ceil(rows, row_shards))  # each device decodes its share (``generate``)
    per_slot = cfg.num_layers * 2 * kv_local * cfg.kv_dim * it
    prompts_local = sampling.prompt_window(requests_local, prompts, samples)  # a device's share may straddle two
    items = [Item(f"{what}KV cache", phase, per_slot * seq * rows_local,
                  f"{rows_local} rows x {seq} slots x {cfg.num_layers} layers, {cfg.jnp_compute_dtype.name}"),
             Item(f"{what}prompt KV cache", phase, per_slot * prompt_tokens * prompts_local,
                  f"{prompts_local} prompts x {prompt_tokens} slots, prefilled once for their {samples} samples")]
    weights = sharded_bytes(params, mesh, dtype=cfg.jnp_compute_dtype,
                            spec_of=lambda spec: parallel.sampling_spec(spec, cache))
    if cfg.jnp_compute_dtype != cfg.jnp_dtype or weights != sharded_bytes(params, mesh):
        items.append(Item(f"{what}sampling weights", phase, weights,
                          f"{cfg.jnp_compute_dtype.name}, without the fsdp split"))
    regathered = _regathered_bytes(params, mesh, cache, cfg.jnp_compute_dtype)
    if regathered:
        items.append(Item(f"{what}relayout temps", phase, regathered,
                          "weights split only on a later dimension (embedding, o/down projections at tensor 1) "
                          "are copied around their all-gather into the sampling layout"))
    step_prompts = steps.prefill_rows(prompts, prompt_tokens, mesh) or prompts
    prefill_tokens = ceil(step_prompts, row_shards) * prompt_tokens
    # the scores and probabilities of one cache block, or the MLP's gate, up, activation and product
    mlp_width = tensor_split(cfg.intermediate_size, 1 if "tensor" in parallel.axis_names(cache[0]) else
                             mesh.shape["tensor"])
    prefill = prefill_tokens * max(q_local * max(kv_blocks(prompt_tokens)) * 2 * 4, 4 * mlp_width * it)
    decode = rows_local * cfg.vocab_size * 2 * 4
    scored = max(1, rows_local // 8)
    score = scored * (seq * per_slot + q_local * (verify_tokens + 1) * max(kv_blocks(seq)) * 2 * 4)
    shrink = rows_local // 2 * seq * per_slot // cfg.num_layers  # gathered layer by layer
    items.append(Item(f"{what}sampling temps", phase, max(prefill, decode, score, shrink),
                      f"the largest of prefill ({step_prompts} prompts at a time), decode step, verifier score and "
                      "the shrunk batch"))
    items.append(Item(f"{what}sampled tokens", phase, 2 * requests_local * new_tokens * 4,
                      "token and log-prob buffers"))
    return items


def eval_prompts(mesh, eval_problems: int | None) -> int:
    """Prompts per batch of ``pool.sample_pool``: up to its batch size (fewer when the task has fewer, None: a
    full batch), padded to a multiple of the data axes."""
    mesh = _as_mesh(mesh)
    dp = int(mesh.shape["data"] * mesh.shape["fsdp"])
    return -(-min(EVAL_PROMPTS if eval_problems is None else eval_problems, EVAL_PROMPTS) // dp) * dp


def _backward_items(cfg: ModelConfig, params, mesh, phase: str, what: str, remat: str, *, gradients: int,
                    chunked: bool, activations: int, note: str, head_passes: int = 0) -> list[Item]:
    """What a backward pass over the whole model holds beside its activations: ``gradients`` gradient trees, the
    weights FSDP gathers, the embedding's extra gradient buffers, (``remat``) the layers stacked for the scan and
    (``chunked``: log-probs built a chunk of positions at a time) the head's gradient summed over the chunks.
    ``head_passes``: whole gradients of a tied embedding held beside the activations without remat on fsdp (the
    update's policy and verify logits: 2; the warm start's one loss: none measured).

    Weights narrower than the compute dtype (bf16 weights, f32 compute) are cast before they are gathered: the
    device's shards cast, the gathered weights, the tied embedding's gradient and a micro-batch's gradient are in
    the compute dtype (planned in the weights' dtype, the update on fsdp 4 was 1.26x its plan; the same run with f32
    weights compiled smaller)."""
    shape = {a: int(mesh.shape[a]) for a in parallel.AXES}
    compute = cfg.jnp_compute_dtype
    if compute.itemsize <= cfg.jnp_dtype.itemsize:
        wide, cast = params, []
    else:
        wide = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, compute), params)
        cast = [Item(f"{what}weights cast", phase, sharded_bytes(wide, mesh),
                     f"the device's shards in {compute.name}, the compute dtype")]
    items = [Item(f"{what}gradients", phase,
                  (gradients - 1) * sharded_bytes(params, mesh) + sharded_bytes(wide, mesh), note), *cast,
             Item(f"{what}gathered weights", phase, _gathered_bytes(wide, mesh, every_layer=remat == "none"),
                  f"embedding + {'every layer' if remat == 'none' else 'one layer'}, gathered over fsdp")]
    embedding = {"embed_tokens": params["embed_tokens"]}
    whole = sum(_nbytes(x.shape, x.dtype) for x in jax.tree.leaves(embedding))
    if cfg.tie_word_embeddings:  # the head's and the lookup's gradients are summed into the embedding's
        items.append(Item(f"{what}tied embedding gradient", phase, sharded_bytes({"embed_tokens": wide[
            "embed_tokens"]}, mesh), "the head's part, held while the lookup's is scattered"))
    if remat == "none" and shape["fsdp"] > 1:
        # Measured (hidden 512, 2-4 layers, fsdp 2-8 with data and tensor): without remat each layer's gradient is
        # formed unsplit over fsdp and reduced whole (XLA's CPU backend reduces them all in one tuple, the tied
        # embedding's two parts apart), which the backward pass holds once it has freed the activations. A tied
        # embedding's two whole parts are held beside the activations too (2026-12-07, Qwen2.5-Math's widths: one
        # embedding fewer was 1.07-1.28x short with 2-16 layers; this is 0.91-1.02x of XLA's figure there with
        # tensor <= 2, 0.89-1.07x at the real 28 layers, and over-counts tensor 4 at shallow depths, 0.67x at 2
        # layers: docs/benchmarks.md).
        gathered = lambda tree: sharded_bytes(
            tree, mesh, spec_of=lambda spec: parallel.sampling_spec(spec, jax.sharding.PartitionSpec()))
        # whole over tensor too (split, fsdp 2 x tensor 2 was 1.28x), in the compute dtype where it is wider
        held = head_passes * cfg.tie_word_embeddings * sum(_nbytes(x.shape, x.dtype) for x in jax.tree.leaves(
            wide["embed_tokens"]))
        unsplit = 2 * gathered(params) + max(held, cfg.tie_word_embeddings * gathered(embedding))
        items.append(Item(f"{what}unsplit gradients", phase, max(held, unsplit - activations),
                          "fsdp without remat: every layer's gradient before its reduction, beyond the activations "
                          "the backward pass has freed by then" + (" (at least the tied embedding's whole parts)"
                                                                   if held else "")))
    if shape["data"] > 1 and shape["fsdp"] > 1:  # measured: XLA's partitioner replicates the lookup's cotangent
        items.append(Item(f"{what}embedding gradient, whole", phase,  # and reduces the gradient before splitting it
                          whole - sharded_bytes(embedding, mesh),
                          "data x fsdp: the lookup's gradient is summed unsplit, then split over fsdp"))
    if remat != "none":  # the layers' weights stacked in the compute dtype for the scan, and their gradient
        layers = sharded_bytes(params["layers"], mesh, dtype=cfg.jnp_compute_dtype)
        items.append(Item(f"{what}stacked layer weights", phase, 2 * layers,
                          f"{cfg.jnp_compute_dtype.name}, + gradient"))
    if chunked:  # measured (Qwen2.5-Math's widths, 4 fake devices): the scan's carry holds it gathered over fsdp
        name = "embed_tokens" if cfg.tie_word_embeddings else "lm_head"
        head = sharded_bytes({name: params[name]}, mesh, dtype=jnp.float32,
                             spec_of=lambda spec: parallel.sampling_spec(spec, jax.sharding.PartitionSpec()))
        items.append(Item(f"{what}chunked head gradient", phase, head,
                          "f32, summed over the logit chunks, not split over fsdp"))
    return items


def warm_start_items(cfg: ModelConfig, params, mesh, *, rows: int, width: int, remat: str,
                     logprob_chunk: int) -> list[Item]:
    """What ``sft.warm_start``'s step holds on one device: the policy and its AdamW moments (donated into the
    step), one gradient, the weights FSDP gathers, the ``rows`` (split over the data axes) of ``width`` tokens and
    their activations, with every position's ``[V]`` log-softmax supervised (``logprob_chunk`` at a time). It runs
    before the RL state exists."""
    ceil = lambda a, b: -(-a // b)
    shape = {a: int(mesh.shape[a]) for a in parallel.AXES}
    rows_local = ceil(rows, shape["data"] * shape["fsdp"])
    moments = jax.eval_shape(sft.optimizer(sft.WarmStartConfig()).init, params)
    items = [Item("warm params", "warm start", sharded_bytes(params, mesh), "the policy being warm-started"),
             Item("warm optimizer state", "warm start", sharded_bytes(moments, mesh), "its own AdamW moments")]
    activations = rows_local * activation_bytes_per_row(cfg, width, width - 1, shape["tensor"], remat=remat,
                                                        logprob_chunk=logprob_chunk)
    items += _backward_items(cfg, params, mesh, "warm start", "warm ", remat, gradients=1,
                             chunked=0 < logprob_chunk < width - 1, activations=activations, note="one gradient")
    items += [Item("warm rows", "warm start", rows_local * width * 9, f"{rows_local} rows x {width} tokens"),
              Item("warm activations", "warm start", activations,
                   f"remat {remat}, f32 logits of {min(logprob_chunk or width - 1, width - 1)} positions at a time")]
    return items


def plan(model_config: ModelConfig, rl_config: RLConfig, run_config, mesh, *, prompt_tokens: int,
         verify_tokens: int = 32, optim: OptimConfig | None = None, eval_problems: int | None = None,
         warm_start_rows: int = 0, warm_start_width: int = 0) -> MemoryPlan:
    """The per-device memory of this run on ``mesh`` (a Mesh, an AbstractMesh or an ``{axis: size}`` dict).

    ``prompt_tokens``: the widest left-padded prompt batch (``bucket_width`` of the train and eval prompts' longest);
    ``verify_tokens``: the verify prompt's length (``len(verifier.VerifierTokens.suffix)``); ``eval_problems``: how many
    eval records the task has (0: no eval phases; None: at least one full eval batch); ``warm_start_rows``: the warm
    start's batch (``WarmStartConfig.batch_size``; 0: none) of ``warm_start_width`` tokens (``sft.row_width``).
    ``knobs["replan"](**rl_changes)`` / ``knobs["replan_mesh"](**axes)`` plan the same run with other ``RLConfig``
    values / on another mesh: a refusal's advice weighs remat, chunking and meshes by what they save (planned then).
    """
    cfg, rl, run = model_config, rl_config, run_config
    mesh = _as_mesh(mesh)
    shape = {a: int(mesh.shape[a]) for a in parallel.AXES}
    dp, tensor = shape["data"] * shape["fsdp"], shape["tensor"]
    ceil = lambda a, b: -(-a // b)
    tx = (optim or OptimConfig()).make(max(run.num_steps, 1) * rl.updates_per_step)
    params = abstract_params(cfg)
    state = jax.eval_shape(lambda p: steps.init_state(p, tx, seed=0, keep_reference=rl.beta > 0), params)
    param_bytes, opt_bytes = sharded_bytes(state.params, mesh), sharded_bytes(state.opt_state, mesh)
    n, seq = rl.max_new_tokens, prompt_tokens + rl.max_new_tokens + verify_tokens
    rollout = run.batch_size * rl.group_size  # rows, split as the engine's KV cache splits them
    rollout_rows = NamedSharding(mesh, parallel.cache_spec(mesh, rollout, cfg.num_kv_heads)).shard_shape(
        (rollout, cfg.num_kv_heads))[0]
    update_rows = run.batch_size * rl.group_size * rl.update_rows_per_rollout
    minibatch_rows = ceil(update_rows // rl.num_minibatches, dp)
    micro = rl.micro_batch_size or update_rows // rl.num_minibatches
    micro_rows = ceil(micro, dp)

    items = warm_start_items(cfg, params, mesh, rows=warm_start_rows, width=warm_start_width, remat=rl.remat,
                             logprob_chunk=rl.logprob_chunk_size) if warm_start_rows else []
    items += [Item("params", "persistent", param_bytes, f"{cfg.dtype}, sharded by the partition rules"),
              Item("optimizer state", "persistent", opt_bytes, "AdamW moments (params' dtype) + counters")]
    if state.ref_params is not None:
        items.append(Item("reference params", "persistent", param_bytes, f"beta={rl.beta} > 0: a frozen copy"))
    items += _sampling_items(cfg, params, mesh, "rollout", "", run.batch_size, rl.group_size, prompt_tokens, n,
                             verify_tokens)
    if advantages.uses_step_values(rl.algorithm):  # VinePPO's value pass: K continuations of a chunk of prefixes
        items += _sampling_items(cfg, params, mesh, "value pass", "value ", vineppo.chunk_rows(dp), rl.vineppo_samples,
                                 sampling.bucket_width(prompt_tokens + n), n, 0)
    activations = micro_rows * activation_bytes_per_row(cfg, seq, n, tensor, remat=rl.remat,
                                                        logprob_chunk=rl.logprob_chunk_size)
    items += _backward_items(cfg, params, mesh, "update", "", rl.remat, gradients=2,
                             chunked=0 < rl.logprob_chunk_size < n, activations=activations,
                             note="micro-batch accumulator + one micro-batch's gradient", head_passes=2)
    if rl.beta > 0:  # the reference policy's log-softmax inside the loss, f32, for the KL term
        positions = min(rl.logprob_chunk_size or n, n)
        items.append(Item("reference logits", "update", micro_rows * positions * tensor_split(cfg.vocab_size, tensor)
                          * 4, f"beta={rl.beta} > 0: the reference policy's f32 log-probs, {positions} positions"))
    items += [
        Item("training rows", "update", 2 * minibatch_rows * (seq * 5 + n * 13 + 8),
             f"{minibatch_rows} rows x {seq} tokens, and their micro-batch split"),
        Item("activations", "update", activations,
             f"{micro_rows} row(s) x {seq} tokens, remat {rl.remat}, f32 logits of "
             f"{rl.logprob_chunk_size or n} positions at a time"),
        Item("grads + updates + moments", "optimizer", 2 * param_bytes + opt_bytes, "the optax step"),
    ]
    num_eval_prompts = eval_prompts(mesh, eval_problems)
    if run.eval_samples and num_eval_prompts:
        items += _sampling_items(cfg, params, mesh, "eval", "eval ", num_eval_prompts, run.eval_samples,
                                 prompt_tokens, n, verify_tokens)
    if run.final_eval_samples and run.export_final and num_eval_prompts:
        items.append(Item("policy", "final eval", param_bytes, "each policy in turn, sharded by the partition rules"))
        items += _sampling_items(cfg, params, mesh, "final eval", "final ", num_eval_prompts,
                                 run.final_eval_samples, prompt_tokens, n, verify_tokens)
    knobs = {"micro_batch_size": rl.micro_batch_size, "micro_rows": micro, "update_rows": micro_rows,
             "rollout_rows": rollout_rows,
             "fsdp": shape["fsdp"], "tensor": tensor, "batch_size": run.batch_size, "group_size": rl.group_size,
             "max_new_tokens": n, "eval_samples": run.eval_samples, "final_eval_samples": run.final_eval_samples,
             "vineppo_samples": rl.vineppo_samples, "remat": rl.remat, "logprob_chunk_size": rl.logprob_chunk_size,
             "warm_start_rows": warm_start_rows, "warm_start_width": warm_start_width}
    again = functools.partial(plan, cfg, run_config=run, prompt_tokens=prompt_tokens, verify_tokens=verify_tokens,
                              optim=optim, eval_problems=eval_problems, warm_start_rows=warm_start_rows,
                              warm_start_width=warm_start_width)
    knobs["replan"] = lambda **change: again(rl_config=dataclasses.replace(rl, **change), mesh=mesh)
    knobs["replan_mesh"] = lambda **axes: again(rl_config=rl, mesh=axes)
    return MemoryPlan(tuple(items), tuple(shape.items()), count_params(params), knobs)


def eval_plan(cfg: ModelConfig, mesh, *, prompts: int, samples: int, rows: int, prompt_tokens: int,
              new_tokens: int, verify_tokens: int, particle_rows: int = 0, particles: int = 0,
              params=None, dtype_flag: bool = True) -> MemoryPlan:
    """The per-device memory of ``python -m rlvjax.evaluate``: the policy, and ``prompts`` prompts x ``samples``
    sampled ``rows`` at a time; with ``particle_rows`` (problems x ``particles``), the particle strategy's search
    after that pool (``particle_items``). ``knobs["replan"](samples=, rows=, new_tokens=, dtype=)`` plans the same
    evaluation with other values (a refusal's advice finds the largest that fits); ``params``: ``cfg``'s
    ``abstract_params``, when known; ``dtype_flag``: whether ``--dtype`` applies (not to a ``--checkpoint``)."""
    mesh = _as_mesh(mesh)
    params = abstract_params(cfg) if params is None else params
    items = [Item("policy", "persistent", sharded_bytes(params, mesh), f"{cfg.dtype}, sharded by the partition rules")]
    items += _sampling_items(cfg, params, mesh, "eval", "", prompts, samples, prompt_tokens, new_tokens,
                             verify_tokens, rows)
    if particle_rows:
        items += particle_items(cfg, rows=particle_rows, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                                verify_tokens=verify_tokens)
    args = dict(prompts=prompts, samples=samples, rows=rows, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                verify_tokens=verify_tokens, particle_rows=particle_rows, particles=particles, dtype_flag=dtype_flag)

    def replan(dtype=None, **change):
        other = cfg if dtype is None else dataclasses.replace(cfg, dtype=dtype, compute_dtype=None)
        return eval_plan(other, mesh, **{**args, **change}, params=params if dtype is None else None)

    knobs = {"batch_size": rows, "num_samples": samples, "max_new_tokens": new_tokens, "particle_rows": particle_rows,
             "particles": particles, "dtype": cfg.dtype, "dtype_flag": dtype_flag, "replan": replan}
    return MemoryPlan(tuple(items), tuple((a, int(mesh.shape[a])) for a in parallel.AXES), count_params(params),
                      knobs)


def particle_items(cfg: ModelConfig, *, rows: int, prompt_tokens: int, new_tokens: int,
                   verify_tokens: int) -> list[Item]:
    """What the particle strategy's step-wise decoder (``sampling.stepwise``) holds: all its ``rows`` on one
    device, each a whole cache row with its token and log-prob buffers, twice (a call, advance, score or take,
    keeps the rows it was given beside the ones it returns), and a score's temporaries: ``[rows, V]`` f32 logits
    and their exponentials, and one layer's f32 attention scores and probabilities over the verify prompt."""
    seq = sampling.cache_slots(prompt_tokens, new_tokens, verify_tokens)
    row = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.kv_dim * cfg.jnp_compute_dtype.itemsize * seq + 2 * new_tokens * 4
    temps = cfg.vocab_size * 2 * 4 + cfg.num_heads * (verify_tokens + 1) * seq * 2 * 4
    return [Item("particle rows", "particles", 2 * rows * row,
                 f"{rows} rows x {seq} slots, twice: a step's input and output"),
            Item("particle temps", "particles", rows * temps, "a score's logits and attention")]


def longest_prompt(tokenizer, prompts) -> int:
    """The longest encoded prompt, in tokens: the positions a prompt takes. The widest batch the sampler sees, what
    the plan holds slots for, is ``sampling.bucket_width`` of it (``left_pad``); padding takes no positions."""
    return max(len(ids) for ids in encode_prompts(tokenizer, list(prompts)))
