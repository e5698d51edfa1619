"""What the loop sends to an experiment tracker (``tracking:`` in the run config), as a pure function
of one transition, and the interface a tracker backend implements (``trackers.py``).

``changes(before, after, input)`` compares the run's state before and after handling one input and
says what is new. Metric names, each at step = the iteration:

- ``loop/<field>``: the iteration's history row as it fills (samples, yield, kept, diversity,
  candidate_accuracy, incumbent_accuracy, p_value, promoted, stage seconds ...)
- ``decision/<kind>``: 1 for each decision of that kind (promote, reject, continue, retry, stop, rollback)
- ``<stage>/<stat>``: an accepted select, train, evaluate or refine result's statistics
- ``eval/<suite>/<field>``: each evaluated suite's scores; ``refine/<strategy>/<field>``: the
  refinement table
- ``train/loss``: the training's loss curve, step = optimizer step (one curve per iteration)

>>> from selfimprove.evaluator.state import RunState
>>> before = RunState("r", "", history=[{"iteration": 1, "accuracy": None}])
>>> after = RunState("r", "", history=[{"iteration": 1, "accuracy": None, "kept": 12, "promoted": True}],
...                  decisions=[{"kind": "promote", "iteration": 1, "reason": "better"}])
>>> c = changes(before, after)
>>> [(p.key, p.value, p.step) for p in c.points]
[('loop/kept', 12.0, 1), ('loop/promoted', 1.0, 1), ('decision/promote', 1.0, 1)]
>>> [d["reason"] for d in c.decisions], c.ended
(['better'], '')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from selfimprove.evaluator.commands import STAGE_NAME
from selfimprove.evaluator.decide import result_record
from selfimprove.evaluator.state import RUNNING, RunState
from selfimprove.v2.envelope_pb2 import Envelope

RUN_TAG = "selfimprove.run_id"  # the tag (MLflow) that links a tracking run to its selfimprove run
STAGE_RESULTS = ("select_result", "train_result", "evaluate_result", "refine_result")


@dataclass(frozen=True)
class Point:
    """One metric value at a step."""

    key: str
    value: float
    step: int


@dataclass
class Changes:
    """What one transition adds to the run's tracking record."""

    points: list[Point] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # as the state keeps them
    curve: dict[str, Any] = field(default_factory=dict)  # an accepted train record, whose curve to log
    curve_step: int = 0  # its iteration
    ended: str = ""  # the run's status, when this transition ended it

    def __bool__(self) -> bool:
        return bool(self.points or self.decisions or self.curve or self.ended)


class Tracker(Protocol):
    """One tracking run of one selfimprove run. Logging at a step twice must be harmless."""

    def log_points(self, points: Sequence[Point]) -> None: ...

    def log_decisions(self, decisions: Sequence[dict[str, Any]]) -> None: ...

    def log_curve(self, iteration: int, key: str, points: Sequence[tuple[int, float]]) -> None: ...

    def log_files(self, paths: Sequence[Path], folder: str) -> None: ...

    def end(self, status: str) -> None: ...


class NullTracker:
    """Tracking off: every call does nothing."""

    def log_points(self, points: Sequence[Point]) -> None:
        pass

    def log_decisions(self, decisions: Sequence[dict[str, Any]]) -> None:
        pass

    def log_curve(self, iteration: int, key: str, points: Sequence[tuple[int, float]]) -> None:
        pass

    def log_files(self, paths: Sequence[Path], folder: str) -> None:
        pass

    def end(self, status: str) -> None:
        pass


def numbers(data: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The finite numeric fields of ``data`` as metrics named ``prefix + field``: booleans as 0/1,
    int64 fields (JSON strings) as numbers, a mapping of numbers one level down (``field/key``);
    text, lists and references are left out.

    >>> numbers({"kept": 3, "ok": True, "tokens": "500", "name": "dev", "p": float("nan"),
    ...          "by": {"add2": 0.5}, "ref": {"uri": "s3://x"}, "n": [1, 2]}, "s/")
    {'s/kept': 3.0, 's/ok': 1.0, 's/tokens': 500.0, 's/by/add2': 0.5}
    """
    out: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            inner = {k: _number(v) for k, v in value.items()}
            if inner and all(v is not None for v in inner.values()):
                out.update({f"{prefix}{key}/{k}": v for k, v in inner.items() if v is not None})
            continue
        number = _number(value)
        if number is not None:
            out[prefix + key] = number
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    numeric = isinstance(value, int | float) or (isinstance(value, str) and value.lstrip("-").isdigit())
    if not numeric:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def record_points(stage: str, record: Mapping[str, Any], step: int) -> list[Point]:
    """The metrics of an accepted stage result (``decide.result_record``).

    >>> [(p.key, p.value) for p in record_points("evaluate", {"suites": [{"name": "dev",
    ...     "candidate_accuracy": 0.6, "n": 20}], "stats": {"tokens": "200"}}, 1)]
    [('evaluate/tokens', 200.0), ('eval/dev/candidate_accuracy', 0.6), ('eval/dev/n', 20.0)]
    """
    metrics = numbers(record.get("stats") or {}, f"{stage}/")
    for suite in record.get("suites") or []:
        metrics.update(numbers(suite, f"eval/{suite.get('name', '')}/"))
    for row in record.get("table") or []:
        metrics.update(numbers(row, f"refine/{row.get('strategy', '')}/"))
    return [Point(k, v, step) for k, v in metrics.items()]


def loss_points(curve: Any) -> list[tuple[int, float]]:
    """``(step, loss)`` of a trainer's loss curve (a list of points, or ``{"points": [...]}``);
    points without a finite loss are left out.

    >>> loss_points([{"step": 1, "loss": 2.5}, {"step": 2, "loss": float("nan")}, {"loss": 1.5}])
    [(1, 2.5), (3, 1.5)]
    """
    points = curve.get("points", []) if isinstance(curve, Mapping) else curve or []
    out = []
    for i, p in enumerate(points, start=1):
        loss = _number(p.get("loss")) if isinstance(p, Mapping) else None
        if loss is not None:
            out.append((int(p.get("step") or i), loss))
    return out


def changes(before: RunState | None, after: RunState, received: Envelope | None = None) -> Changes:
    """What handling ``received`` (a stage result or run control; ``None``: a timer tick) added to
    the run: new or changed history fields, new decisions, the accepted result's statistics (and its
    loss curve, for a training), and the run's end."""
    out = Changes()
    old_rows = {r["iteration"]: r for r in (before.history if before else [])}
    for row in after.history:
        step = int(row["iteration"])
        old = numbers(old_rows.get(step, {}), "loop/")
        new = numbers(row, "loop/")
        out.points += [Point(k, v, step) for k, v in new.items() if k != "loop/iteration" and old.get(k) != v]
    new_decisions = after.decisions[len(before.decisions) if before else 0 :]
    out.decisions = list(new_decisions)
    out.points += [Point(f"decision/{d['kind']}", 1.0, int(d["iteration"])) for d in new_decisions]
    payload = received.WhichOneof("payload") if received is not None else None
    if received is not None and payload in STAGE_RESULTS and _newly_accepted(before, after, received):
        stage = STAGE_NAME.get(received.stage, "")
        record = result_record(received, stage)
        out.points += record_points(stage, record, received.iteration)
        if stage == "train":
            out.curve, out.curve_step = record, received.iteration
    if after.status != RUNNING and (before is None or before.status == RUNNING):
        out.ended = after.status
    return out


def _newly_accepted(before: RunState | None, after: RunState, received: Envelope) -> bool:
    return received.event_id in after.accepted_ids and (
        before is None or received.event_id not in before.accepted_ids
    )
