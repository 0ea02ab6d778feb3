"""Useful tokens/s of the sampling engine against the previous decode loop (a git revision) and vLLM's CPU backend,
on the same weights, for a fixed and a ragged workload, in interleaved rounds.

    python bench/engine.py --vllm_python /path/to/vllm-venv/bin/python                 # tiny random Qwen2
    python bench/engine.py --vllm_python /path/to/vllm-venv/bin/python --model smollm2  # SmolLM2-135M-Instruct

Workloads: 64 prompts of 32 random ids, one sample each, temperature 1, float32 on every side.
- fixed: every row samples 128 new tokens.
- ragged: row ``i`` stops after exactly ``L_i = clip(round(exp(ln 40 + 0.7 z_i)), 2, 128)`` tokens, ``z`` from
  ``numpy.random.default_rng(1)``. The engine gets them as per-sample token caps (``limits``), vLLM as per-request
  ``max_tokens``; a previous loop without per-row caps runs ``max(L)`` steps and is credited with ``sum(L)``.
Useful tokens are the tokens each side was asked for (the engine's and vLLM's outputs are checked to hold that many;
the previous loop's is the length it was asked to run).

vLLM runs in its own venv (it pins torch and transformers) as ``bench/vllm_worker.py``, loading the same weights
from an HF directory written here; each round runs the engine, the previous loop and vLLM one after another, so
no two sides share the cores at once. ``--rev`` is any revision (``ab.modules_at`` reads its sampler).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import tempfile
from pathlib import Path

import common  # noqa: E402  (sets sys.path and the offline env first)
import jax
import numpy as np
from ab import model_at, modules_at

import rlvjax
from rlvjax import sampling

HERE = Path(__file__).resolve().parent


class VLLM:
    """The worker process: ``run(prompts, max_tokens)`` -> seconds of its generate call."""

    def __init__(self, python: str, model_dir: str, max_model_len: int):
        env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND=os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0-1"),
                   VLLM_CPU_KVCACHE_SPACE="4", VLLM_ENABLE_V1_MULTIPROCESSING="0", OMP_WAIT_POLICY="PASSIVE")
        self.proc = subprocess.Popen([python, str(HERE / "vllm_worker.py"), "--model_dir", model_dir,
                                      "--max_model_len", str(max_model_len)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._read("READY")

    def _read(self, tag: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(tag):
                return line[len(tag):].strip()
        raise RuntimeError(f"the vLLM worker exited (code {self.proc.wait()}) before printing {tag}")

    def run(self, prompts, max_tokens) -> float:
        self.proc.stdin.write(json.dumps({"prompts": prompts, "max_tokens": [int(n) for n in max_tokens]}) + "\n")
        self.proc.stdin.flush()
        result = json.loads(self._read("RESULT"))
        assert result["tokens"] == int(np.sum(max_tokens)), result
        return result["seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    ap.add_argument("--rev", default="800432a",
                    help="the previous loop: a revision ('' skips it)")
    ap.add_argument("--vllm_python", default="", help="python of a venv with vllm-cpu ('' skips vLLM)")
    ap.add_argument("--batch", type=common.positive, default=64)
    ap.add_argument("--prompt_len", type=common.positive, default=32)
    ap.add_argument("--new_tokens", type=common.positive, default=128)
    ap.add_argument("--runs", type=common.positive, default=5)
    args = ap.parse_args()
    try:  # before the models are built
        old_transformer, old_sampling = modules_at(args.rev) if args.rev else (None, None)
    except FileNotFoundError as e:
        ap.error(f"{e}; pass --rev a revision of this checkout, a folder with the files, or '' to leave it out")

    tmp = tempfile.TemporaryDirectory()
    model_dir = Path(tmp.name) / "model"
    if args.model == "tiny":
        model, hf = common.tiny_qwen2()
        hf.save_pretrained(model_dir)
    else:
        model, _, tok = common.smollm2(with_hf=False)
        rlvjax.save_hf(model, tok, model_dir)
    if args.rev:
        old_model = model_at(old_transformer, model)
    rng = np.random.default_rng(0)
    prompts = rng.integers(10, model.config.vocab_size, (args.batch, args.prompt_len)).tolist()
    fixed = np.full(args.batch, args.new_tokens, np.int32)
    # the workload's shape at any cap (median 40 of 128; with the median fixed, a cap of 16 made 98% of the fixed
    # batch's tokens, still called ragged)
    ragged = common.ragged_lengths(args.batch, args.new_tokens, median=40 * args.new_tokens / 128)

    def ours(limits):
        out = sampling.sample(model, prompts, max_new_tokens=int(limits.max()), temperature=1.0, seed=0,
                              limits=limits)
        assert int(np.sum(np.asarray(out.lengths))) == int(limits.sum())
        return out.tokens

    capped = bool(args.rev) and "limits" in inspect.signature(old_sampling.sample).parameters  # engine revisions

    def before(limits):
        return old_sampling.sample(old_model, prompts, max_new_tokens=int(limits.max()), temperature=1.0, seed=0,
                                   **({"limits": limits} if capped else {})).tokens

    vllm = VLLM(args.vllm_python, str(model_dir), args.prompt_len + args.new_tokens) if args.vllm_python else None
    results = {}
    for name, limits in (("fixed", fixed), ("ragged", ragged)):
        fns = {"engine": lambda: ours(limits)}
        if args.rev:
            fns["previous loop"] = lambda: before(limits)
        if vllm:
            fns["vLLM"] = lambda: vllm.run(prompts, limits)
        for fn in fns.values():  # warm-up: compilation, vLLM's first-call setup
            jax.block_until_ready(fn())
        load = common.load_now()
        times = {k: [] for k in fns}
        for _ in range(args.runs):
            for k, fn in fns.items():
                if k == "vLLM":
                    times[k].append(fn())
                else:
                    times[k].append(common.clock(fn))
        results[name] = (times, int(limits.sum()), load, common.load_now())

    print(common.machine_line())
    if vllm:
        version = subprocess.run([args.vllm_python, "-c", "import vllm; print(vllm.__version__)"],
                                 capture_output=True, text=True).stdout.strip()
        print(f"vLLM {version} (CPU backend, its own venv; float32; "
              f"VLLM_CPU_OMP_THREADS_BIND={os.environ.get('VLLM_CPU_OMP_THREADS_BIND', '0-1')})")
    desc = ("random Qwen2 hidden 256, 4 layers, vocab 32000 (tied)" if args.model == "tiny" else
            "SmolLM2-135M-Instruct (GGUF dequantised)")
    print(f"model: {desc}, {common.n_params(model) / 1e6:.1f}M params, float32; {args.batch} prompts x "
          f"{args.prompt_len} ids, one sample each, temperature 1; previous loop = {args.rev or 'skipped'}; medians of "
          f"{args.runs} interleaved rounds after a warm-up\n")
    rows = []
    for name, (times, useful, load0, load1) in results.items():
        for k, ts in times.items():
            ratio = "" if k == "engine" else f"{common.paired_ratio(ts, times['engine']):.2f}x"
            rows.append([f"{name}: {k}", useful, f"{useful / common.med(ts):.0f}", f"{common.med(ts):.3f}", ratio,
                         f"{load0:.1f}/{load1:.1f}"])
    print(common.table(["workload: sampler", "useful tok", "useful tok/s", "seconds", "engine speed-up",
                        "load before/after"], rows, [28, 12, 14, 10, 17, 19]))
    if vllm:
        vllm.proc.stdin.close()
        vllm.proc.wait(timeout=60)
    tmp.cleanup()


if __name__ == "__main__":
    main()
