"""A run's end record: what the evaluator writes when a run ends or resumes, and what stage services
read of it (never the evaluator's snapshot)."""

import pytest

from selfimprove.core.keys import run_end_key, run_state_key
from selfimprove.core.runend import RunEnd, read_run_end
from selfimprove.core.stage import ended_before
from selfimprove.core.store import ArtifactNotFoundError
from selfimprove.evaluator import snapshot
from selfimprove.evaluator.state import RunState, Slot
from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import SelectCommand

pytestmark = pytest.mark.unit


class MemoryStore:
    """The two single-object calls the record and the snapshot use, in memory."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []

    def put_bytes(self, key, data, media_type="application/octet-stream"):
        self.objects[key] = data
        self.puts.append(key)

    def read_key(self, key):
        if key not in self.objects:
            raise ArtifactNotFoundError(key)
        return self.objects[key]


def test_the_evaluator_writes_the_record_when_a_run_ends_and_when_it_resumes():
    store = MemoryStore()
    running = RunState("r", "", iteration=2, slots={"select": Slot(attempt=1)})
    snapshot.save(store, running)
    assert store.puts == [run_state_key("r")] and read_run_end(store, "r") is None  # no record: running
    stopped = RunState("r", "", status="stopped", iteration=2, slots={"select": Slot(attempt=1)})
    snapshot.save(store, stopped, running)
    assert read_run_end(store, "r") == RunEnd("stopped", 2, {"select": 1})
    assert store.puts[-2:] == [run_end_key("r"), run_state_key("r")]  # the record first
    resumed = RunState("r", "", iteration=2, slots={"select": Slot(attempt=2)})
    snapshot.save(store, resumed, stopped)
    assert read_run_end(store, "r") == RunEnd("running")
    store.puts.clear()
    snapshot.save(store, resumed, resumed)
    assert store.puts == [run_state_key("r")]  # a running run's saves leave the record alone


def test_a_stage_reads_only_the_record():
    store = MemoryStore()
    cmd = Envelope(
        run_id="r", iteration=2, stage=Stage.STAGE_SELECT, attempt=1, select_command=SelectCommand()
    )
    # a snapshot that says "stopped" is the evaluator's own: stage services never parse it
    store.objects[run_state_key("r")] = (
        b'{"status": "stopped", "iteration": 2, "slots": {"select": {"attempt": 1}}}'
    )
    assert ended_before(read_run_end(store, "r"), cmd) is None
    store.objects[run_end_key("r")] = RunEnd("completed", 2, {"select": 1}).to_json()
    assert ended_before(read_run_end(store, "r"), cmd) == "completed"
    store.objects[run_end_key("r")] = (
        b'{"status": "stopped", "iteration": "2"}'  # unreadable: taken as running
    )
    assert read_run_end(store, "r") is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[1]", "expected a JSON object, got list"),
        (b"{", "not JSON"),
        (b'{"status": "stopped", "iteration": true}', "iteration must be an integer"),
        (b'{"status": "stopped", "attempts": {"select": "1"}}', "attempts must map slot names to integers"),
    ],
)
def test_a_bad_record_names_what_is_wrong(body, error):
    with pytest.raises(ValueError, match=error):
        RunEnd.from_json(body)
