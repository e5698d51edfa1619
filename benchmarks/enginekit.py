"""Shared by the benchmarks that time or sample the model directly: the model arguments and the engine."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from selfimprove.runtime.engine import Engine, make_engine
from selfimprove.runtime.models import resolve_base


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
