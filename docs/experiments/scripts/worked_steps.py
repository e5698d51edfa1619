"""How often does a model answer the sub-questions of a worked reply right, asked as the loop asks them?

Runs acquisition's ``work_out`` (greedy answers, or ``--samples N`` as the demo samples, to the task's plan: "What is 76 - 40?", then "What
is 36 - 8?" with the model's own first answer) on train-split problems of each category, and counts
per category the first step right, the second step right on the model's own first answer, and
verified worked replies (final answer right, every step true). The GPT-3 sets are not read.

    .venv/bin/python docs/experiments/scripts/worked_steps.py [--adapter DIR] [--problems 128] [--samples 2]
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


def tally(items, replies, verify) -> dict[str, dict[str, int]]:
    """Per category: problems, first step true, second step true on the model's own first answer,
    and verified replies, from ``work_out``'s replies.

    >>> from types import SimpleNamespace as NS
    >>> items = [NS(category="sub2"), NS(category="sub2")]
    >>> replies = [[NS(text="76 - 40 = 36, 36 - 8 = 29, so the answer is 29.")], []]
    >>> tally(items, replies, lambda item, text: False)
    {'sub2': {'problems': 2, 'first_step': 1, 'second_step_on_own': 0, 'verified': 0}}
    """
    out: dict[str, Counter[str]] = {}
    for item, worked in zip(items, replies, strict=True):
        c = out.setdefault(item.category, Counter(problems=0, first_step=0, second_step_on_own=0, verified=0))
        c["problems"] += 1
        if worked:
            first, second = equations(worked[0].text)[:2]
            c["first_step"] += first
            c["second_step_on_own"] += second
            c["verified"] += bool(verify(item, worked[0].text))
    return {k: dict(v) for k, v in out.items()}


def measure(engine, task, items, samples: int = 1) -> dict[str, dict[str, int]]:
    """:func:`tally` of the model's worked replies to ``items``, asked as acquisition asks them:
    greedily, or ``samples`` samples per sub-question as the demo samples (T = 0.7, top-p 0.95)."""
    sampling = SamplingParams(max_new_tokens=48)
    if samples > 1:
        sampling = SamplingParams(n=samples, temperature=0.7, top_p=0.95, max_new_tokens=48, seed=0)
    return tally(items, work_out(engine, task, items, sampling)[0], task.verify)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", type=Path, help="PEFT folder on the base (default: the base model)")
    ap.add_argument("--category", nargs="+", default=["add2", "sub2"])
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--samples", type=int, default=1, help="samples per sub-question (1: greedy)")
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
    out = measure(engine, task, items, args.samples)
    print(
        json.dumps(
            {
                "adapter": str(args.adapter),
                "samples": args.samples,
                "seconds": round(time.perf_counter() - tic, 1),
                **out,
            }
        )
    )


if __name__ == "__main__":
    main()
