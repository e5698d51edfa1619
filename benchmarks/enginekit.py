"""Shared by the benchmarks that time or sample the model directly: the model arguments and the engine."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from selfimprove.runtime.engine import Engine, SamplingParams, make_engine
from selfimprove.runtime.models import resolve_base
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask
from selfimprove.runtime.tasks.base import Item


def model_parser(doc: str | None) -> argparse.ArgumentParser:
    """``--adapter`` (a candidate folder; default: the base model) and ``--threads``."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--adapter", type=Path, help="a candidate folder (default: the base model)")
    ap.add_argument("--threads", type=int, default=2)
    return ap


def engine_for(args: argparse.Namespace) -> Engine:
    """The transformers engine of the base model with ``args.adapter``, on ``args.threads`` threads."""
    torch.set_num_threads(args.threads)
    adapters = [args.adapter] if args.adapter else []
    return make_engine("transformers", str(resolve_base("smollm2-135m-instruct", None)), adapters)


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
