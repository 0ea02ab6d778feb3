"""Wall time of one RL^V iteration (rollout with the fused verify score + update with lambda=1 over
``prompt | completion | verify prompt``) against a lambda=0 iteration (rollout without the score + update over
``prompt | completion``: plain GRPO), on the same prompts, rewards and initial weights, interleaved.

    python bench/iteration.py                       # tiny Qwen2, 8 prompts x 8 samples, 128 new tokens
    python bench/iteration.py --dtype bfloat16 --prompts 64 --hidden 1024 --layers 12   # e.g. on a GPU/TPU

Grading is excluded (host work, the same on both sides); advantages and batch building are included.
"""

from __future__ import annotations

import argparse
import functools

import common  # noqa: E402
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlvjax.model.transformer import ModelConfig, Transformer
from rlvjax.rl import steps
from rlvjax.rl.config import OptimConfig, RLConfig


class Iteration:
    def __init__(self, args, rlv: bool):
        cfg = ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                          num_layers=args.layers, num_heads=max(args.hidden // 64, 2),
                          num_kv_heads=max(args.hidden // 128, 1), qkv_bias=True, tie_word_embeddings=True,
                          compute_dtype=args.dtype)  # f32 weights (and AdamW moments), as the shipped configs
        graphdef, state = nnx.split(Transformer(cfg, nnx.Rngs(0)))
        self.params = nnx.to_pure_dict(state)
        rl = RLConfig(group_size=args.group, lambda_verify=1.0 if rlv else 0.0, max_new_tokens=args.new_tokens,
                            micro_batch_size=args.micro)
        tx = OptimConfig(learning_rate=1e-5).make(100)
        suffix = tuple(range(10, 10 + args.verify_len)) if rlv else ()
        step_setup = steps.StepSetup(graphdef, tx, rl, suffix, 4, 5, (), 0)  # no stop ids: every row runs to the end
        self.rollout = jax.jit(functools.partial(steps.rollout_step, step_setup))
        self.prepare = jax.jit(functools.partial(steps.prepare_update, step_setup))
        self.update = jax.jit(functools.partial(steps.update_step, step_setup), donate_argnums=(0,))
        self.tx = tx
        rng = np.random.default_rng(0)
        self.prompts = jnp.asarray(rng.integers(10, args.vocab, (args.prompts, args.prompt_len)), jnp.int32)
        self.rewards = jnp.asarray(rng.integers(0, 2, (args.prompts, args.group)), jnp.float32)
        self.state = steps.init_state(self.params, tx, seed=0, keep_reference=False)
        self.times = {"rollout": [], "update": []}

    def __call__(self):
        t0 = common.time.perf_counter()
        roll = jax.block_until_ready(self.rollout(self.state.params, self.prompts, jnp.ones_like(self.prompts, bool),
                                                  jax.random.key(0), None))
        t1 = common.time.perf_counter()
        batch, _ = self.prepare(roll, self.rewards, self.rewards > 0.5)
        self.state, metrics = self.update(self.state, batch)
        jax.block_until_ready(metrics["policy_loss"])
        t2 = common.time.perf_counter()
        self.times["rollout"].append(t1 - t0)
        self.times["update"].append(t2 - t1)
        return metrics["policy_loss"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=common.positive, default=32000)
    ap.add_argument("--hidden", type=common.positive, default=256)
    ap.add_argument("--layers", type=common.positive, default=4)
    ap.add_argument("--prompts", type=common.positive, default=8)
    ap.add_argument("--group", type=common.positive, default=8)
    ap.add_argument("--prompt_len", type=common.positive, default=32)
    ap.add_argument("--new_tokens", type=common.positive, default=128)
    ap.add_argument("--verify_len", type=common.nonnegative, default=16,
                    help="verify prompt tokens (chat template ~15-20)")
    ap.add_argument("--micro", type=common.nonnegative, default=16,
                    help="micro-batch rows of the update (0: all at once)")
    ap.add_argument("--runs", type=common.positive, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    args = ap.parse_args()

    sides = {"RL^V (lambda=1)": Iteration(args, True), "lambda=0": Iteration(args, False)}
    first = {k: common.clock(it) for k, it in sides.items()}  # compiles rollout, prepare, update, and runs once
    for it in sides.values():
        it.times = {"rollout": [], "update": []}
    load_before = common.load_now()
    times = common.interleaved(sides, args.runs, warmup=False)
    compile_s = {k: first[k] - common.med(times[k]) for k in sides}
    print(common.machine_line())
    print(f"load avg 1 min before/after the timed rounds: {load_before:.1f}/{common.load_now():.1f}")
    print(f"model: hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}, compute {args.dtype}; "
          f"{args.prompts} prompts x {args.group} samples, prompt {args.prompt_len}, {args.new_tokens} new tokens, "
          f"verify prompt {args.verify_len}; update micro-batch {args.micro or 'all'}; medians of {args.runs} "
          "interleaved rounds\n")
    rows = []
    for name, it in sides.items():
        rows.append([name, f"{common.med(it.times['rollout']):.3f}", f"{common.med(it.times['update']):.3f}",
                     f"{common.med(times[name]):.3f}", f"{compile_s[name]:.1f}"])
    a, b = sides["RL^V (lambda=1)"], sides["lambda=0"]
    rows.append(["ratio RL^V / lambda=0", f"{common.paired_ratio(a.times['rollout'], b.times['rollout']):.3f}x",
                 f"{common.paired_ratio(a.times['update'], b.times['update']):.3f}x",
                 f"{common.paired_ratio(times['RL^V (lambda=1)'], times['lambda=0']):.3f}x", ""])
    print(common.table(["iteration", "rollout s", "update s", "total s", "compile s"], rows, [26, 11, 11, 11, 11]))
    print(f"\nmax RSS {common.max_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
