"""Shared by the experiment scripts that sample the model directly: the benchmarks' engine kit
(``benchmarks/enginekit.py``: the model arguments and the engine), found from this folder, and the
label-free pilots' common start (:func:`pilot_setup`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from enginekit import engine_for, model_parser  # noqa: E402

from selfimprove.runtime.engine import Engine, SamplingParams  # noqa: E402
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask  # noqa: E402
from selfimprove.runtime.tasks.base import Item  # noqa: E402

__all__ = ["engine_for", "model_parser", "pilot_setup"]


def pilot_setup(
    doc: str | None,
) -> tuple[argparse.Namespace, Engine, ArithmeticTask, list[Item], SamplingParams]:
    """The label-free pilots' start: :func:`model_parser` plus ``--problems``, ``--samples``,
    ``--threshold`` and ``--categories`` (sums and differences only), parsed; the engine; the task; its
    first ``--problems`` train items (seed 11); and the demo's sampling (T = 0.7, top-p 0.95)."""
    ap = model_parser(doc)
    ap.add_argument("--problems", type=int, default=256)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--threshold", type=float, default=0.66)
    ap.add_argument("--categories", nargs="+", default=["add1", "sub1", "add2", "sub2"])
    args = ap.parse_args()
    if not all(c.startswith(("add", "sub")) and c[3:] in "123456789" for c in args.categories):
        ap.error(f"--categories: sums and differences only (add1 ... sub9), got {args.categories}")
    task = ArithmeticTask(categories=args.categories)
    sampling = SamplingParams(n=args.samples, temperature=0.7, top_p=0.95, max_new_tokens=48, seed=1)
    return args, engine_for(args), task, task.items("train", args.problems, seed=11), sampling
