"""``selfimprove eval``: accuracy of a model on the GPT-3 arithmetic sets, with 95 % intervals.

selfimprove eval --limit 200
selfimprove eval --benchmark two_digit_addition --adapter runs/x/adapter --json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer


def eval_cmd(
    model: Annotated[
        str,
        typer.Option(
            help="'smollm2-135m-instruct', a model folder, run:RUN_ID (incumbent) or run:RUN_ID@ITER."
        ),
    ] = "smollm2-135m-instruct",
    benchmark: Annotated[
        str, typer.Option(help="'gpt3' (all six sets), a set name, or a JSONL path.")
    ] = "gpt3",
    limit: Annotated[
        int | None, typer.Option(min=0, help="Evaluate the first N items of each set (0 or unset: all).")
    ] = None,
    strategy: Annotated[str, typer.Option(help="Inference strategy; only 'greedy' for now.")] = "greedy",
    adapter: Annotated[
        Path | None,
        typer.Option(
            help="A LoRA adapter folder (PEFT) applied on the model, or a whole model folder (full "
            "fine-tuning) loaded in its place."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    batch_size: Annotated[int, typer.Option(help="Sequences decoded together.")] = 128,
    threads: Annotated[int, typer.Option(help="torch threads.")] = max(1, os.cpu_count() or 1),
    backend: Annotated[str, typer.Option(help="Engine backend: transformers or vllm.")] = "transformers",
    benchmarks_dir: Annotated[Path | None, typer.Option(help="Folder of the GPT-3 JSONL files.")] = None,
    address: Annotated[str | None, typer.Option(help="Evaluator control plane, for run: references.")] = None,
) -> None:
    """Evaluate a model on the GPT-3 arithmetic sets (greedy, last signed integer, exact match)."""
    from selfimprove.cli.modelref import ModelRefError, resolve
    from selfimprove.runtime.benchmarks import BenchmarkNotFoundError, load_set, resolve_sets
    from selfimprove.runtime.evaluate import check_strategy

    try:
        model, run_adapter = resolve(model, address)
    except ModelRefError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    adapter = adapter or run_adapter
    try:
        check_strategy(strategy)
        sets = resolve_sets(benchmark, benchmarks_dir)
    except (ValueError, BenchmarkNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from selfimprove.runtime.engine import make_engine
    from selfimprove.runtime.evaluate import evaluate_set

    options = {"threads": threads, "batch_size": batch_size} if backend == "transformers" else {}
    engine = make_engine(backend, base=model, adapters=[adapter] if adapter else [], **options)
    results = [
        evaluate_set(engine, name, load_set(path, limit or None), strategy) for name, path in sets.items()
    ]
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "model": model,
                    "adapter": str(adapter) if adapter else None,
                    "strategy": strategy,
                    "sets": [_row(r) for r in results],
                },
                indent=2,
            )
        )
    else:
        _table(results, model, strategy)


def _row(r) -> dict:
    a = r.accuracy
    return {
        "set": r.set_name,
        "n": a.n,
        "correct": a.correct,
        "accuracy": round(a.value, 4),
        "ci95": [round(a.low, 4), round(a.high, 4)],
        "tokens": r.tokens,
        "seconds": round(r.seconds, 1),
    }


def _table(results, model: str, strategy: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model} on GPT-3 arithmetic ({strategy})")
    for col in ("set", "n", "accuracy", "95% CI", "tok/s"):
        table.add_column(col, justify="left" if col == "set" else "right")
    for r in results:
        a = r.accuracy
        table.add_row(
            r.set_name,
            str(a.n),
            f"{a.value:.1%}",
            f"{a.low:.1%} - {a.high:.1%}",
            f"{r.tokens / max(r.seconds, 1e-9):.0f}",
        )
    Console().print(table)
