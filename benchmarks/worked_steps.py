"""How often does a model answer the sub-questions of a worked reply right, asked as the loop asks them?

Runs acquisition's ``work_out`` (greedy answers to the task's plan: "What is 76 - 40?", then "What
is 36 - 8?" with the model's own first answer) on train-split problems of each category, and counts
per category the first step right, the second step right on the model's own first answer, and
verified worked replies (final answer right, every step true). The GPT-3 sets are not read.

    .venv/bin/python benchmarks/worked_steps.py [--adapter DIR] [--problems 128]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

from selfimprove.acquisition.generate import work_out
from selfimprove.runtime.engine import SamplingParams, make_engine
from selfimprove.runtime.models import resolve_base
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask, equations


def step_counts(reply: str) -> tuple[bool, bool]:
    """Whether the first and the second step of a written worked reply are true.

    >>> step_counts("76 - 40 = 36, 36 - 8 = 29, so the answer is 29.")
    (True, False)
    """
    first, second = equations(reply)[:2]
    return first, second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", type=Path, help="PEFT folder on the base (default: the base model)")
    ap.add_argument("--category", nargs="+", default=["add2", "sub2"])
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = make_engine(
        "transformers",
        str(resolve_base("smollm2-135m-instruct", None)),
        [args.adapter] if args.adapter else [],
    )
    task = ArithmeticTask(categories=args.category)
    items = task.items("train", args.problems, seed=5)
    tic = time.perf_counter()
    worked = work_out(engine, task, items, SamplingParams(max_new_tokens=48))
    out: dict[str, Counter[str]] = {c: Counter() for c in args.category}
    for item, replies in zip(items, worked, strict=True):
        c = out[item.category]
        c["problems"] += 1
        if replies:
            first, second = step_counts(replies[0].text)
            c["first_step"] += first
            c["second_step_on_own"] += second
            c["verified"] += bool(task.verify(item, replies[0].text))
    print(json.dumps({"adapter": str(args.adapter), "seconds": round(time.perf_counter() - tic, 1), **out}))


if __name__ == "__main__":
    main()
