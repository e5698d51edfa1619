"""Run snapshots in the real object store: one unreadable snapshot does not keep the evaluator from
loading every other run."""

import pytest

from selfimprove.evaluator.snapshot import load_all, save, snapshot_key
from selfimprove.evaluator.state import RunState
from tests.support.buskit import artifact_store

pytestmark = pytest.mark.integration


def test_unreadable_snapshots_are_left_out(stack, unique_name):
    store = artifact_store(stack)
    good = RunState(run_id=f"{unique_name}-good", config_yaml="{}", status="stopped", iteration=3)
    save(store, good)
    store.put_bytes(snapshot_key(f"{unique_name}-fields"), b'{"status": "stopped"}')  # no run id or config
    store.put_bytes(snapshot_key(f"{unique_name}-json"), b"{not json")
    store.put_bytes(snapshot_key(f"{unique_name}-list"), b"[1, 2]")
    loaded = {s.run_id: s for s in load_all(store) if s.run_id.startswith(unique_name)}
    assert list(loaded) == [f"{unique_name}-good"]
    assert loaded[f"{unique_name}-good"].iteration == 3 and loaded[f"{unique_name}-good"].status == "stopped"
