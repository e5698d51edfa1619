"""One acquisition shard of the demo, asked both ways side by side: plain samples with rationalization
(prompts no sample answered asked again with the answer as a hint) against hint-only
(``acquisition.hint_only_iterations``: every prompt asked only with its hint).

The shard is sized and sampled as the demo's (``acquisition.prompts.shard_items``: shard 0 of 2,
256 prompts of 2-digit addition and subtraction from the train stream; 2 samples, T = 0.7, top-p
0.95, 48 new tokens), through the acquisition's own ``run_shard``, both ways on the same prompts
with the same seed. The GPT-3 sets are neither read nor skipped (the loop skips their problems). Prints one JSON line per way: seconds, tokens generated, prompts with a verified reply of any
kind, prompts answered by a plain sample, prompts answered only with a hint; then the ratio of seconds.

    .venv/bin/python benchmarks/hint_only.py [--adapter DIR] [--prompts 256]
"""

from __future__ import annotations

import json

from enginekit import engine_for, model_parser

from selfimprove.acquisition import prompts
from selfimprove.acquisition.generate import ShardJob, run_shard
from selfimprove.acquisition.shard import shard_stats
from selfimprove.runtime.engine import SamplingParams
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask


def main() -> None:
    ap = model_parser(__doc__)
    ap.add_argument("--prompts", type=int, default=256)
    args = ap.parse_args()
    engine = engine_for(args)
    task = ArithmeticTask(categories=("add2", "sub2"))
    items = prompts.shard_items(task, 0, 1, 0, 2, args.prompts)
    sampling = SamplingParams(
        n=2, temperature=0.7, top_p=0.95, max_new_tokens=48, seed=prompts.sample_seed(0, 1, 0)
    )
    seconds = {}
    for way, hint_only in (("plain, then hints", False), ("hints only", True)):
        rows, _, total = run_shard(
            engine, task, ShardJob(items, sampling, rationalize=True, hint_only=hint_only)
        )
        stats = shard_stats(rows, total)
        seconds[way] = total
        print(
            json.dumps(
                {
                    "way": way,
                    "seconds": round(total, 1),
                    "tokens": stats["tokens"],
                    "prompts": stats["prompts"],
                    "answered": round(stats["answered"] * stats["prompts"]),
                    "answered_plainly": round(stats["yield"] * stats["prompts"]),
                    "answered_with_hint": stats["rationalized"],
                    "adapter": str(args.adapter) if args.adapter else None,
                }
            ),
            flush=True,
        )
    ratio = seconds["plain, then hints"] / seconds["hints only"]
    print(json.dumps({"seconds_ratio_plain_over_hint_only": round(ratio, 2)}))


if __name__ == "__main__":
    main()
