"""Before/after of the sampler: the working tree against the transformer and sampler of a git revision (``modules_at``),
on the same weights, interleaved in one process (so the ratio is robust to the machine's load).

    python bench/ab.py --rev a71c857                 # the revision before the sampler optimisations
    python bench/ab.py --rev a71c857 --batch 64 --new_tokens 512 --verify_len 16

``--rev`` modules are read with ``git show`` (read-only), or from a folder holding the files, and imported under
another name; the weights are copied from the current model. Prints the median seconds of each side and the median
of the per-round ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import types
from pathlib import Path

import common  # noqa: E402
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvjax import sampling

ROOT = Path(__file__).resolve().parents[1]


def modules_at(rev: str, tag: str = "before"):
    """(transformer, sampler) modules of ``rev``: its ``rlvjax/sampling.py``, or (the package layout) its
    ``rlvjax/sampling/engine.py`` with its ``choice.py``; each imports that revision's modules, not the tree's."""
    if Path(rev).is_dir():  # a folder holding the files (a snapshot between two changes)
        show = lambda path: (Path(rev) / Path(path).name).read_text()
    else:
        def show(path):
            done = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True)
            if done.returncode:  # git's reason was captured and dropped: a traceback without it
                raise FileNotFoundError(f"{rev!r} is neither a folder nor a revision of {ROOT}'s git history "
                                        f"holding {path} (git: {' '.join(done.stderr.split()) or 'no output'})")
            return done.stdout
    try:
        files = [("transformer", "rlvjax/model/transformer.py"), ("sampling", "rlvjax/sampling.py")]
        show(files[1][1])
    except FileNotFoundError:
        files = [("transformer", "rlvjax/model/transformer.py"), ("choice", "rlvjax/sampling/choice.py"),
                 ("engine", "rlvjax/sampling/engine.py")]
    mods = {}
    for name, path in files:
        mod = types.ModuleType(f"rlvjax_{tag}_{name}")
        source = (show(path).replace("from rlvjax.model.transformer import", f"from rlvjax_{tag}_transformer import")
                  .replace("from rlvjax.sampling.choice import", f"from rlvjax_{tag}_choice import"))
        sys.modules[mod.__name__] = mod
        exec(compile(source, f"{rev}:{path}", "exec"), mod.__dict__)
        mods[name] = mod
    return mods["transformer"], mods.get("sampling") or mods["engine"]


def model_at(transformer_mod, model):
    """The same weights in ``transformer_mod``'s Transformer."""
    known = {f.name for f in dataclasses.fields(transformer_mod.ModelConfig)}  # older revisions have fewer fields
    cfg = transformer_mod.ModelConfig(**{k: v for k, v in dataclasses.asdict(model.config).items() if k in known})
    old = nnx.eval_shape(lambda: transformer_mod.Transformer(cfg, nnx.Rngs(0)))
    graphdef, _ = nnx.split(old)
    return nnx.merge(graphdef, nnx.state(model))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", required=True, help="before: a git revision or a folder")
    ap.add_argument("--after", default="", help="after: a git revision or a folder (default: the working tree)")
    ap.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    ap.add_argument("--vocab", type=common.positive, default=32000)
    ap.add_argument("--batch", type=common.positive, default=64)
    ap.add_argument("--prompt_len", type=common.positive, default=32)
    ap.add_argument("--new_tokens", type=common.positive, default=128)
    ap.add_argument("--verify_len", type=common.nonnegative, default=0, help="> 0: include the fused verify score")
    ap.add_argument("--runs", type=common.positive, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    try:  # before the models are built (tens of seconds with SmolLM2)
        old_transformer, old_sampling = modules_at(args.rev)
        new_transformer, new_sampling = modules_at(args.after, "after") if args.after else (None, sampling)
    except FileNotFoundError as e:
        ap.error(f"{e}; pass --rev / --after a revision of this checkout or a folder with the files")
    dtype = jnp.dtype(args.dtype)
    model = common.tiny_qwen2(args.vocab, dtype=dtype)[0] if args.model == "tiny" else common.smollm2(dtype, False)[0]
    old_model = model_at(old_transformer, model)
    if args.after:
        model = model_at(new_transformer, model)
    rng = np.random.default_rng(0)
    prompts = rng.integers(10, model.config.vocab_size, (args.batch, args.prompt_len)).tolist()
    kw = dict(max_new_tokens=args.new_tokens, temperature=1.0, seed=0)
    if args.verify_len:
        kw.update(score_suffix=tuple(range(10, 10 + args.verify_len)), score_ids=(3, 4))
    fns = {"before": lambda: old_sampling.sample(old_model, prompts, **kw),
           "after": lambda: new_sampling.sample(model, prompts, **kw)}
    first = {k: common.clock(f) for k, f in fns.items()}
    times = common.interleaved(fns, args.runs, warmup=False)
    compile_s = {k: first[k] - common.med(times[k]) for k in fns}  # the first call compiles and runs once
    print(common.machine_line())
    print(f"{args.model} vocab={model.config.vocab_size} {args.dtype}, batch={args.batch} prompt={args.prompt_len} "
          f"new={args.new_tokens} verify={args.verify_len}; before = {args.rev}, after = {args.after or 'working tree'}; "
          f"medians of {args.runs} interleaved rounds")
    tok = args.batch * args.new_tokens
    rows = [[k, f"{common.med(v):.3f}", f"{tok / common.med(v):.0f}", f"{compile_s[k]:.1f}"] for k, v in times.items()]
    print(common.table(["", "seconds", "new tok/s", "compile s"], rows, [10, 10, 12, 12]))
    print(f"speed-up after/before: {common.paired_ratio(times['before'], times['after']):.2f}x")


if __name__ == "__main__":
    main()
