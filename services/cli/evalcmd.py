"""``selfimprove eval``: accuracy of a model on test sets, with 95 % intervals; with ``--against``, the
paired difference between two models on the same items (exact McNemar test).

selfimprove eval --limit 200
selfimprove eval --benchmark two_digit_addition --adapter runs/x/adapter --json
selfimprove eval --task svamp_test.jsonl --verifier numeric --limit 100
selfimprove eval --task configs/run.yaml --model run:RUN_ID --against smollm2-135m-instruct
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

MODEL_FORMS = "'smollm2-135m-instruct', a model folder, run:RUN_ID (incumbent) or run:RUN_ID@ITER."


def eval_cmd(
    model: Annotated[str, typer.Option(help=MODEL_FORMS)] = "smollm2-135m-instruct",
    benchmark: Annotated[
        str | None,
        typer.Option(help="'gpt3' (all six sets, the default), a set name, or a JSONL path in GPT-3 form."),
    ] = None,
    task: Annotated[
        Path | None,
        typer.Option(
            help="A run config (.yaml: every evaluation.test_sets entry) or a data file (.jsonl, .csv, "
            ".parquet or a save_to_disk folder) scored with the field and verifier options below."
        ),
    ] = None,
    prompt_field: Annotated[
        str | None, typer.Option(help="Data file: the field holding the question [default: question].")
    ] = None,
    answer_field: Annotated[
        str | None, typer.Option(help="Data file: the field holding the reference answer [default: answer].")
    ] = None,
    id_field: Annotated[str | None, typer.Option(help="Data file: a field with a stable row id.")] = None,
    template: Annotated[
        str | None, typer.Option(help="Data file: the prompt made from the row's fields, e.g. '{question}'.")
    ] = None,
    verifier: Annotated[
        str | None,
        typer.Option(
            help="Data file: numeric, exact, choice, regex or package.module:function [default: exact, "
            "the reply's last line equal to the answer; use numeric for number answers]."
        ),
    ] = None,
    verifier_param: Annotated[
        list[str] | None, typer.Option(help="Data file: a verifier parameter KEY=VALUE (repeatable).")
    ] = None,
    against: Annotated[
        str | None, typer.Option(help="A second model scored on the same items: " + MODEL_FORMS)
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=0, help="Evaluate the first N items of each set (0 or unset: all).")
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="Inference strategy (those that need the verifier are refused).")
    ] = "greedy",
    adapter: Annotated[
        Path | None,
        typer.Option(
            help="A LoRA adapter folder (PEFT) applied on --model, or a whole model folder (full "
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
    """Evaluate a model on test sets: the GPT-3 arithmetic sets (greedy, last signed integer, exact
    match), a run config's evaluation.test_sets, or a data file; optionally against a second model."""
    from selfimprove.cli.modelref import ModelRefError, resolve
    from selfimprove.runtime.evaluate import check_strategy

    models = []
    for option, ref, extra in (("--model", model, adapter), ("--against", against, None)):
        if ref is None:
            continue
        try:
            name, run_adapter = resolve(ref, address)
        except ModelRefError as exc:
            raise typer.BadParameter(str(exc), param_hint=option) from None
        models.append((name, extra or run_adapter))
    data_flags = {
        "--prompt-field": prompt_field,
        "--answer-field": answer_field,
        "--id-field": id_field,
        "--template": template,
        "--verifier": verifier,
        "--verifier-param": verifier_param,
    }
    sets = _test_sets(task, benchmark, data_flags)
    try:
        check_strategy(strategy)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--strategy") from None
    loaded = _load(sets, benchmarks_dir, limit or None, "--task" if task else "--benchmark")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    options = {"threads": threads, "batch_size": batch_size} if backend == "transformers" else {}
    results = [
        _evaluate(name, a, loaded, strategy, backend, options, quiet=json_out, option=opt)
        for (name, a), opt in zip(models, ("--model", "--against"), strict=False)
    ]
    if json_out:
        typer.echo(json.dumps(_json(models, results, strategy, task), indent=2))
    else:
        _table(models, results, strategy)


def _evaluate(
    name: str,
    adapter,
    loaded: list,
    strategy: str,
    backend: str,
    options: dict,
    quiet: bool,
    option: str = "--model",
) -> list:
    """Every loaded set scored by one model (loaded here, freed after: one model in memory at a
    time), with a spinner while it loads and a bar per set on stderr (none when ``quiet``). A model
    that cannot be loaded (a missing or corrupt folder) is ``typer.BadParameter`` naming ``option``."""
    from selfimprove.cli.progress import bars, quiet_loading, spinner
    from selfimprove.runtime.engine import make_engine
    from selfimprove.runtime.evaluate import evaluate_set
    from selfimprove.runtime.models import ModelNotFoundError

    label = f"{name} + {Path(adapter).name}" if adapter else name
    quiet_loading()
    try:
        with spinner(f"loading {label} ...", quiet):
            engine = make_engine(backend, base=name, adapters=[adapter] if adapter else [], **options)
    except ModelNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    out = []
    with bars(quiet) as progress:
        tasks = [
            progress.add_task(f"{label} · {s.name}", total=len(s.items), unit="problems") for s in loaded
        ]
        for s, task in zip(loaded, tasks, strict=True):
            out.append(evaluate_set(engine, s, strategy, progress=lambda k, t=task: progress.advance(t, k)))
    return out


def _test_sets(task: Path | None, benchmark: str | None, data_flags: dict) -> list:
    """The test sets the options name, or ``typer.BadParameter`` naming the option at fault."""
    from selfimprove.cli.evalsets import (
        EvalSetError,
        benchmark_sets,
        config_sets,
        file_set,
        is_config,
        parse_params,
    )
    from selfimprove.runtime.tasks.verifiers import VerifierError, make_verifier

    given = [flag for flag, value in data_flags.items() if value]
    if task is not None and benchmark is not None:
        raise typer.BadParameter("give --task or --benchmark, not both", param_hint="--task")
    try:
        if task is None:
            if given:
                raise typer.BadParameter(
                    f"{given[0]} describes a data file: use it with --task FILE", param_hint=given[0]
                )
            return benchmark_sets(benchmark or "gpt3")
        if not task.exists():
            raise EvalSetError(f"no such run config or data file {task}")
        if is_config(task):
            if given:
                raise typer.BadParameter(
                    f"{given[0]} describes a data file; {task} is a run config, whose test sets describe themselves",
                    param_hint=given[0],
                )
            return config_sets(task)
        name, params = data_flags["--verifier"] or "exact", parse_params(data_flags["--verifier-param"] or [])
        try:
            make_verifier(name, params)
        except VerifierError as exc:
            hint = "--verifier-param" if params else "--verifier"
            raise typer.BadParameter(str(exc), param_hint=hint) from None
        return [
            file_set(
                task,
                prompt=data_flags["--prompt-field"] or "question",
                answer=data_flags["--answer-field"] or "answer",
                id_field=data_flags["--id-field"],
                template=data_flags["--template"],
                verifier=name,
                verifier_params=params,
            )
        ]
    except EvalSetError as exc:
        raise typer.BadParameter(str(exc), param_hint="--task" if task else "--benchmark") from None


def _load(sets: list, benchmarks_dir: Path | None, limit: int | None, option: str) -> list:
    """Every set's items and verifier, read before any model loads, so a bad file fails at once."""
    from selfimprove.runtime.benchmarks import BenchmarkNotFoundError
    from selfimprove.runtime.evaluate import load_test_set

    try:
        return [load_test_set(s, benchmarks_dir, limit) for s in sets]
    except (ValueError, BenchmarkNotFoundError) as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _score(r) -> dict:
    a = r.accuracy
    return {
        "n": a.n,
        "correct": a.correct,
        "accuracy": round(a.value, 4),
        "ci95": [round(a.low, 4), round(a.high, 4)],
        "tokens": r.tokens,
        "seconds": round(r.seconds, 1),
    }


def _paired(mine, theirs) -> dict:
    """``--model`` minus ``--against`` on the same items: the delta, its 95 % interval, the exact
    McNemar p-value and the discordant counts."""
    from selfimprove.runtime.stats import mcnemar

    p = mcnemar(theirs.outcomes, mine.outcomes)
    return {
        "delta": round(p.delta, 4),
        "ci95": [round(p.low, 4), round(p.high, 4)],
        "p_value": round(p.p_value, 6),
        "model_only": p.b_only,
        "against_only": p.a_only,
    }


def _json(models: list, results: list, strategy: str, task: Path | None) -> dict:
    (model, adapter), mine = models[0], results[0]
    out: dict = {
        "model": model,
        "adapter": str(adapter) if adapter else None,
        "strategy": strategy,
        "task": str(task) if task else None,
        "sets": [{"set": r.set_name, **_score(r)} for r in mine],
    }
    if len(models) > 1:
        other, theirs = models[1], results[1]
        out["against"] = {"model": other[0], "adapter": str(other[1]) if other[1] else None}
        for row, r, t in zip(out["sets"], mine, theirs, strict=True):
            row["against"] = _score(t)
            row["paired"] = _paired(r, t)
    return out


def _table(models: list, results: list, strategy: str) -> None:
    from rich.console import Console
    from rich.table import Table

    model = models[0][0]
    paired = len(models) > 1
    title = f"{model} vs {models[1][0]} ({strategy})" if paired else f"{model} ({strategy})"
    table = Table(title=title)
    cols = ["set", "n", "accuracy", "95% CI", "tok/s"]
    cols += ["against", "delta", "delta 95% CI", "McNemar p"] if paired else []
    for col in cols:
        table.add_column(col, justify="left" if col == "set" else "right")
    for i, r in enumerate(results[0]):
        a = r.accuracy
        row = [
            r.set_name,
            str(a.n),
            f"{a.value:.1%}",
            f"{a.low:.1%} - {a.high:.1%}",
            f"{r.tokens / max(r.seconds, 1e-9):.0f}",
        ]
        if paired:
            t = results[1][i]
            p = _paired(r, t)
            row += [
                f"{t.accuracy.value:.1%}",
                f"{p['delta']:+.1%}",
                f"{p['ci95'][0]:+.1%} - {p['ci95'][1]:+.1%}",
                f"{p['p_value']:.3g}",
            ]
        table.add_row(*row)
    Console().print(table)
