"""vLLM's side of bench/engine.py, run with the Python of a venv that has vLLM (its CPU backend) installed.

    VLLM_CPU_OMP_THREADS_BIND=0-1 /path/to/vllm-venv/bin/python bench/vllm_worker.py --model_dir DIR

Loads the HF directory once, prints ``READY``, then for each JSON line on stdin (``{"prompts": [[ids]], "max_tokens":
[n]}``) samples one completion per prompt at temperature 1, exactly ``max_tokens[i]`` tokens for prompt ``i`` (EOS
ignored), and prints ``RESULT {"seconds": s, "tokens": n}``: the generate call's wall time and the tokens it returned.
Imports nothing of rlvjax or JAX.
"""

import argparse
import json
import sys
import time

from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max_model_len", type=int, default=1024)
    args = ap.parse_args()
    # No prefix caching: every round sends the same prompts, and a cached prefix would skip part of their prefill.
    llm = LLM(model=args.model_dir, skip_tokenizer_init=True, dtype=args.dtype, max_model_len=args.max_model_len,
              seed=0, enable_prefix_caching=False)
    print("READY", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        prompts = [TokensPrompt(prompt_token_ids=p) for p in request["prompts"]]
        params = [SamplingParams(temperature=1.0, top_p=1.0, max_tokens=n, min_tokens=n, ignore_eos=True,
                                 detokenize=False) for n in request["max_tokens"]]
        start = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        print("RESULT " + json.dumps({"seconds": seconds, "tokens": tokens}), flush=True)


if __name__ == "__main__":
    main()
