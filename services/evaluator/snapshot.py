"""Run snapshots in the artifact store: ``runs/<run>/state/snapshot.json``, one object per run,
replaced by a single PUT (atomic: a reader sees the old or the new one, never half).

The snapshot is the evaluator's own layout. What stage services need of it, whether the run has
ended, is written beside it as the run's end record (:mod:`selfimprove.core.runend`).
"""

from __future__ import annotations

import logging

from selfimprove.core.keys import run_state_key
from selfimprove.core.runend import RunEnd, write_run_end
from selfimprove.core.store import ArtifactNotFoundError, ArtifactStore
from selfimprove.evaluator.state import RUNNING, RunState

log = logging.getLogger(__name__)


def snapshot_key(run_id: str) -> str:
    """The snapshot object of a run.

    >>> snapshot_key("r1")
    'runs/r1/state/snapshot.json'
    """
    return run_state_key(run_id)


def run_end(state: RunState) -> RunEnd:
    """The run's end record: ``running``, or its final status with the iteration it ended in and
    the last attempt commanded of each slot (commands up to those were sent before the end).

    >>> from selfimprove.evaluator.state import Slot
    >>> run_end(RunState("r", "", status="stopped", iteration=2, slots={"select": Slot(attempt=3)}))
    RunEnd(status='stopped', iteration=2, attempts={'select': 3})
    >>> run_end(RunState("r", "", iteration=2, slots={"select": Slot(attempt=3)}))
    RunEnd(status='running', iteration=0, attempts={})
    """
    if state.active:
        return RunEnd(RUNNING)
    return RunEnd(state.status, state.iteration, {k: s.attempt for k, s in state.slots.items()})


def save(store: ArtifactStore, state: RunState, previous: RunState | None = None) -> None:
    """Write the run's snapshot, after its end record when that may have changed: every save of an
    ended run (so a lost record is written again) and the save that resumes one (``previous`` ended).
    The record goes first: a crash between the two leaves the input unapplied, and its redelivery
    writes both again."""
    if not state.active or (previous is not None and not previous.active):
        write_run_end(store, state.run_id, run_end(state))
    store.put_bytes(snapshot_key(state.run_id), state.to_json(), "application/json")


def load(store: ArtifactStore, run_id: str) -> RunState | None:
    try:
        return RunState.from_json(store.read_key(snapshot_key(run_id)))
    except ArtifactNotFoundError:
        return None


def load_all(store: ArtifactStore) -> list[RunState]:
    """Every run with a readable snapshot; an unreadable one is logged and left out (one bad object
    must not keep the evaluator from serving every other run)."""
    out = []
    for run_id in store.list_folders("runs/"):
        try:
            state = load(store, run_id)
        except (ValueError, TypeError, AttributeError) as exc:
            log.error("snapshot of run %s is unreadable, run not loaded: %s", run_id, exc)
            continue
        if state is not None:
            out.append(state)
    return out
