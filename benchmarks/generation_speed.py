"""Useful generation tokens/s: our transformers engine as the loop uses it vs plain HF ``generate``.

Ours: 32 arithmetic prompts x 4 samples, T=0.7, top-p 0.95, in one request. Baseline: plain
``model.generate`` at batch 1 (KV cache on, same threads, same max new tokens, same sampling) on the
same 32 prompts, one sample each. Useful tokens are generated tokens up to and including each
sequence's end-of-turn (or the max-token cap), never padding.

    .venv/bin/python benchmarks/generation_speed.py [--threads 2] [--max-new-tokens 64] [--bf16]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--bf16", action="store_true", help="also time our engine with bfloat16 weights")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    torch.set_num_threads(args.threads)
    from selfimprove.runtime.engine import GenerationRequest, SamplingParams, useful_tokens
    from selfimprove.runtime.hf_engine import TransformersEngine
    from selfimprove.runtime.tasks import load_task

    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    prompts = [it.prompt for it in load_task("arithmetic").items("train", args.prompts, seed=0)]
    engine = TransformersEngine.load(threads=args.threads, batch_size=args.batch_size)
    params = SamplingParams(
        n=args.samples, temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0
    )

    def ours(eng: TransformersEngine) -> float:
        eng.generate(GenerationRequest(prompts[:2], SamplingParams(max_new_tokens=4)))  # warm-up
        start = time.perf_counter()
        results = eng.generate(GenerationRequest(prompts, params))
        seconds = time.perf_counter() - start
        tokens = useful_tokens(results)
        print(f"  {tokens} useful tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s")
        return tokens / seconds

    print(
        f"ours: {args.prompts} prompts x {args.samples} samples, T=0.7 top_p=0.95, max {args.max_new_tokens} new tokens, "
        f"batch {args.batch_size}, fp32"
    )
    ours_rate = ours(engine)

    print("baseline: HF generate, batch 1, KV cache, same prompts and sampling, fp32, 1 sample per prompt")
    model, tok = engine.model, engine.tokenizer
    tokens, seconds = 0, 0.0
    for prompt in prompts:
        enc = tok.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=0.7,
                top_p=0.95,
                top_k=0,
                max_new_tokens=args.max_new_tokens,
                use_cache=True,
                pad_token_id=tok.pad_token_id,
            )
        seconds += time.perf_counter() - start
        tokens += out.shape[1] - enc["input_ids"].shape[1]  # batch 1: no padding; stops at end-of-turn
    base_rate = tokens / seconds
    print(f"  {tokens} useful tokens in {seconds:.1f} s = {base_rate:.1f} tok/s")
    print(f"ratio (ours fp32 / baseline fp32): {ours_rate / base_rate:.1f}x (goal >= 15x)")

    if args.bf16:
        print("ours, bfloat16 weights (same request):")
        engine.model = engine.model.to(torch.bfloat16)
        rate = ours(engine)
        print(f"ratio (ours bf16 / baseline fp32): {rate / base_rate:.1f}x")


if __name__ == "__main__":
    main()
