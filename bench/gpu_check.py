"""One-command GPU check of Scale I and II: the paper's per-device shapes with the real Qwen2.5-Math-1.5B architecture
(random weights), f32 weights with bf16 compute, on one accelerator. Prints:

- rollout: decode ms per step at 128 rows x 2,068 cache slots (512 rollouts over 4 devices) and its fraction of the
  HBM roofline (bf16 weights + each row's filled KV slots read once a step);
- ragged rollout: the same 128 rows stopping after lognormal lengths (median 300, max 1,024), decode tokens/s and the
  fraction of the roofline of a paged engine (bf16 weights + the live rows' filled slots once a step; goal >= 50%);
- update: MFU of one micro-batch step (8 rows x 2,068 tokens, remat, 128-position log-prob chunks) in bf16 and f32;
- the sampler-vs-trainer log-prob gap under bf16 (and bf16 trainer vs f32 trainer) on the rollout's tokens;
- the memory plan (``rlvjax.memory.plan``) beside XLA's compiled memory and the device's measured peak, for the
  rollout (with the AdamW moments that stay resident while it samples, as the dry run counts them) and the update.
  The device's peak is the process's high-water mark: the rollout's reading is its own (it runs first), each
  update's also covers what ran before it.

    python bench/gpu_check.py                   # the paper's shapes, ~6-8 minutes on an H200 (compiles included);
                                                # H100 and H200 peaks are known, other devices need --hbm_tb_s etc.
    python bench/gpu_check.py --smoke           # tiny shapes: checks the script itself on a CPU in ~1 minute

Needs on the device machine the four packages `import rlvjax` uses that the H200 image lacks (it has jax, flax,
optax, chex, orbax, transformers, absl, etils, cloudpickle, protobuf and psutil), carried as wheels. Here, in the
repo's root: `echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all:
--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl gin-config==0.5.0 grain==0.2.18
array-record==0.8.6 portpicker==1.6.0`; there (carry `.whl`): `python3 -m pip install -q --no-index --no-deps
--no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
python3 bench/gpu_check.py` (the device tool's README). Each line shows the seconds since start;
$OUT/gpu_check.json (when OUT is set) is rewritten after each section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# JAX preallocates 75% of the GPU; the f32 update at these shapes needs more of an H100's 80 GB than that leaves
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import common  # noqa: E402  (bench/: the ragged lengths)
from rlvjax import experiment, memory, parallel
from rlvjax.model.hf_config import config_from_hf
from rlvjax.model.transformer import Transformer
from rlvjax.rl import steps
from rlvjax.rl.config import OptimConfig, RLConfig

REPO = Path(__file__).resolve().parents[1]
GiB = 2 ** 30


def model_flops(cfg, rows: int, seq: int, scored: int) -> float:
    """Training FLOPs (3 x forward; remat's recomputation not counted, as MFU is defined)."""
    d, hd = cfg.hidden_size, cfg.kv_dim
    params = cfg.num_layers * (2 * d * cfg.num_heads * hd + 2 * d * cfg.num_kv_heads * hd + 3 * d * cfg.intermediate_size)
    forward = rows * seq * (2 * params + cfg.num_layers * 4 * seq * cfg.num_heads * hd) + rows * scored * 2 * d * cfg.vocab_size
    return 3.0 * forward


# Per device kind (substring of jax's device_kind, most specific first): HBM TB/s, dense bf16 and TF32 TFLOP/s.
PEAKS = (("H100 PCIe", (2.0, 756.0, 378.0)), ("H100", (3.35, 989.0, 494.0)), ("H200", (4.8, 989.0, 494.0)))


def peaks_of(kind: str) -> tuple[float, float, float] | None:
    return next((p for name, p in PEAKS if name in kind), None)


def timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile + warm
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn())
    return (time.perf_counter() - start) / repeats


def peak_bytes() -> int | None:
    return (jax.local_devices()[0].memory_stats() or {}).get("peak_bytes_in_use")


def compiled_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


START = time.perf_counter()


def report(out: dict, line: str) -> None:
    """Print a section's line with the seconds since start, and rewrite $OUT/gpu_check.json (when OUT is set) so a
    run cut short by the device's time limit keeps every finished section."""
    print(f"[{time.perf_counter() - START:5.0f} s] {line}", flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(out, indent=2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, to check the script on a CPU")
    ap.add_argument("--hbm_tb_s", type=float, help="HBM bandwidth (default: the device's, H100 3.35, H200 4.8)")
    ap.add_argument("--bf16_tflops", type=float, help="dense bf16 peak (default: the device's, H100/H200 989)")
    ap.add_argument("--f32_tflops", type=float, help="f32 matmul peak at JAX's default precision (default: the "
                    "device's TF32 peak, H100/H200 494)")
    args = ap.parse_args()
    kind = jax.devices()[0].device_kind
    known = peaks_of(kind) or ((0.1, 1.0, 1.0) if args.smoke else None)  # a CPU smoke run: fractions meaningless
    if known is None and None in (args.hbm_tb_s, args.bf16_tflops, args.f32_tflops):
        sys.exit(f"gpu_check: no peaks known for {kind!r}; pass --hbm_tb_s, --bf16_tflops and --f32_tflops")
    given = (args.hbm_tb_s, args.bf16_tflops, args.f32_tflops)
    args.hbm_tb_s, args.bf16_tflops, args.f32_tflops = (g or k for g, k in zip(given, known or (0,) * 3))
    hf = json.loads((REPO / "configs" / "models" / "qwen2_5_math_1_5b" / "config.json").read_text())
    rows, prompt, new, verify, prompts = 128, 1024, 1024, 20, 16
    update_rows, chunk = 8, 128
    if args.smoke:
        hf = {**hf, "num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 4096}
        rows, prompt, new, verify, prompts, update_rows, chunk = 16, 32, 32, 4, 2, 8, 8
    group = rows // prompts
    dev = jax.devices()[0]
    out = {"device": f"{dev.platform} {dev.device_kind}", "jax": jax.__version__, "layers": hf["num_hidden_layers"],
           "rows": rows, "slots": prompt + new + verify, "update_rows": update_rows,
           "peaks": {"hbm_tb_s": args.hbm_tb_s, "bf16_tflops": args.bf16_tflops, "f32_tflops": args.f32_tflops}}
    print(f"device: {out['device']}, jax {jax.__version__}", flush=True)
    mesh = parallel.make_mesh(parallel.MeshConfig(), [dev])

    def graphdef_for(compute):
        cfg = config_from_hf(hf, jnp.float32, compute)
        return cfg, nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))[0]  # shapes only

    cfg = config_from_hf(hf, jnp.float32, "bfloat16")
    graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    suffix = tuple(range(10, 10 + verify))
    tx = OptimConfig(learning_rate=1e-6).make(10)

    def step_setup_for(graphdef, **rl):
        rl = RLConfig(group_size=group, max_new_tokens=new, micro_batch_size=update_rows, remat="full",
                            logprob_chunk_size=chunk, **rl)
        return steps.StepSetup(graphdef, tx, rl, suffix, 4, 5, (), 0)

    def planned_gib(phase: str, batch_size: int, compute) -> float:
        """The memory plan's figure for ``phase`` at these shapes (the update: the larger of its two phases, as
        the dry run compares it)."""
        rl = RLConfig(group_size=group, max_new_tokens=new, micro_batch_size=update_rows, remat="full",
                      logprob_chunk_size=chunk)
        p = memory.plan(config_from_hf(hf, jnp.float32, compute), rl,
                        experiment.RunConfig(batch_size=batch_size, num_steps=10), {"data": 1},
                        prompt_tokens=prompt, verify_tokens=verify, optim=OptimConfig(learning_rate=1e-6),
                        eval_problems=0)
        phases = ("update", "optimizer") if phase == "update" else (phase,)
        return max(p.phase_bytes(name) for name in phases) / GiB

    # --- rollout: the whole decode (no stop ids: every row runs all `new` steps), minus the prefill alone.
    step_setup = step_setup_for(graphdef)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(10, cfg.vocab_size, (prompts, prompt)), jnp.int32)
    mask = jnp.ones(ids.shape, bool)
    state = steps.init_state(params, tx, seed=0, keep_reference=False)
    rollout = steps.jit_steps(step_setup, mesh, state).rollout
    t0 = time.perf_counter()
    compiled = rollout.lower(state.params, ids, mask, jax.random.key(0), None).compile()
    out["rollout_compile_s"] = time.perf_counter() - t0
    resident = sum(x.nbytes for x in jax.tree.leaves(state.opt_state))  # held while sampling, not an argument
    out["rollout_compiled_gib"] = (compiled_bytes(compiled) + resident) / GiB
    out["rollout_planned_gib"] = planned_gib("rollout", prompts, "bfloat16")
    roll_s = timed(lambda: rollout(state.params, ids, mask, jax.random.key(1), None), 2)
    out["rollout_peak_gib"] = (peak_bytes() or 0) / GiB

    from rlvjax import sampling

    bf16_params = jax.tree.map(lambda w: w.astype(jnp.bfloat16), state.params)
    prefill = jax.jit(lambda p, i, m: sampling.prefill(nnx.merge(graphdef, p), i, jnp.sum(m, axis=1),
                                                       steps.prefill_rows(prompts, prompt))[0])
    prefill_s = timed(lambda: prefill(bf16_params, ids, mask), 2)
    decode_ms = (roll_s - prefill_s) / new * 1e3
    slot_bytes = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.kv_dim * 2  # one slot's bf16 keys and values
    # a step reads the weights and each row's filled slots (the engine skips cache blocks no row has reached)
    read = sum(n_params * 2 + slot_bytes * rows * (prompt + t) for t in range(1, new + 1))
    roofline_ms = read / new / (args.hbm_tb_s * 1e12) * 1e3
    out.update(rollout_s=roll_s, prefill_s=prefill_s, decode_ms_per_step=decode_ms, roofline_ms_per_step=roofline_ms,
               roofline_fraction=roofline_ms / decode_ms)
    report(out, f"rollout {rows} rows x {prompt}+{new}+{verify} slots: {roll_s:.2f} s (prefill {prefill_s:.2f} s); "
                f"decode {decode_ms:.2f} ms/step, HBM roofline {roofline_ms:.2f} ms/step -> "
                f"{roofline_ms / decode_ms:.0%}; planned {out['rollout_planned_gib']:.2f} GiB, compiled "
                f"{out['rollout_compiled_gib']:.2f} GiB, measured peak {out['rollout_peak_gib']:.2f} GiB")

    # --- ragged rollout (issue 16): row i stops after exactly L_i tokens (common.ragged_lengths at the paper's
    # lengths: median 300 of 1,024), the same engine and weights. Decode time = the call minus the same call with every
    # cap 1 (prefill, first token, scores). Its roofline reads the bf16 weights and only the filled KV slots of the
    # live rows once a step (a paged engine's reads), so the fraction also counts the rows halving keeps.
    lengths = common.ragged_lengths(rows, new, median=0.3 * new)
    policy_bf16 = nnx.merge(graphdef, bf16_params)
    engine_kw = dict(num_samples=group, max_new_tokens=new, temperature=1.0, score_suffix=suffix, score_ids=(4, 5))
    ragged_s = timed(lambda: sampling.sample(policy_bf16, np.asarray(ids), limits=lengths, **engine_kw).tokens, 1)
    first_s = timed(lambda: sampling.sample(policy_bf16, np.asarray(ids), limits=np.ones(rows, np.int32),
                                            **engine_kw).tokens, 1)
    read = sum(n_params * 2 + slot_bytes * sum(prompt + t for length in lengths if length > t)
               for t in range(1, int(lengths.max())))
    decode_s, useful = ragged_s - first_s, int(np.sum(lengths - 1))
    out.update(ragged_tokens=int(lengths.sum()), ragged_s=ragged_s, ragged_decode_tok_s=useful / decode_s,
               ragged_roofline_fraction=read / (args.hbm_tb_s * 1e12) / decode_s)
    report(out, f"ragged rollout {rows} rows, {lengths.sum()} tokens (median {int(np.median(lengths))}, max "
                f"{lengths.max()}): {ragged_s:.2f} s, decode {useful / decode_s:.0f} tok/s; HBM roofline of live rows' "
                f"filled slots -> {out['ragged_roofline_fraction']:.0%}")

    # --- the sampler-vs-trainer log-prob gap on those rollouts (first 2 prompts' rows), bf16 and f32 trainers.
    roll = rollout(state.params, ids, mask, jax.random.key(1), None)
    sub = jax.tree.map(lambda x: x[:2], roll)
    rewards = jnp.zeros(sub.lengths.shape, jnp.float32)
    batch, _ = steps.prepare_update(step_setup, sub, rewards, rewards > 0.5)
    valid = np.asarray(batch.target_mask)
    gaps = {}
    for compute in ("bfloat16", None):
        _, gd = graphdef_for(compute)
        logp, _ = jax.jit(lambda p, b: steps.policy_and_verify_logits(step_setup_for(gd), p, b))(state.params, batch)
        gaps[compute or "float32"] = np.asarray(logp)[valid]
    sampler = np.asarray(batch.old_logp)[valid]
    out["logp_gap_sampler_vs_bf16_trainer"] = {"mean": float(np.abs(sampler - gaps["bfloat16"]).mean()),
                                               "max": float(np.abs(sampler - gaps["bfloat16"]).max())}
    out["logp_gap_bf16_vs_f32_trainer"] = {"mean": float(np.abs(gaps["bfloat16"] - gaps["float32"]).mean()),
                                           "max": float(np.abs(gaps["bfloat16"] - gaps["float32"]).max())}
    sampled, trained = out["logp_gap_sampler_vs_bf16_trainer"], out["logp_gap_bf16_vs_f32_trainer"]
    report(out, f"log-prob gap over {valid.sum()} tokens: sampler (bf16) vs trainer (bf16) mean "
                f"{sampled['mean']:.2e} max {sampled['max']:.2e}; trainer bf16 vs f32 mean {trained['mean']:.2e} max "
                f"{trained['max']:.2e}")
    del roll, sub, batch, compiled
    state = bf16_params = policy_bf16 = rollout = None  # freed (lambdas above still name them): the update needs it

    # --- update: one micro-batch (update_rows rows), bf16 and f32 compute.
    seq = prompt + new + verify
    b = update_rows // group
    tokens = jnp.asarray(rng.integers(10, cfg.vocab_size, (b, group, new)), jnp.int32)
    roll = steps.Rollouts(ids[:b], mask[:b], tokens, jnp.full((b, group), new, jnp.int32), jnp.full(tokens.shape, -3.0),
                          jnp.zeros((b, group), bool), jnp.zeros((b, group, 2)))
    rewards = jnp.asarray(rng.random((b, group)) > 0.5, jnp.float32)
    for compute, peak in (("bfloat16", args.bf16_tflops), (None, args.f32_tflops)):
        _, gd = graphdef_for(compute)
        step_setup = step_setup_for(gd)
        batch, _ = steps.prepare_update(step_setup, roll, rewards, rewards > 0.5)
        fresh = steps.init_state(jax.tree.map(jnp.copy, params), tx, seed=0, keep_reference=False)  # donated
        fresh = jax.device_put(fresh, parallel.shardings(fresh, mesh))  # as train.py: no recompile at step 2
        update = steps.jit_steps(step_setup, mesh, fresh).update
        compiled = update.lower(fresh, batch).compile()
        holder = {"state": fresh}
        del fresh  # donated at the first step: the holder's is the only state
        before = (jax.local_devices()[0].memory_stats() or {}).get("bytes_in_use", 0)

        def step():
            holder["state"], metrics = update(holder["state"], batch)
            return metrics["policy_loss"]

        seconds = timed(step, 3)
        name = compute or "float32"
        out[f"update_{name}_s"] = seconds
        out[f"update_{name}_mfu"] = model_flops(cfg, update_rows, seq, new + 1) / seconds / (peak * 1e12)
        out[f"update_{name}_compiled_gib"] = compiled_bytes(compiled) / GiB
        out[f"update_{name}_planned_gib"] = planned_gib("update", b, compute)
        out[f"update_{name}_peak_gib"] = (peak_bytes() or 0) / GiB
        out[f"update_{name}_held_before_gib"] = before / GiB  # the state and batch (in the plan) and leftovers
        report(out, f"update {update_rows} rows x {seq} tokens, {name} compute: {seconds:.3f} s, MFU "
                    f"{out[f'update_{name}_mfu']:.1%} of {peak:.0f} TFLOP/s; planned "
                    f"{out[f'update_{name}_planned_gib']:.2f} GiB, compiled "
                    f"{out[f'update_{name}_compiled_gib']:.2f} GiB, measured peak so far "
                    f"{out[f'update_{name}_peak_gib']:.2f} GiB ({before / GiB:.2f} GiB held when it started)")
        holder.clear()  # the state: the next update starts from its own
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
