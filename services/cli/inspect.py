"""``selfimprove inspect dev|training RUN``: look back at a finished run from its stopped local stack
folder (``--data-dir``), without the control plane: where an iteration's candidate is right on the
dev set, and how fast the trainer trained, iteration by iteration. The records are read from the
store (:mod:`selfimprove.cli.runstore`) and summarised by :mod:`selfimprove.cli.runlook`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Look back at a finished run in a stopped local stack folder.")

DataDir = Annotated[Path, typer.Option(help="The run's local stack folder (the stack must not be running).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _read(data_dir: Path, run_id: str, stage: str, filename: str, iteration: int | None = None) -> dict:
    from selfimprove.cli.runstore import read_latest

    if not data_dir.is_dir():
        raise typer.BadParameter(f"{data_dir} is not a folder", param_hint="--data-dir")
    try:
        return read_latest(data_dir, run_id, stage, filename, iteration)
    except LookupError as e:
        raise typer.BadParameter(str(e), param_hint="RUN") from None


@app.command("dev")
def dev_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    iteration: Annotated[int, typer.Option(min=1, help="The iteration whose evaluation to read.")] = 1,
    data_dir: DataDir = Path(".stack"),
    as_json: Json = False,
) -> None:
    """An iteration's dev results: each suite's paired score, then per model right / items by
    operation and by phrasing, and how the wrong answers miss."""
    from selfimprove.cli.runlook import dev_breakdown
    from selfimprove.evaluator.paired import suite_score

    [data] = _read(data_dir, run_id, "evaluate", "details.jsonl", iteration).values()
    every = [json.loads(line) for line in data.splitlines() if line.strip()]
    suites = {
        suite: suite_score(
            suite,
            [r["incumbent_ok"] for r in every if r["suite"] == suite],
            [r["candidate_ok"] for r in every if r["suite"] == suite],
        )
        for suite in dict.fromkeys(r["suite"] for r in every)
    }
    out = {"suites": suites, "dev": dev_breakdown([r for r in every if r["suite"] == "dev"])}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for suite, s in suites.items():
        typer.echo(
            f"suite {suite}: incumbent {s['incumbent_accuracy']:.4f}, candidate "
            f"{s['candidate_accuracy']:.4f} of {s['n']}, p = {s['p_value']:.4f}"
        )
    dev = out["dev"]
    for model in ("incumbent", "candidate"):
        d = dev[model]
        right = ", ".join(f"{k} {d['right'][k]}/{n}" for k, n in dev["items"].items())
        typer.echo(f"{model}: {right}, worked form {d['worked_form']}/{sum(dev['items'].values())}")
        phr = ", ".join(f"{p} {d['by_phrasing'][p]}/{n}" for p, n in dev["phrasings"].items())
        typer.echo(f"{model} by phrasing: {phr}")
        for k, misses in d["misses"].items():
            typer.echo(f"{model} wrong {k}: " + ", ".join(f"{m} {c}" for m, c in misses.items()))
        steps = ", ".join(f"{k} {v}" for k, v in d["first_false_step"].items())
        typer.echo(f"{model} wrong worked replies, first false step: {steps or 'none'}")


@app.command("training")
def training_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    data_dir: DataDir = Path(".stack"),
    as_json: Json = False,
) -> None:
    """The trainer's speed per iteration (its latest attempt), from the stored loss curves: steps,
    examples, tokens, seconds inside the training loop, examples/s; then the run's totals."""
    from selfimprove.cli.runlook import curve_summary

    rows = []
    for (iteration, _), data in sorted(_read(data_dir, run_id, "train", "loss_curve.json").items()):
        curve = json.loads(data)
        points = curve if isinstance(curve, list) else curve.get("points", [])
        rows.append({"iteration": iteration, **curve_summary(points)})
    keys = ("steps", "examples", "tokens", "seconds")
    total = {k: sum(r[k] for r in rows) for k in keys}
    total["seconds"] = round(total["seconds"], 3)
    total["examples_per_s"] = round(total["examples"] / total["seconds"], 2) if total["seconds"] else 0.0
    if as_json:
        typer.echo(json.dumps({"run": run_id, "iterations": rows, "total": total}, indent=2))
        return
    for r in rows + [{"iteration": "all", **total}]:
        typer.echo("  ".join(f"{k} {v}" for k, v in r.items()))
