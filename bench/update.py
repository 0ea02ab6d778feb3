"""Update-step FLOP use: achieved FLOP/s of ``update_step`` (L_RL + lambda * L_V, AdamW) over a measured GEMM peak.

    python bench/update.py                               # ~21M-param model, 8 rows x 256 tokens, f32 on CPU
    python bench/update.py --dtype bfloat16 --rows 256 --hidden 1024 --layers 12   # e.g. on a GPU/TPU
    python bench/update.py --memory_sweep                # remat on/off x chunked/full log-probs: time, temp memory

FLOPs are counted two ways: XLA's ``cost_analysis()['flops']`` of the compiled step (everything it executes, elementwise
ops and the masked half of causal attention included) and the model formula ``3 x forward``, forward = 2 x
(non-embedding matmul params) per token + 4 x S x d per token and layer (attention, full S as executed) + 2 x d x V per
scored position (the lm head runs only on completion positions and the verify position). XLA counts a loop body once, so
its count, less the optimizer step's (run once), is multiplied by the micro-batch scan's trip count. The peak is the
fastest of three jitted f32 (or --dtype) matmuls — the step's MLP and lm-head GEMM shapes and a 2048^3 one — measured
interleaved with the step, so both see the same load. Also: step time and XLA's temporary memory vs micro-batch size
(gradient accumulation by ``lax.scan``). ``--dtype bfloat16`` keeps f32 weights and computes in bf16. ``--memory_sweep``
times the step with ``RLConfig.remat`` none / full and ``logprob_chunk_size`` 0 / 64, interleaved, as ratios to remat
none with full log-probs, beside XLA's temporary memory of each.
"""

from __future__ import annotations

import argparse
import functools

import common  # noqa: E402
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlvjax import parallel
from rlvjax.model.transformer import ModelConfig, Transformer
from rlvjax.rl import steps
from rlvjax.rl.config import OptimConfig, RLConfig


def model_flops(cfg: ModelConfig, rows: int, seq: int, scored: int) -> float:
    """Training FLOPs (forward + backward = 3 x forward) of one pass over ``rows x seq`` tokens."""
    d, hd = cfg.hidden_size, cfg.kv_dim
    attn_params = d * cfg.num_heads * hd * 2 + d * cfg.num_kv_heads * hd * 2  # q, o, k, v
    mlp_params = 3 * d * cfg.intermediate_size
    per_token = 2 * cfg.num_layers * (attn_params + mlp_params) + cfg.num_layers * 4 * seq * cfg.num_heads * hd
    forward = rows * seq * per_token + rows * scored * 2 * d * cfg.vocab_size
    return 3.0 * forward


def make_setup(args, lambda_verify: float, micro: int, remat: str = "none", chunk: int = 0):
    cfg = ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                      num_layers=args.layers, num_heads=args.hidden // 64, num_kv_heads=max(args.hidden // 128, 1),
                      qkv_bias=True, tie_word_embeddings=True, dtype="float32", compute_dtype=args.dtype)
    graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
    params = nnx.to_pure_dict(state)
    verify = tuple(range(10, 10 + args.verify_len))
    rl = RLConfig(group_size=8, lambda_verify=lambda_verify, max_new_tokens=args.new_tokens,
                        micro_batch_size=micro, remat=remat, logprob_chunk_size=chunk)
    tx = OptimConfig(learning_rate=1e-5).make(100)
    step_setup = steps.StepSetup(graphdef, tx, rl, verify, 4, 5, (2,), 0)
    mesh = parallel.make_mesh(parallel.MeshConfig())
    return cfg, step_setup, mesh, params


def make_batch(args, cfg, seed=0) -> steps.UpdateBatch:
    rng = np.random.default_rng(seed)
    r, p, n, v = args.rows, args.prompt_len, args.new_tokens, args.verify_len
    lengths = rng.integers(n // 2, n + 1, r)
    target_mask = np.arange(n)[None] < lengths[:, None]
    tokens = np.where(target_mask, rng.integers(10, cfg.vocab_size, (r, n)), 0)
    ids = np.concatenate([rng.integers(10, cfg.vocab_size, (r, p)), tokens, np.tile(np.arange(10, 10 + v), (r, 1))], 1)
    mask = np.concatenate([np.ones((r, p), bool), target_mask, np.ones((r, v), bool)], 1)
    return steps.UpdateBatch(
        input_ids=jnp.asarray(ids, jnp.int32), input_mask=jnp.asarray(mask), targets=jnp.asarray(tokens, jnp.int32),
        target_mask=jnp.asarray(target_mask), old_logp=jnp.asarray(-rng.random((r, n)) * target_mask, jnp.float32),
        advantages=jnp.asarray(rng.standard_normal((r, 1)) * target_mask, jnp.float32),
        verify_target=jnp.asarray(rng.choice([4, 5], r), jnp.int32), verify_mask=jnp.ones((r,), jnp.float32))


def optimizer_flops(tx, params) -> float:
    """XLA's FLOP count of one optimizer step (``tx`` update and its application) on ``params``."""
    def step(params, grads, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    cost = jax.jit(step).lower(params, params, jax.eval_shape(tx.init, params)).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost).get("flops", 0.0))


class UpdateRunner:
    """A jitted, donating update step and a fresh state per call; ``flops`` from XLA's cost analysis."""

    def __init__(self, args, lambda_verify: float, micro: int, remat: str = "none", chunk: int = 0):
        self.cfg, step_setup, mesh, params = make_setup(args, lambda_verify, micro, remat, chunk)
        state = steps.init_state(params, step_setup.tx, seed=0, keep_reference=False)
        self.state = jax.device_put(state, parallel.shardings(state, mesh))  # as train.py does: no recompile at step 2
        self.batch = make_batch(args, self.cfg)
        self.update = steps.jit_steps(step_setup, mesh, self.state).update
        t0 = common.time.perf_counter()
        compiled = self.update.lower(self.state, self.batch).compile()
        self.compile_s = common.time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        # XLA counts a loop body once: the micro-batch scan runs it rows / micro times, the optimizer step once.
        optimizer = optimizer_flops(step_setup.tx, params)
        self.flops = ((float(cost.get("flops", float("nan"))) - optimizer) * (args.rows // micro if micro else 1)
                      + optimizer)
        mem = compiled.memory_analysis()
        self.temp_bytes = getattr(mem, "temp_size_in_bytes", float("nan"))
        self.params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))

    def warm(self):
        """Two calls: the second must reuse the first's executable (the donated state keeps its shardings)."""
        for _ in range(2):
            jax.block_until_ready(self())
        if self.update._cache_size() != 1:
            raise RuntimeError(f"update step compiled {self.update._cache_size()} times; timings would include it")

    def __call__(self):
        self.state, metrics = self.update(self.state, self.batch)
        return metrics["policy_loss"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=common.positive, default=16384)
    ap.add_argument("--hidden", type=common.positive, default=512)
    ap.add_argument("--layers", type=common.positive, default=4)
    ap.add_argument("--rows", type=common.positive, default=8, help="rollouts per update (B x G)")
    ap.add_argument("--prompt_len", type=common.positive, default=64)
    ap.add_argument("--new_tokens", type=common.positive, default=176)
    ap.add_argument("--verify_len", type=common.nonnegative, default=16)
    ap.add_argument("--micro", default="0,4,2", help="micro-batch sizes to sweep (0: whole batch at once)")
    ap.add_argument("--runs", type=common.positive, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--peak_tflops", type=float, default=0.0,
                    help="datasheet peak of the device at --dtype (e.g. 989 for H100 SXM bf16 dense) to print MFU")
    ap.add_argument("--memory_sweep", action="store_true", help="remat none/full x logprob chunk 0/64 instead")
    args = ap.parse_args()
    seq = args.prompt_len + args.new_tokens + args.verify_len
    if args.memory_sweep:
        return memory_sweep(args, seq)

    micros = [int(m) for m in args.micro.split(",")]
    runners = {m: UpdateRunner(args, 1.0, m) for m in micros}
    cfg = runners[micros[0]].cfg
    # The peak: the step's big GEMM shapes as jitted matmuls (MLP up/gate: tokens x d @ d x 3d; lm head:
    # tokens x d @ d x V; a square one), the fastest of them per round.
    tokens = args.rows * seq
    shapes = [(tokens, cfg.hidden_size, cfg.intermediate_size), (tokens, cfg.hidden_size, cfg.vocab_size),
              (2048, 2048, 2048)]
    gemm = jax.jit(lambda a, b: a @ b)
    operands = [(jnp.ones((m, k), args.dtype), jnp.ones((k, n), args.dtype)) for m, k, n in shapes]
    fns = {f"update micro={m or args.rows}": runners[m] for m in micros}
    for (m, k, n), (a, b) in zip(shapes, operands):
        fns[f"gemm {m}x{k}@{k}x{n}"] = functools.partial(gemm, a, b)
    for run in runners.values():
        run.warm()
    load_before = common.load_now()
    times = common.interleaved(fns, args.runs)

    print(common.machine_line())
    print(f"load avg 1 min before/after the timed rounds: {load_before:.1f}/{common.load_now():.1f}")
    r0 = runners[micros[0]]
    print(f"model: {r0.params / 1e6:.1f}M params (hidden {cfg.hidden_size}, {cfg.num_layers} layers, vocab "
          f"{cfg.vocab_size}, tied), {args.dtype}; update batch {args.rows} rows x {seq} tokens "
          f"({args.prompt_len} prompt + {args.new_tokens} completion + {args.verify_len} verify); AdamW; "
          f"lambda_verify=1; medians of {args.runs} interleaved rounds\n")
    gemm_names = [f"gemm {m}x{k}@{k}x{n}" for m, k, n in shapes]
    peak_per_round = [max(2.0 * m * k * n / times[g][r] for g, (m, k, n) in zip(gemm_names, shapes))
                      for r in range(args.runs)]
    formula = model_flops(cfg, args.rows, seq, args.new_tokens + 1)
    rows = []
    for m in micros:
        name = f"update micro={m or args.rows}"
        t = common.med(times[name])
        run = runners[m]
        # Per-round ratio of achieved FLOP/s to that round's GEMM peak.
        use_xla = common.paired_ratio([run.flops / s for s in times[name]], peak_per_round)
        use_formula = common.paired_ratio([formula / s for s in times[name]], peak_per_round)
        rows.append([name, f"{t:.3f}", f"{run.flops / 1e9:.1f}", f"{formula / 1e9:.1f}", f"{run.flops / t / 1e9:.1f}",
                     f"{use_xla:.0%}", f"{use_formula:.0%}", f"{run.compile_s:.1f}", f"{run.temp_bytes / 2**20:.0f}"])
    for g, (m, k, n) in zip(gemm_names, shapes):
        t = common.med(times[g])
        rows.append([g, f"{t:.4f}", f"{2 * m * k * n / 1e9:.2f}", "", f"{2 * m * k * n / t / 1e9:.1f}",
                     f"{common.paired_ratio([2 * m * k * n / x for x in times[g]], peak_per_round):.0%}", "", "", ""])
    print(common.table(["step", "seconds", "XLA GFLOP", "model GFLOP", "GFLOP/s (XLA)", "use (XLA)",
                        "use (model)", "compile s", "temp MiB"], rows, [34, 9, 11, 13, 15, 11, 13, 11, 10]))
    if args.peak_tflops:
        for m in micros:
            t = common.med(times[f"update micro={m or args.rows}"])
            print(f"MFU micro={m or args.rows}: {formula / t / 1e12 / args.peak_tflops:.1%} of {args.peak_tflops:.0f} "
                  "TFLOP/s (model FLOPs)")
    print(f"\nuse = achieved FLOP/s / peak, the peak being each round's fastest GEMM above; median of per-round "
          f"ratios; max RSS {common.max_rss_gib():.2f} GiB")


def memory_sweep(args, seq: int) -> None:
    """Step time (interleaved, ratio to the plain step) and XLA's temporary memory per remat / chunk setting."""
    micro = int(args.micro.split(",")[0])
    variants = {(remat, chunk): UpdateRunner(args, 1.0, micro, remat, chunk)
                for remat in ("none", "full") for chunk in (0, 64)}
    for run in variants.values():
        run.warm()
    load_before = common.load_now()
    times = common.interleaved({k: v for k, v in variants.items()}, args.runs, warmup=False)
    print(common.machine_line())
    print(f"load avg 1 min before/after the timed rounds: {load_before:.1f}/{common.load_now():.1f}")
    cfg = variants["none", 0].cfg
    print(f"model: hidden {cfg.hidden_size}, {cfg.num_layers} layers, vocab {cfg.vocab_size}, compute "
          f"{args.dtype}; update batch {args.rows} rows x {seq} tokens ({args.new_tokens} completion), micro-batch "
          f"{micro or args.rows}; medians of {args.runs} interleaved rounds\n")
    base = times["none", 0]
    rows = [[f"remat={remat} chunk={chunk or 'all'}", f"{common.med(t):.3f}", f"{common.paired_ratio(t, base):.2f}",
             f"{variants[remat, chunk].temp_bytes / 2**20:.0f}",
             f"{variants[remat, chunk].temp_bytes / variants['none', 0].temp_bytes:.2f}"]
            for (remat, chunk), t in times.items()]
    print(common.table(["update step", "seconds", "time ratio", "temp MiB", "temp ratio"], rows,
                       [26, 9, 12, 10, 12]))


if __name__ == "__main__":
    main()
