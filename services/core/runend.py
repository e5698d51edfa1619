"""Whether a run has ended: a small record the evaluator writes and every stage service reads.

The evaluator's snapshot is its own layout; what stage services need from it (refuse a command sent
before the run ended, :func:`selfimprove.core.stage.ended_before`) is this record instead, at
``runs/<run>/ended.json`` (:func:`selfimprove.core.keys.run_end_key`): the run's status and, once it
has ended, its iteration and the last attempt commanded of each slot. No record means running.

>>> end = RunEnd("stopped", 2, {"acquire/1": 1, "select": 2})
>>> RunEnd.from_json(end.to_json()) == end
True
>>> RunEnd.from_json(b'{"status": "paused"}')
Traceback (most recent call last):
...
ValueError: run end record: status 'paused' is not one of running, stopped, completed, failed
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from selfimprove.core.keys import run_end_key
from selfimprove.core.storeerrors import ArtifactNotFoundError

if TYPE_CHECKING:  # the store is passed in: this module needs no minio client of its own
    from selfimprove.core.store import ArtifactStore

log = logging.getLogger(__name__)

RUNNING = "running"
STATUSES = (RUNNING, "stopped", "completed", "failed")


@dataclass(frozen=True)
class RunEnd:
    """A run's status as stage services see it."""

    status: str
    """``running``, or how the run ended: ``stopped``, ``completed`` or ``failed``."""
    iteration: int = 0
    """The iteration the run ended in (0 while running)."""
    attempts: dict[str, int] = field(default_factory=dict)
    """Slot (``acquire/1``, ``select``, ...) -> the last attempt commanded of it in that iteration."""

    @property
    def ended(self) -> bool:
        return self.status != RUNNING

    def to_json(self) -> bytes:
        body = {"status": self.status, "iteration": self.iteration, "attempts": self.attempts}
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> RunEnd:
        """The record, checked: a field of the wrong type is a ``ValueError`` that names it."""
        try:
            body: Any = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"run end record: not JSON ({exc.msg})") from None
        if not isinstance(body, dict):
            raise ValueError(f"run end record: expected a JSON object, got {type(body).__name__}")
        status, iteration, attempts = body.get("status"), body.get("iteration", 0), body.get("attempts", {})
        if status not in STATUSES:
            raise ValueError(f"run end record: status {status!r} is not one of {', '.join(STATUSES)}")
        if not isinstance(iteration, int) or isinstance(iteration, bool):
            raise ValueError(f"run end record: iteration must be an integer, got {iteration!r}")
        if not isinstance(attempts, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in attempts.items()
        ):
            raise ValueError(f"run end record: attempts must map slot names to integers, got {attempts!r}")
        return cls(status, iteration, dict(attempts))


def write_run_end(store: ArtifactStore, run_id: str, end: RunEnd) -> None:
    """Replace the run's record (a single PUT: a reader sees the old or the new one)."""
    store.put_bytes(run_end_key(run_id), end.to_json(), "application/json")


def read_run_end(store: ArtifactStore, run_id: str) -> RunEnd | None:
    """The run's record; ``None`` when there is none (a running run, or one no evaluator started) or
    it cannot be read (logged: the command then goes ahead, and the evaluator decides what its result
    is worth)."""
    try:
        data = store.read_key(run_end_key(run_id))
    except ArtifactNotFoundError:
        return None
    try:
        return RunEnd.from_json(data)
    except ValueError as exc:
        log.warning("run %s: %s is unreadable, taken as running: %s", run_id, run_end_key(run_id), exc)
        return None
