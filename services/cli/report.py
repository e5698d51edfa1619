"""``selfimprove report RUN``: write the run's report (Markdown plus PNG plots).

It reads the run through the evaluator's control plane and its artifacts from the store
(``SELFIMPROVE_S3_*``), and evaluates the base model and every promoted model on the test sets the
run's config declares (``evaluation.test_sets``; greedy, each set's verifier), ``--limit`` items per
set (0: all), with the final model's paired difference from the base per set. A run that declares
none gets no test-set evaluation and needs no evaluation files.
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


def evaluate_models(
    models: list[tuple[str, dict]], test_sets: list, limit: int | None, threads: int, quiet: bool = False
) -> tuple[dict, dict]:
    """Scores of every model on every test set (label -> set -> score), and the last model minus the
    first (the final promoted model minus the base) on the same items, per set; a bar per model and
    set on stderr (none when ``quiet``)."""
    from selfimprove.cli.modelref import local_model
    from selfimprove.cli.progress import bars, quiet_loading, spinner
    from selfimprove.runtime.engine import make_engine
    from selfimprove.runtime.evaluate import evaluate_set, load_test_set
    from selfimprove.runtime.stats import mcnemar

    loaded = [load_test_set(s, limit=limit) for s in test_sets]  # a bad file fails before any model loads
    results: dict[str, dict] = {}
    outcomes: dict[str, dict[str, tuple[bool, ...]]] = {}
    quiet_loading()
    for label, model in models:
        with spinner(f"report: loading the {label} model ...", quiet):
            base, adapter = local_model(model)
            engine = make_engine(
                "transformers", base=base, adapters=[adapter] if adapter else [], threads=threads
            )
        results[label], outcomes[label] = {}, {}
        with bars(quiet) as progress:
            tasks = [
                progress.add_task(f"report: {label} · {s.name}", total=len(s.items), unit="problems")
                for s in loaded
            ]
            scored = [
                evaluate_set(engine, s, progress=lambda k, t=task: progress.advance(t, k))
                for s, task in zip(loaded, tasks, strict=True)
            ]
        for s, r in zip(loaded, scored, strict=True):
            outcomes[label][s.name] = r.outcomes
            results[label][s.name] = {
                "accuracy": r.accuracy.value,
                "low": r.accuracy.low,
                "high": r.accuracy.high,
                "n": r.accuracy.n,
            }
    paired: dict[str, dict] = {}
    if len(models) > 1:
        first, last = models[0][0], models[-1][0]
        for s in loaded:
            p = mcnemar(outcomes[first][s.name], outcomes[last][s.name])
            paired[s.name] = {
                "final": last,
                "delta": p.delta,
                "low": p.low,
                "high": p.high,
                "p_value": p.p_value,
            }
    return results, paired


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
        from selfimprove.cli.evalsets import declared_test_sets

        test_sets = declared_test_sets(facts.lineage.get("config") or "", f"run {run_id}'s config")
        if test_sets:
            facts.benchmark, facts.paired = evaluate_models(
                benchmark_models(facts.lineage), test_sets, limit, max(1, os.cpu_count() or 1)
            )
        else:
            facts.benchmark_note = "No test sets declared (the run config has no evaluation.test_sets)."
    path = render(facts, out or Path("reports") / run_id)
    from selfimprove.evaluator.trackers import log_report_plots

    if said := log_report_plots(facts.lineage.get("config") or "", run_id, path.parent):
        typer.echo(said, err=True)
    return path


def report_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    address: Annotated[str | None, typer.Option(help="Evaluator control plane host:port.")] = None,
    limit: Annotated[int, typer.Option(help="Items per test set (0: all).")] = 200,
    out: Annotated[Path | None, typer.Option(help="Output folder (default reports/RUN).")] = None,
    benchmark: Annotated[
        bool, typer.Option(help="Evaluate base and promoted models on the run's declared test sets.")
    ] = True,
) -> None:
    """Write a run's report: accuracy per iteration, test sets, data, losses, refinement, decisions."""
    import grpc

    from selfimprove.runtime.benchmarks import BenchmarkNotFoundError

    try:
        path = write_report(run_id, address, limit or None, out, benchmark)
    except grpc.RpcError as exc:
        typer.echo(f"error: run {run_id}: {exc.code().name}: {exc.details()}", err=True)
        raise typer.Exit(1) from None
    except (ValueError, BenchmarkNotFoundError) as exc:  # a declared test set that cannot be read
        typer.echo(f"error: run {run_id}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(path))
