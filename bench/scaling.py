"""How the sampler's cost grows: new tokens/s vs batch and vs sequence length, with compile time and memory.

    python bench/scaling.py                          # tiny Qwen2 (hidden 256, 4 layers, vocab 32000)
    python bench/scaling.py --batches 1,16,64,256 --lengths 64,512,2048 --runs 5
    python bench/scaling.py --dtype bfloat16 --batches 64,256,1024 --lengths 512,4096   # e.g. on a GPU/TPU

Memory per configuration is XLA's compiled memory analysis of the sampler (arguments + outputs + temporaries: the
KV cache, token/log-prob buffers and activations), plus the process's max RSS at the end.
"""

from __future__ import annotations

import argparse

import common  # noqa: E402
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvjax import sampling


def compiled_bytes(model, prompts, new_tokens) -> float:
    ids, mask = sampling.left_pad(prompts)
    graphdef, state = nnx.split(model)
    compiled = sampling.engine._generate_jit.lower(
        graphdef, state, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(0), None, num_samples=1,
        max_new_tokens=new_tokens, params=sampling.SamplingParams(), score_suffix=(), score_ids=(), rows=None).compile()
    mem = compiled.memory_analysis()
    return float(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes)


def measure(model, batch, prompt_len, new_tokens, runs, cached: bool = False):
    """One table row; ``cached``: this shape was measured already, so its first call compiles nothing (it printed
    "compile s 0.0")."""
    prompts = np.random.default_rng(batch).integers(10, model.config.vocab_size, (batch, prompt_len)).tolist()
    fn = lambda: sampling.sample(model, prompts, max_new_tokens=new_tokens, temperature=1.0, seed=0)
    first = common.clock(fn)
    secs = common.med(common.interleaved({"s": fn}, runs, warmup=False)["s"])
    compile_s = first - secs  # the first call compiles and runs once
    mib = compiled_bytes(model, prompts, new_tokens) / 2 ** 20
    return [str(batch), str(prompt_len + new_tokens), f"{secs:.3f}", f"{batch * new_tokens / secs:.0f}",
            f"{secs / new_tokens * 1e3:.2f}", "above" if cached else f"{compile_s:.1f}", f"{mib:.0f}",
            f"{common.load_now():.1f}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    ap.add_argument("--vocab", type=common.positive, default=32000)
    ap.add_argument("--batches", default="1,4,16,64,256")
    ap.add_argument("--batch_new_tokens", type=common.positive, default=128)
    ap.add_argument("--lengths", default="64,256,1024,2048", help="total sequence lengths (prompt + new)")
    ap.add_argument("--length_batch", type=common.positive, default=8)
    ap.add_argument("--prompt_len", type=common.positive, default=32)
    ap.add_argument("--runs", type=common.positive, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    try:  # up front: a bad length ended the run in a traceback after the first table
        batches = [int(b) for b in args.batches.split(",") if b]
        lengths = [int(n) for n in args.lengths.split(",") if n]
    except ValueError:
        ap.error(f"--batches {args.batches!r} and --lengths {args.lengths!r} must be comma-separated whole numbers")
    if min(batches, default=0) < 1 or min(lengths, default=0) <= args.prompt_len:
        ap.error(f"each of --batches {args.batches} must be >= 1 and each of --lengths {args.lengths} above "
                 f"--prompt_len {args.prompt_len} (a length is prompt + new tokens)")
    dtype = jnp.dtype(args.dtype)
    model = common.tiny_qwen2(args.vocab, dtype=dtype)[0] if args.model == "tiny" else common.smollm2(dtype, False)[0]
    header = ["batch", "seq", "seconds", "new tok/s", "ms/step", "compile s", "XLA MiB", "load"]
    widths = [7, 7, 10, 11, 9, 11, 9, 7]
    print(common.machine_line())
    print(f"model: {args.model} vocab={model.config.vocab_size} {args.dtype}; prompt {args.prompt_len}; temperature 1; "
          f"medians of {args.runs} runs after a compile call\n")
    rows = [measure(model, b, args.prompt_len, args.batch_new_tokens, args.runs) for b in batches]
    print(f"vs batch ({args.batch_new_tokens} new tokens):")
    print(common.table(header, rows, widths))
    rows = [measure(model, args.length_batch, args.prompt_len, n - args.prompt_len, args.runs,
                    cached=args.length_batch in batches and n - args.prompt_len == args.batch_new_tokens)
            for n in lengths]
    print(f"\nvs sequence length (batch {args.length_batch}):")
    print(common.table(header, rows, widths))
    print(f"\nmax RSS {common.max_rss_gib():.2f} GiB; load at end {common.load_now():.1f}")


if __name__ == "__main__":
    main()
