"""Run snapshots in the artifact store: ``runs/<run>/state/snapshot.json``, one object per run,
replaced by a single PUT (atomic: a reader sees the old or the new one, never half)."""

from __future__ import annotations

import logging

from selfimprove.core.keys import run_state_key
from selfimprove.core.store import ArtifactNotFoundError, ArtifactStore
from selfimprove.evaluator.state import RunState

log = logging.getLogger(__name__)


def snapshot_key(run_id: str) -> str:
    """The snapshot object of a run.

    >>> snapshot_key("r1")
    'runs/r1/state/snapshot.json'
    """
    return run_state_key(run_id)


def save(store: ArtifactStore, state: RunState) -> None:
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
    for obj in store.client.list_objects(store.bucket, prefix="runs/", recursive=False):
        name = (obj.object_name or "").rstrip("/")
        run_id = name.split("/", 1)[1] if "/" in name else ""
        if not run_id:
            continue
        try:
            state = load(store, run_id)
        except (ValueError, TypeError, AttributeError) as exc:
            log.error("snapshot of run %s is unreadable, run not loaded: %s", run_id, exc)
            continue
        if state is not None:
            out.append(state)
    return out
