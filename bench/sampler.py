"""Sampler throughput against transformers.generate on the same weights, and the cost of the fused verifier score.

    python bench/sampler.py [--hidden 256 --layers 4 --batch 64 --new_tokens 128 --dtype float32]

Prints one table: new tokens/s of ``rlvjax.sampling.sample`` and of HF ``generate`` (sampling, same random Qwen2
checkpoint, same prompts, both on the default accelerator when there is one), their ratio, compile time, and the
fused verify-score time as a share of sampling time next to a separate scoring forward pass.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import rlvjax
from rlvjax import sampling


def timed(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt_len", type=int, default=32)
    ap.add_argument("--new_tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--skip_hf", action="store_true")
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                      num_hidden_layers=args.layers, num_attention_heads=max(args.hidden // 64, 2),
                      num_key_value_heads=max(args.hidden // 128, 1), max_position_embeddings=4096,
                      tie_word_embeddings=True)
    hf = Qwen2ForCausalLM(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model, _ = rlvjax.load_hf(d, dtype=jnp.dtype(args.dtype), tokenizer=False)
    rng = np.random.default_rng(0)
    prompts = rng.integers(10, args.vocab, (args.batch, args.prompt_len)).tolist()
    kw = dict(max_new_tokens=args.new_tokens, temperature=1.0, seed=0)
    new_tokens = args.batch * args.new_tokens

    run = lambda **extra: jax.block_until_ready(sampling.sample(model, prompts, **kw, **extra))
    start = time.perf_counter()
    run()
    compile_s = time.perf_counter() - start
    ours_s = timed(run, args.runs)
    suffix, targets = list(range(5, 17)), [3, 4]
    run(score_suffix=suffix, score_ids=targets)
    fused_s = timed(lambda: run(score_suffix=suffix, score_ids=targets), args.runs)
    out = run()
    full = np.concatenate([np.asarray(prompts), np.asarray(out.tokens[:, 0]),
                           np.tile(suffix, (args.batch, 1))], axis=1)
    score = jax.jit(lambda ids: model(ids)[:, -1])
    jax.block_until_ready(score(jnp.asarray(full)))
    separate_s = timed(lambda: jax.block_until_ready(score(jnp.asarray(full))), args.runs)

    rows = [("rlvjax sample", new_tokens / ours_s, ours_s)]
    if not args.skip_hf:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        hf = hf.to(device=device, dtype=getattr(torch, args.dtype))
        ids = torch.tensor(prompts, device=device)
        gen = lambda: hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                  max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)
        with torch.no_grad():
            gen()
            hf_s = timed(lambda: (gen(), torch.cuda.synchronize() if device == "cuda" else None), args.runs)
        rows.append((f"transformers generate ({device})", new_tokens / hf_s, hf_s))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} on "
          f"{jax.devices()[0].device_kind}, torch {torch.__version__}")
    print(f"model: Qwen2 hidden={args.hidden} layers={args.layers} vocab={args.vocab} {args.dtype}; "
          f"batch={args.batch} prompt={args.prompt_len} new={args.new_tokens}; median of {args.runs}")
    print(f"{'':34s}{'new tok/s':>12s}{'seconds':>10s}")
    for name, tps, secs in rows:
        print(f"{name:34s}{tps:12.0f}{secs:10.3f}")
    if len(rows) > 1:
        print(f"ratio rlvjax / transformers: {rows[0][1] / rows[1][1]:.2f}x")
    print(f"compile (first call): {compile_s:.1f} s")
    print(f"fused verify score: +{(fused_s - ours_s) / ours_s:.1%} of sampling time; "
          f"separate scoring forward pass: {separate_s / ours_s:.1%}")


if __name__ == "__main__":
    main()
