"""Where the time goes: one traced call of the sampler or of the update step, XLA ops ranked by total time.

    python bench/op_profile.py sampler [--batch 64 --new_tokens 128 --vocab 32000] [--model smollm2] [--ragged]
    python bench/op_profile.py update  [--rows 8]

Uses ``jax.profiler.trace`` (on CPU every XLA thunk is an event) and names each op's source from the compiled HLO's
``op_name`` metadata, so a line reads e.g. ``dot.328  1.55 ms/call  .../bkgts,bksd->btkgd/dot_general``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import shutil
import tempfile

import common  # noqa: E402
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvjax import sampling


def op_names(hlo_text: str) -> dict[str, str]:
    names = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]+)\"", line)
        if m:
            names[m.group(1)] = m.group(2)
    return names


def trace(fn, top: int, hlo_text: str):
    jax.block_until_ready(fn())
    d = tempfile.mkdtemp()
    try:
        with jax.profiler.trace(d):
            total = common.clock(fn)
        events = json.load(gzip.open(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]))["traceEvents"]
    finally:
        shutil.rmtree(d, ignore_errors=True)
    names = op_names(hlo_text)
    agg, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["name"] in names:
            agg[e["name"]] += e.get("dur", 0) / 1e3
            count[e["name"]] += 1
    print(common.machine_line())
    print(f"traced call: {total * 1e3:.0f} ms wall; XLA ops below sum to {sum(agg.values()):.0f} ms\n")
    rows = [[k, f"{v:.0f}", f"{v / total / 10:.1f}%", str(count[k]), f"{v / count[k]:.3f}",
             names.get(k, "")[-70:]] for k, v in agg.most_common(top)]
    print(common.table(["op", "total ms", "share", "calls", "ms/call", "source"], rows, [34, 10, 8, 7, 9, 72]))
    by_source = collections.Counter()
    for k, v in agg.items():
        by_source[re.sub(r"^.*?/(while/)*(body/|cond/)*", "", names[k]) or names[k]] += v
    rows = [[src[-80:], f"{v:.0f}", f"{v / total / 10:.1f}%"] for src, v in by_source.most_common(top)]
    print("\nby source (ops summed):\n" + common.table(["source", "total ms", "share"], rows, [82, 10, 8]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sampler", "update"])
    ap.add_argument("--vocab", type=common.positive, default=32000)
    ap.add_argument("--batch", type=common.positive, default=64)
    ap.add_argument("--prompt_len", type=common.positive, default=32)
    ap.add_argument("--new_tokens", type=common.positive, default=128)
    ap.add_argument("--rows", type=common.positive, default=8)
    ap.add_argument("--top", type=common.positive, default=25)
    ap.add_argument("--model", default="tiny", choices=["tiny", "smollm2"], help="sampler only")
    ap.add_argument("--ragged", action="store_true", help="sampler: bench/engine.py's ragged token caps")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    if args.what == "sampler":
        if args.model == "tiny":
            model = common.tiny_qwen2(args.vocab, dtype=jnp.dtype(args.dtype))[0]
        else:
            model = common.smollm2(jnp.dtype(args.dtype), with_hf=False)[0]
        vocab = model.config.vocab_size
        prompts = np.random.default_rng(0).integers(10, vocab, (args.batch, args.prompt_len)).tolist()
        limits = common.ragged_lengths(args.batch, args.new_tokens, median=40 * args.new_tokens / 128) \
            if args.ragged else None
        ids, mask = sampling.left_pad(prompts)
        graphdef, state = nnx.split(model)
        kw = dict(num_samples=1, max_new_tokens=args.new_tokens, params=sampling.SamplingParams(), score_suffix=(),
                  score_ids=())
        hlo = sampling.engine._generate_jit.lower(graphdef, state, jnp.asarray(ids), jnp.asarray(mask),
                                                  jax.random.key(0), None if limits is None else jnp.asarray(limits),
                                                  rows=None, **kw).compile().as_text()
        trace(lambda: sampling.sample(model, prompts, max_new_tokens=args.new_tokens, seed=0, limits=limits),
              args.top, hlo)
    else:
        import update

        uargs = argparse.Namespace(vocab=16384, hidden=512, layers=4, rows=args.rows, prompt_len=64, new_tokens=176,
                                   verify_len=16, dtype=args.dtype)
        runner = update.UpdateRunner(uargs, 1.0, 0)
        hlo = runner.update.lower(runner.state, runner.batch).compile().as_text()
        trace(runner, args.top, hlo)


if __name__ == "__main__":
    main()
