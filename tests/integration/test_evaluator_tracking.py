"""A run with ``tracking:`` on sends its per-iteration metrics, decisions and loss curves to MLflow (a
local file store) or TensorBoard (a log folder), read back here with each tool's own reader; the
evaluator drives the loop against the real broker and object store with the fake stages."""

from __future__ import annotations

import time

import pytest

from tests.support.evaluator_kit import Loop, metric

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SCRIPT = {"eval": [[0.7, 0.4, 0.001], [0.5, 0.7, 0.2]], "loss": [[2.0, 1.0], [1.5, 1.2]]}
CONFIG = """
budget: {iterations: 2}
acquisition: {shards: 2}
task: {dev_size: 20}
tracking: {backend: BACKEND, uri: "URI"}
"""


@pytest.fixture
def loop(stack, unique_name, tmp_path):
    loop = Loop(stack, unique_name, tmp_path, SCRIPT)
    yield loop
    loop.stop()


def eventually(check, timeout: float = 20.0):
    """``check()``'s value once it is truthy (the tracking of the run's end follows its snapshot)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if value := check():
                return value
        except (KeyError, IndexError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("tracking did not catch up")
        time.sleep(0.3)


async def test_mlflow_file_store_gets_every_iteration(loop, unique_name, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 opens a file store on request

    rid, uri = unique_name, f"file://{tmp_path}/mlruns"
    loop.start(CONFIG.replace("BACKEND", "mlflow").replace("URI", uri), run_id=rid)
    assert loop.wait_done(rid).state == "completed"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("selfimprove").experiment_id

    def finished():
        runs = client.search_runs([experiment], f"tags.`selfimprove.run_id` = '{rid}'")
        loop_runs = [r for r in runs if r.data.tags.get("selfimprove.kind") == "loop"]
        return loop_runs[0] if loop_runs and loop_runs[0].info.status == "FINISHED" else None

    run = eventually(finished)
    assert run.info.run_name == rid

    def history(key, run_id=run.info.run_id):
        return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

    assert history("loop/candidate_accuracy") == [(1, 0.7), (2, 0.5)]
    assert history("loop/promoted") == [(1, 1.0), (2, 0.0)]
    assert history("decision/promote") == [(1, 1.0)] and history("decision/reject") == [(2, 1.0)]
    assert history("eval/dev/p_value") == [(1, 0.001), (2, 0.2)]
    assert history("train/final_loss") == [(1, 1.0), (2, 1.2)]
    decisions = [a.path for a in client.list_artifacts(run.info.run_id, "decisions")]
    assert any("-promote-" in p for p in decisions) and any("-stop-" in p for p in decisions)
    for iteration, (first, last) in enumerate(SCRIPT["loss"], start=1):
        [child] = client.search_runs([experiment], f"tags.`selfimprove.iteration` = '{iteration}'")
        assert child.data.tags["selfimprove.run_id"] == rid
        curve = history("train/loss", child.info.run_id)
        assert [s for s, _ in curve] == list(range(1, 11))
        assert curve[0][1] == pytest.approx(first) and curve[-1][1] == pytest.approx(last)
    assert metric(loop.evaluator, "selfimprove_tracking_errors_total") == 0


async def test_tensorboard_log_folder_gets_every_iteration(loop, unique_name, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rid, logdir = unique_name, tmp_path / "tb"
    loop.start(CONFIG.replace("BACKEND", "tensorboard").replace("URI", str(logdir)), run_id=rid)
    assert loop.wait_done(rid).state == "completed"

    def read(folder):
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        return events

    def stopped():
        events = read(logdir / rid)
        texts = [t.tensor_proto.string_val[0].decode() for t in events.Tensors("decisions")]
        return (events, texts) if any(t.startswith("stop:") for t in texts) else None

    events, texts = eventually(stopped)
    scalars = {e.step: e.value for e in events.Scalars("loop/candidate_accuracy")}
    assert scalars == pytest.approx({1: 0.7, 2: 0.5})
    assert [e.step for e in events.Scalars("decision/promote")] == [1]
    assert any(t.startswith("promote:") for t in texts) and any(t.startswith("reject:") for t in texts)
    for iteration in (1, 2):
        curve = read(logdir / rid / f"iter-{iteration:03d}").Scalars("train/loss")
        assert [e.step for e in curve] == list(range(1, 11))
    assert metric(loop.evaluator, "selfimprove_tracking_errors_total") == 0
