"""``python -m rlvjax.train ... --dry_run``: the run's steps compiled for its mesh, without weights or data, and
XLA's per-device memory printed beside the plan (``memory.plan``); exits non-zero when either exceeds the budget.

Works on any machine: the architecture comes from ``ModelSpec.config_json`` when the weights are elsewhere, the
prompt width from ``TaskSpec.max_prompt_tokens`` when the data is, and on a CPU host the mesh's devices are faked
(``jax_num_cpu_devices``), so a 4-GPU or TPU-slice config can be checked from a laptop. Each phase's compiled
figure is what one device holds while it runs: XLA's arguments, outputs and temporaries (less what donation
aliases), plus the training state that stays resident without being an argument (the AdamW moments while
sampling). The decode loop is also searched for cache-sized copies (``hlo.loop_copies``), which would mean XLA
moves the whole KV cache every token.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvjax import budget, experiment, hlo, memory, parallel, sampling, sft
from rlvjax.data import tasks
from rlvjax.model.transformer import ModelConfig, Transformer
from rlvjax.rewards.registry import Rewards
from rlvjax.rl import advantages, steps, verifier, vineppo
from rlvjax.rl.config import OptimConfig, RLConfig

DEFAULT_VERIFY_TOKENS = 32  # an upper bound on the verify prompt's length where no tokenizer is at hand
# The compiled steps never run, so their machine code is built without optimisation: a third less compile time
# (105 -> 72 s for Qwen2.5-Math's 2-layer cpu.gin check), and the same memory (buffers are assigned before codegen).
_NEVER_RUN = {"xla_backend_optimization_level": 0}


@dataclasses.dataclass(frozen=True)
class CompiledPhase:
    name: str
    bytes_per_device: int  # peak while the phase runs: XLA's own buffers + resident state
    temp_bytes: int
    loop_copies: tuple[str, ...]  # cache-sized copies per decode step (sampling phases)


def _abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _measure(name, compiled, resident: int, min_copy_elements: int | None) -> CompiledPhase:
    m = compiled.memory_analysis()
    own = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    copies = () if min_copy_elements is None else tuple(hlo.loop_copies(compiled.as_text(), min_copy_elements))
    return CompiledPhase(name, own + resident, m.temp_size_in_bytes, copies)


def compile_warm_start(cfg: ModelConfig, rl: RLConfig, warm: sft.WarmStartConfig, mesh, *, width: int
                       ) -> CompiledPhase:
    """The warm start's step (``sft.jit_step``, as ``train`` runs it: its params and AdamW moments donated) compiled
    for ``WarmStartConfig.batch_size`` rows of ``width`` tokens on ``mesh``, from shapes only."""
    graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))[0]
    params, tx = memory.abstract_params(cfg), sft.optimizer(warm)
    step, (param_shardings, opt_shardings) = sft.jit_step(graphdef, tx, mesh, params, remat=rl.remat,
                                                          chunk_size=rl.logprob_chunk_size, donate=True)
    batch = [jax.ShapeDtypeStruct((warm.batch_size, width), dtype, sharding=parallel.batch_sharding(mesh, 2))
             for dtype in (jnp.int32, bool, jnp.float32)]
    moments = jax.eval_shape(tx.init, params)
    lowered = step.lower(_abstract(params, param_shardings), _abstract(moments, opt_shardings), *batch)
    return _measure("warm start", lowered.compile(_NEVER_RUN), 0, None)


def compile_update(cfg: ModelConfig, rl: RLConfig, run: experiment.RunConfig, optim: OptimConfig, mesh, *,
                   prompt_tokens: int, verify_tokens: int) -> CompiledPhase:
    """The update step (with its optimizer step) alone, compiled as ``compile_phases`` compiles it."""
    state, step_setup = _abstract_run(cfg, rl, run, optim, mesh, verify_tokens)
    return _compile_update(step_setup, mesh, state, run.batch_size * rl.group_size * rl.update_rows_per_rollout,
                           prompt_tokens + rl.max_new_tokens + verify_tokens)


def _abstract_run(cfg: ModelConfig, rl: RLConfig, run: experiment.RunConfig, optim: OptimConfig, mesh,
                  verify_tokens: int):
    """``(abstract TrainState laid out on mesh, StepSetup)`` of a run, from shapes only."""
    tx = optim.make(max(run.num_steps, 1) * rl.updates_per_step)
    graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))[0]
    state = jax.eval_shape(lambda p: steps.init_state(p, tx, seed=0, keep_reference=rl.beta > 0),
                           memory.abstract_params(cfg))
    return (_abstract(state, parallel.shardings(state, mesh)),
            steps.StepSetup(graphdef, tx, rl, tuple(range(3, 3 + verify_tokens)), 1, 2, (0,), 0))


def _compile_update(step_setup: steps.StepSetup, mesh, state, rows: int, width: int) -> CompiledPhase:
    s, n = jax.ShapeDtypeStruct, step_setup.rl.max_new_tokens
    batch = steps.UpdateBatch(s((rows, width), jnp.int32), s((rows, width), bool), s((rows, n), jnp.int32),
                              s((rows, n), bool), s((rows, n), jnp.float32), s((rows, n), jnp.float32),
                              s((rows,), jnp.int32), s((rows,), jnp.float32))
    jitted = steps.jit_steps(step_setup, mesh, state)
    return _measure("update", jitted.update.lower(state, batch).compile(_NEVER_RUN), 0, None)


def compile_phases(cfg: ModelConfig, rl: RLConfig, run: experiment.RunConfig, optim: OptimConfig, mesh,
                   *, prompt_tokens: int, verify_tokens: int, eval_problems: int | None = None,
                   warm_start: sft.WarmStartConfig | None = None, warm_start_width: int = 0) -> list[CompiledPhase]:
    """Compile the warm start's step (``warm_start``: its config when the run has one), the rollout, VinePPO's value
    pass, the update (with its optimizer step) and the sampling of the periodic and final evals for ``mesh``, from
    shapes only; their per-device memory as XLA assigns it."""
    state, step_setup = _abstract_run(cfg, rl, run, optim, mesh, verify_tokens)
    suffix = step_setup.verify_suffix
    resident = memory.sharded_bytes(state.opt_state, mesh) + (
        memory.sharded_bytes(state.ref_params, mesh) if state.ref_params is not None else 0)
    s = jax.ShapeDtypeStruct
    by_rows = parallel.batch_sharding(mesh, 2)

    def sampling_phase(name, group, prompts, extra, width=prompt_tokens, suffix=suffix, limits=False):
        group_setup = dataclasses.replace(step_setup, num_samples=group, verify_suffix=suffix)
        jitted = steps.jit_rollout(group_setup, mesh, parallel.shardings(state.params, mesh))
        ids = s((prompts, width), jnp.int32, sharding=by_rows)
        caps = s((prompts * group,), jnp.int32, sharding=parallel.batch_sharding(mesh, 1)) if limits else None
        lowered = jitted.lower(state.params, ids, s(ids.shape, bool, sharding=by_rows), jax.random.key(0), caps)
        compiled = lowered.compile(_NEVER_RUN)
        # the fewest rows a device's cache can hold: its share of the top level, or the smallest level the batch
        # shrinks to (a copy there is as much a per-step copy of the cache)
        rows = min(prompts * group // int(np.prod(list(mesh.shape.values()))), sampling.engine.MIN_ROWS)
        return _measure(name, compiled, extra, max(1, rows) * (width + rl.max_new_tokens + len(suffix)) * cfg.kv_dim)

    phases = [compile_warm_start(cfg, rl, warm_start, mesh, width=warm_start_width)] if warm_start else []
    phases.append(sampling_phase("rollout", rl.group_size, run.batch_size, resident))
    if advantages.uses_step_values(rl.algorithm):  # VinePPO: K unscored continuations of a chunk of step prefixes
        rows = vineppo.chunk_rows(mesh.shape["data"] * mesh.shape["fsdp"])
        phases.append(sampling_phase("value pass", rl.vineppo_samples, rows, resident,
                                     width=sampling.bucket_width(prompt_tokens + rl.max_new_tokens), suffix=(),
                                     limits=True))
    phases.append(_compile_update(step_setup, mesh, state, run.batch_size * rl.group_size * rl.update_rows_per_rollout,
                                  prompt_tokens + rl.max_new_tokens + verify_tokens))
    eval_prompts = memory.eval_prompts(mesh, eval_problems)
    if run.eval_samples and eval_prompts:
        phases.append(sampling_phase("eval", run.eval_samples, eval_prompts, resident))
    if run.final_eval_samples and run.export_final and eval_prompts:
        phases.append(sampling_phase("final eval", run.final_eval_samples, eval_prompts, 0))  # after training
    return phases


def table(plan: memory.MemoryPlan, compiled: list[CompiledPhase], limit: int | None) -> str:
    lines = [f"compiled per device (XLA memory_analysis) beside the plan{'' if limit is None else f'; budget {memory.size(limit)}'}:",
             f"  {'phase':<12}{'plan':>13}{'compiled':>13}{'ratio':>7}  cache copies per decode step"]
    for c in compiled:
        planned = _planned(plan, c.name)
        copies = "" if c.name in ("update", "warm start") else str(len(c.loop_copies))
        lines.append(f"  {c.name:<12}{memory.size(planned):>13}{memory.size(c.bytes_per_device):>13}"
                     f"{c.bytes_per_device / planned:>7.2f}  {copies}")
    return "\n".join(lines)


def _planned(plan: memory.MemoryPlan, name: str) -> int:
    """The plan's figure for a compiled phase (the update step compiles the optimizer's update with it)."""
    return plan.phase_bytes(name) if name != "update" else max(plan.phase_bytes("update"),
                                                                 plan.phase_bytes("optimizer"))


def run(config, *, echo: bool = True) -> tuple[memory.MemoryPlan, list[CompiledPhase]]:
    """``config``'s (an :class:`rlvjax.config.Config`) plan and compiled phases, printed; raises a one-line
    ``ValueError`` when either exceeds the per-device budget (``MemoryConfig.device_memory_gib``, else the device's
    own limit)."""
    config.check_precision()
    config.check_consistent()
    mesh_cfg, spec, task = config.mesh, config.model, config.task
    sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    if -1 not in sizes:  # a CPU host fakes the mesh's devices (must precede the first use of a device)
        jax.config.update("jax_num_cpu_devices", int(np.prod(sizes)))
    run_cfg, rl, optim = config.run, config.rl, config.optim
    experiment.use_compilation_cache(run_cfg.compilation_cache_dir)  # a rerun recompiles only what it changed
    cfg, tokenizer = experiment.abstract_policy(spec, config.verifier.question, dry_run=True)
    devices = jax.devices()
    if -1 not in sizes and len(devices) < np.prod(sizes):
        raise ValueError(f"the mesh needs {int(np.prod(sizes))} devices, this host has {len(devices)} "
                         f"{devices[0].platform} devices; run the dry run on a CPU host (it fakes the devices) or "
                         "on the target machine")
    if -1 in sizes and len(devices) % (given := -int(np.prod(sizes))):
        axis = parallel.AXES[sizes.index(-1)]
        raise ValueError(f"{len(devices)} {devices[0].platform} device(s) do not split into the mesh's other axes "
                         f"({given}); the dry run fakes the devices only when every axis is given: set "
                         f"MeshConfig.{axis} (now -1, the devices left over) to the target's, e.g. --gin_param "
                         f"'MeshConfig.{axis} = 1'")
    mesh = parallel.make_mesh(mesh_cfg, devices[: int(np.prod(sizes))] if -1 not in sizes else devices)
    # the real run's checks of the config (``train.train``), so that a dry run passes only what a run accepts
    parallel.check_batch(run_cfg.batch_size, mesh, "batch_size (prompts per step)")
    if config.warm_start.num_steps:
        parallel.check_batch(config.warm_start.batch_size, mesh, "WarmStartConfig.batch_size", per_process=False)
    if rl.micro_batch_size:
        parallel.check_batch(rl.micro_batch_size, mesh, "RLConfig.micro_batch_size", per_process=False)
    Rewards.of(config)  # rewards that resolve, one weight each, the label reward one of them
    longest, eval_problems = _longest_prompt(task, tokenizer)
    prompt_tokens = sampling.bucket_width(longest)  # the widest batch: what the plan holds slots for
    experiment.check_report(run_cfg, 1 if eval_problems is None else eval_problems)  # None: not known without data
    verify_tokens = (DEFAULT_VERIFY_TOKENS if tokenizer is None
                     else len(verifier.tokens(tokenizer, config.verifier.question, chat=config.verifier.chat).suffix))
    experiment.check_positions(cfg, longest, rl.max_new_tokens, verify_tokens, knob="RLConfig.max_new_tokens",
                               fix="lower RLConfig.max_new_tokens or TaskSpec.max_prompt_tokens")
    warm = config.warm_start if config.warm_start.num_steps else None
    warm_width = _warm_start_width(config, tokenizer, prompt_tokens, verify_tokens) if warm else 0
    plan = memory.plan(cfg, rl, run_cfg, mesh, prompt_tokens=prompt_tokens, verify_tokens=verify_tokens,
                       optim=optim, eval_problems=eval_problems, warm_start_rows=warm.batch_size if warm else 0,
                       warm_start_width=warm_width)
    # This host's own devices (a -1 axis: nothing faked) have this host's budget; faked ones the config's alone.
    limit = budget.device_limit(config.memory, host=-1 in sizes)
    if echo:
        print(f"dry run: {cfg.architecture} {cfg.num_layers} layers, weights {cfg.dtype}, compute "
              f"{cfg.jnp_compute_dtype.name}; prompts padded to {prompt_tokens} tokens, verify prompt "
              f"{verify_tokens}{'' if tokenizer is not None else ' (an upper bound: no tokenizer here)'}"
              + (f"; warm-start rows of {warm_width} tokens" + ("" if tokenizer is not None else
                                                                 " (unknown without a tokenizer: the update's width)")
                 if warm else ""), flush=True)
        print(plan.table(limit), flush=True)
    if config.memory.refuse:
        budget.check(plan, limit)  # before minutes of compiling
    elif limit is not None and plan.peak_bytes > limit and echo:  # as the run goes on: compile, and compare
        print(f"warning: the plan needs {memory.size(plan.peak_bytes)} per device, more than {memory.size(limit)} "
              "(MemoryConfig.refuse = False: compiling anyway)", flush=True)
    compiled = compile_phases(cfg, rl, run_cfg, optim, mesh, prompt_tokens=prompt_tokens,
                              verify_tokens=verify_tokens, eval_problems=eval_problems, warm_start=warm,
                              warm_start_width=warm_width)
    upper_bounds = devices[0].platform == "cpu" and cfg.jnp_compute_dtype != jnp.float32
    if echo:
        print(table(plan, compiled, limit), flush=True)
        if upper_bounds:
            print("note: the CPU backend runs bfloat16 matmuls in float32 and keeps float32 copies of their "
                  "operands (weights, KV cache); an accelerator compiles the same program without them, so the "
                  "compiled figures here are upper bounds: the plan is the budget check", flush=True)
        if limit is None:
            print("note: no per-device budget was checked (faked devices have none): set "
                  "MemoryConfig.device_memory_gib to the target device's memory", flush=True)
    check_compiled(plan, compiled, limit, refuse=config.memory.refuse and not upper_bounds, echo=echo)
    return plan, compiled


def _longest_prompt(task, tokenizer) -> tuple[int, int | None]:
    """(longest prompt in tokens, eval problems): from ``TaskSpec.max_prompt_tokens`` when set, else from the
    data."""
    if task.max_prompt_tokens is not None:
        evals = task.num_eval if task.name != "file" or task.eval_file else 0
        return task.max_prompt_tokens, evals
    if tokenizer is None:
        raise ValueError("no tokenizer for this architecture on this machine to measure the prompts: set "
                         "TaskSpec.max_prompt_tokens (the longest prompt a run accepts)")
    train_records, eval_records = experiment.build_records(task, tokenizer)
    prompts = [r["prompt"] for r in train_records + eval_records]
    return memory.longest_prompt(tokenizer, prompts), len(eval_records)


def _warm_start_width(config, tokenizer, prompt_tokens: int, verify_tokens: int) -> int:
    """The warm start's row width (``sft.row_width``) from the examples its task generates (a task that generates
    none is refused, as by the run); with no tokenizer on this machine, the update's row width stands in (the dry
    run's first line says so)."""
    warm = config.warm_start
    pairs = tasks.warm_start_pairs(config.task, warm.num_examples if tokenizer else 0, warm.mistake_rate, warm.seed)
    if tokenizer is None:
        return prompt_tokens + config.rl.max_new_tokens + verify_tokens + 1
    return sft.row_width(sft.tokenize(tokenizer, pairs), verify_tokens)


def check_compiled(plan: memory.MemoryPlan, compiled: list[CompiledPhase], limit: int | None, *,
                   refuse: bool = True, echo: bool = True) -> None:
    """One line naming the largest compiled phase over ``limit``, with what to change: raised, or (not ``refuse``:
    ``MemoryConfig.refuse = False``, or compiled figures that are upper bounds) printed as a warning."""
    over = [c for c in compiled if limit is not None and c.bytes_per_device > limit]
    if not over:
        return
    worst = max(over, key=lambda c: c.bytes_per_device)
    line = (f"the compiled {worst.name} step needs {memory.size(worst.bytes_per_device)} per device, has "
            f"{memory.size(limit)} (the plan said {memory.size(_planned(plan, worst.name))})")
    if refuse:
        raise ValueError(f"{line}; {budget.advice(plan, worst.name)}")
    if echo:
        print(f"warning: {line}", flush=True)
