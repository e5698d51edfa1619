"""``selfimprove status RUN``: a run's state, decisions and lineage, from the evaluator's control plane;
``selfimprove stop RUN``: end a run (its state and artifacts stay; a stopped run is not resumed).

selfimprove status run-1a2b3c4d
selfimprove status run-1a2b3c4d --json --address evaluator:50052
selfimprove stop run-1a2b3c4d --reason "wrong config"
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from selfimprove.cli.control import Address, call, control_stub


def register(app: typer.Typer) -> None:
    """Add ``status``, ``stop`` and ``gc`` to the ``selfimprove`` command."""
    from selfimprove.cli.gc import gc_cmd

    app.command("status")(status_cmd)
    app.command("stop")(stop_cmd)
    app.command("gc")(gc_cmd)


def status_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    address: Address = None,
) -> None:
    """Show a run: state, iteration, stage, incumbent, accuracy per iteration, decisions and lineage."""
    from google.protobuf import json_format

    from selfimprove.v2 import control_pb2

    stub, target = control_stub(address)
    request = control_pb2.GetRunStatusRequest(run_id=run_id)
    status = call(f"status of {run_id} from {target}", lambda: stub.GetRunStatus(request, timeout=10)).status
    lineage = json.loads(status.lineage_json or "{}")
    if json_out:
        body = json_format.MessageToDict(status, preserving_proto_field_name=True)
        body["lineage"] = lineage
        body.pop("lineage_json", None)
        typer.echo(json.dumps(body, indent=2))
        return
    _print(status, lineage)


def stop_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    reason: Annotated[str, typer.Option(help="Recorded as the run's stop reason.")] = "stopped by the user",
    address: Address = None,
) -> None:
    """Stop a run: no further command is sent; running stages finish and their results are ignored."""
    from selfimprove.v2 import control_pb2

    stub, target = control_stub(address)
    request = control_pb2.StopRunRequest(run_id=run_id, reason=reason)
    reply = call(f"stop {run_id} at {target}", lambda: stub.StopRun(request, timeout=30))
    typer.echo(f"run {run_id}: {reply.state}")


def phrasing_line(history: list[dict]) -> str:
    """The held-out-phrasing split beside dev, per evaluated iteration (empty: the task has none).

    >>> phrasing_line([{"iteration": 1, "incumbent_accuracy": 0.4, "candidate_accuracy": 0.6,
    ...                 "heldout_phrasing_incumbent_accuracy": 0.3, "heldout_phrasing_candidate_accuracy": 0.35}])
    'held-out phrasing per iteration (incumbent→candidate, dev in brackets): 1: 0.300→0.350 (0.400→0.600)'
    >>> phrasing_line([{"iteration": 1, "incumbent_accuracy": 0.4}])
    ''
    """
    cells = [
        f"{r['iteration']}: {r['heldout_phrasing_incumbent_accuracy']:.3f}→"
        f"{r['heldout_phrasing_candidate_accuracy']:.3f} "
        f"({r.get('incumbent_accuracy', 0.0):.3f}→{r.get('candidate_accuracy', 0.0):.3f})"
        for r in history
        if "heldout_phrasing_candidate_accuracy" in r
    ]
    if not cells:
        return ""
    return "held-out phrasing per iteration (incumbent→candidate, dev in brackets): " + ", ".join(cells)


def _print(status, lineage: dict) -> None:
    from selfimprove.v2.common_pb2 import Stage
    from selfimprove.v2.stages_pb2 import Decision

    echo = typer.echo
    echo(f"run {status.run_id}: {status.state}" + (f" ({status.stop_reason})" if status.stop_reason else ""))
    echo(f"  iteration {status.iteration}, stage {Stage.Name(status.stage).removeprefix('STAGE_').lower()}")
    for p in status.progress:
        done, total, unit = p.progress.done, p.progress.total, p.progress.unit
        echo(
            f"    shard {p.shard}: {done}/{total or '?'} {unit}" + (f" ({done / total:.0%})" if total else "")
        )
    echo(f"  incumbent {status.incumbent.version or status.incumbent.base}")
    echo("  accuracy per iteration: " + ", ".join(f"{a:.3f}" for a in status.accuracy))
    if phrasing := phrasing_line(lineage.get("history", [])):
        echo("  " + phrasing)
    echo(f"  code {lineage.get('code_version', '?')}, tokens used {lineage.get('tokens_used', 0):.0f}")
    echo("decisions:")
    for d in status.decisions:
        echo(f"  {Decision.Kind.Name(d.kind).removeprefix('KIND_').lower():8} {d.reason}")
    echo("models:")
    for m in lineage.get("models", []):
        mark = "promoted" if m.get("promoted") else "candidate"
        echo(
            f"  {m.get('version')} [{mark}] adapter={m.get('adapter', {}).get('uri', '-')} from={m.get('trained_from', [])}"
        )
