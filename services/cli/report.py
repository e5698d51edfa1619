"""``selfimprove report RUN``: write the run's report (Markdown plus PNG plots).

It reads the run through the evaluator's control plane and its artifacts from the store
(``SELFIMPROVE_S3_*``), and evaluates the base model and every promoted model on the GPT-3 arithmetic
sets (greedy, the fixed scoring rule), ``--limit`` items per set (0: all 2,000).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.control import control_stub


def benchmark_models(lineage: dict) -> list[tuple[str, dict]]:
    """The base model and every promoted model of the run, labelled for the report.

    >>> benchmark_models({"models": [{"iteration": 0, "base": "b", "promoted": True},
    ...                              {"iteration": 2, "base": "b", "promoted": True},
    ...                              {"iteration": 3, "base": "b", "promoted": False}]})
    [('base', {'base': 'b'}), ('iter 2', {'iteration': 2, 'base': 'b', 'promoted': True})]
    """
    models = lineage.get("models", [])
    base = next((m.get("base") for m in models if m.get("iteration") == 0), None) or "smollm2-135m-instruct"
    chosen = [("base", {"base": base})]
    chosen += [
        (f"iter {m['iteration']}", m) for m in models if m.get("promoted") and m.get("iteration", 0) > 0
    ]
    return chosen


def evaluate_models(models: list[tuple[str, dict]], limit: int | None, threads: int) -> dict:
    from selfimprove.cli.modelref import local_model
    from selfimprove.runtime.benchmarks import load_set, resolve_sets
    from selfimprove.runtime.engine import make_engine
    from selfimprove.runtime.evaluate import evaluate_set

    sets = resolve_sets("gpt3")
    results: dict[str, dict] = {}
    for label, model in models:
        base, adapter = local_model(model)
        engine = make_engine(
            "transformers", base=base, adapters=[adapter] if adapter else [], threads=threads
        )
        results[label] = {}
        for name, path in sets.items():
            r = evaluate_set(engine, name, load_set(path, limit))
            results[label][name] = {
                "accuracy": r.accuracy.value,
                "low": r.accuracy.low,
                "high": r.accuracy.high,
                "n": r.accuracy.n,
            }
    return results


def write_report(
    run_id: str,
    address: str | None = None,
    limit: int | None = 200,
    out: Path | None = None,
    benchmark: bool = True,
) -> Path:

    from selfimprove.core.settings import StoreSettings, load
    from selfimprove.core.store import ArtifactStore
    from selfimprove.report.collect import collect
    from selfimprove.report.render import render
    from selfimprove.v2 import control_pb2

    stub, _ = control_stub(address)
    status = stub.GetRunStatus(control_pb2.GetRunStatusRequest(run_id=run_id), timeout=30).status
    facts = collect(status, ArtifactStore.from_settings(load(StoreSettings)))
    if benchmark:
        facts.benchmark = evaluate_models(benchmark_models(facts.lineage), limit, max(1, os.cpu_count() or 1))
    return render(facts, out or Path("reports") / run_id)


def report_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    address: Annotated[str | None, typer.Option(help="Evaluator control plane host:port.")] = None,
    limit: Annotated[int, typer.Option(help="Items per GPT-3 set (0: all 2,000).")] = 200,
    out: Annotated[Path | None, typer.Option(help="Output folder (default reports/RUN).")] = None,
    benchmark: Annotated[bool, typer.Option(help="Evaluate base and promoted models on GPT-3 sets.")] = True,
) -> None:
    """Write a run's report: accuracy per iteration, GPT-3 sets, data, losses, refinement, decisions."""
    import grpc

    try:
        path = write_report(run_id, address, limit or None, out, benchmark)
    except grpc.RpcError as exc:
        typer.echo(f"error: run {run_id}: {exc.code().name}: {exc.details()}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(path))
