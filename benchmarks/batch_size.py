"""Seconds of our transformers engine at several batch sizes, on the two jobs the loop gives it:
greedy answers to dev problems (the evaluation worker's job; the base model's replies are long)
and 2 samples per prompt at T = 0.7, top-p 0.95 (acquisition's job). One after the other in one
process, on the same prompts; greedy replies are compared across sizes.

    .venv/bin/python benchmarks/batch_size.py [--adapter DIR] [--sizes 32 64 128] [--dev 200] [--prompts 256]
"""

from __future__ import annotations

import json
import time

from enginekit import engine_for, model_parser

from selfimprove.runtime.engine import GenerationRequest, SamplingParams
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask


def main() -> None:
    ap = model_parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--dev", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=256)
    args = ap.parse_args()
    engine = engine_for(args)
    task = ArithmeticTask(categories=("add2", "sub2"))
    jobs = {
        "greedy dev": (
            [i.prompt for i in task.items("dev", args.dev, seed=1234)],
            SamplingParams(n=1, temperature=0.0, max_new_tokens=48),
        ),
        "sampled train": (
            [i.prompt for i in task.items("train", args.prompts, seed=21)],
            SamplingParams(n=2, temperature=0.7, top_p=0.95, max_new_tokens=48, seed=0),
        ),
    }
    for job, (prompts, params) in jobs.items():
        first = None
        for size in args.sizes:
            engine.batch_size = size
            start = time.perf_counter()
            results = engine.generate(GenerationRequest(prompts, params))
            seconds = time.perf_counter() - start
            texts = [s.text for r in results for s in r.samples]
            first = first or texts
            row = {
                "job": job,
                "batch_size": size,
                "seconds": round(seconds, 1),
                "tokens": sum(s.tokens for r in results for s in r.samples),
                "adapter": str(args.adapter) if args.adapter else None,
            }
            if params.temperature == 0:
                row["same_replies_as_first_size"] = sum(a == b for a, b in zip(first, texts, strict=True))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
