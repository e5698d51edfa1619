"""Experiment tracking: what each transition sends (pure), the sink that never fails the run, and the
MLflow and TensorBoard backends read back from a local store."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from types import SimpleNamespace

import pytest

from selfimprove.core.topics import Topics
from selfimprove.evaluator import decide
from selfimprove.evaluator.config import ConfigError, dump_config, load_config
from selfimprove.evaluator.trackers import TrackingSink, log_report_plots, open_tracker, read_curve
from selfimprove.evaluator.tracking import Point, changes
from tests.support.fake_stages import respond

pytestmark = pytest.mark.unit
TOPICS = Topics("t")
CONFIG = """
run_id: r1
budget: {iterations: 2}
acquisition: {shards: 2}
tracking: {backend: mlflow, uri: "file:///nowhere/mlruns"}
"""
SCRIPT = {"eval": [[0.6, 0.4, 0.01], [0.5, 0.6, 0.5]], "loss": [[2.0, 1.0], [1.5, 1.2]]}
CURVE = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]


def transitions(config: str = CONFIG, script: dict | None = None):
    """Every (before, after, input) of a whole run driven by the fake stages' answers."""
    cfg = load_config(config, files=False)
    now = 1000.0
    tr = decide.start(TOPICS, cfg, dump_config(cfg), "r1", now, "start", {})
    steps = [(None, tr.state, None)]
    state, queue = tr.state, list(tr.out)
    while queue:
        out = queue.pop(0)
        if out.envelope.WhichOneof("payload") == "decision":
            continue
        for result in respond(out.envelope, script or SCRIPT):
            now += 1
            tr = decide.on_result(TOPICS, state, cfg, result, now)
            steps.append((state, tr.state, result))
            state, queue = tr.state, queue + tr.out
    return cfg, steps


def metric(points: list[Point], key: str) -> dict[int, list[float]]:
    found: dict[int, list[float]] = {}
    for p in points:
        if p.key == key:
            found.setdefault(p.step, []).append(p.value)
    return found


def test_each_iteration_sends_its_metrics_decisions_and_curve_once():
    _, steps = transitions()
    found = [changes(*step) for step in steps]
    points = [p for c in found for p in c.points]
    assert metric(points, "loop/candidate_accuracy") == {1: [0.6], 2: [0.5]}
    assert metric(points, "loop/promoted") == {1: [1.0], 2: [0.0]}
    assert metric(points, "loop/kept") == {1: [10.0], 2: [10.0]}
    assert metric(points, "decision/promote") == {1: [1.0]}
    assert metric(points, "decision/reject") == {2: [1.0]}
    assert metric(points, "decision/stop") == {2: [1.0]}
    assert metric(points, "eval/dev/p_value") == {1: [0.01], 2: [0.5]}
    assert metric(points, "train/final_loss") == {1: [1.0], 2: [1.2]}
    assert metric(points, "refine/greedy/accuracy") == {1: [0.5]}  # refined after the promotion only
    assert not metric(points, "acquire/samples")  # per shard: the history row has the iteration's sum
    decisions = [d for c in found for d in c.decisions]
    assert decisions == steps[-1][1].decisions  # every decision, each once
    assert [(c.curve_step, c.curve["stats"]["final_loss"]) for c in found if c.curve] == [(1, 1.0), (2, 1.2)]
    assert [c.ended for c in found if c.ended] == ["completed"]


def test_an_input_that_changes_nothing_sends_nothing():
    _, steps = transitions()
    before, after, received = steps[3]
    assert not changes(after, after, received)


class FakeTracker:
    def __init__(self, fail: str = "") -> None:
        self.calls: list[tuple] = []
        self.fail = fail

    def __getattr__(self, name):
        def call(*args):
            if name == self.fail:
                raise RuntimeError(f"{name} is down")
            self.calls.append((name, *args))

        return call


class CurveStore:
    def get_bytes(self, ref):
        return json.dumps(CURVE).encode()


def test_the_sink_logs_through_the_tracker_and_ends_it():
    cfg, steps = transitions()
    tracker, errors = FakeTracker(), []
    opened = []
    sink = TrackingSink(CurveStore(), errors.append, lambda c, rid: opened.append(rid) or tracker)
    for before, after, received in steps:
        if received is not None and received.WhichOneof("payload") == "train_result":
            received.train_result.loss_curve.uri = "s3://b/runs/r1/loss_curve.json"  # as the trainer sends
        sink.record(cfg, before, after, received)
    assert errors == [] and opened == ["r1"]
    names = [c[0] for c in tracker.calls]
    assert names[-1] == "end" and tracker.calls[-1][1] == "completed"
    curves = [c[1:] for c in tracker.calls if c[0] == "log_curve"]
    assert curves == [(1, "train/loss", [(1, 2.0), (2, 1.5)]), (2, "train/loss", [(1, 2.0), (2, 1.5)])]


def test_tracking_errors_are_counted_never_raised():
    cfg, steps = transitions()
    errors: list[str] = []

    def broken(c, rid):
        raise ImportError("No module named 'mlflow'")

    sink = TrackingSink(CurveStore(), errors.append, broken)
    for step in steps[:3]:  # the first acquire shard's result changes nothing to track
        sink.record(cfg, *step)
    assert errors == ["mlflow"] * 2
    errors.clear()
    sink = TrackingSink(CurveStore(), errors.append, lambda c, rid: FakeTracker(fail="log_points"))
    sink.record(cfg, *steps[0])
    assert errors == ["mlflow"]


def test_the_sink_waits_no_longer_than_its_timeout():
    cfg, steps = transitions()
    errors: list[str] = []

    def slow(c, rid):
        import time

        time.sleep(0.5)
        return FakeTracker()

    sink = TrackingSink(CurveStore(), errors.append, slow, timeout_s=0.05)
    asyncio.run(sink.after_commit(cfg, *steps[0]))
    assert errors == ["mlflow"]


def test_tracking_off_opens_nothing():
    cfg, steps = transitions(CONFIG.replace("tracking:", "#"))
    sink = TrackingSink(CurveStore(), pytest.fail, lambda c, rid: pytest.fail("opened"))
    for step in steps:
        asyncio.run(sink.after_commit(cfg, *step))


def test_the_loss_curve_is_read_from_its_file_or_the_adapter_folder():
    assert read_curve(CurveStore(), {"loss_curve": {"uri": "s3://b/x.json"}}) == [(1, 2.0), (2, 1.5)]
    folder = SimpleNamespace(
        manifest=lambda ref: SimpleNamespace(files=[SimpleNamespace(path="loss_curve.json")]),
        read_file=lambda ref, name: json.dumps({"points": CURVE}).encode(),
    )
    record = {"candidate": {"adapter": {"uri": "s3://b/a/manifest.json"}}}
    assert read_curve(folder, record) == [(1, 2.0), (2, 1.5)]
    assert read_curve(folder, {"candidate": {}}) == []


def test_the_config_block_is_checked():
    with pytest.raises(ConfigError, match="tracking.uri: the mlflow backend needs a uri"):
        load_config("tracking: {backend: mlflow}")
    with pytest.raises(ConfigError, match="tracking.backend: Input should be"):
        load_config("tracking: {backend: wandb, uri: x}")
    assert not load_config("").tracking.enabled


def test_a_tracking_run_needs_its_package_here(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ConfigError, match=r"tensorboard needs the tensorboard package.*selfimprove\[tracking\]"
    ):
        load_config("tracking: {backend: tensorboard, uri: /tmp/tb}")
    assert load_config("tracking: {backend: tensorboard, uri: /tmp/tb}", files=False).tracking.enabled


def _png(path, width=3, height=2):
    import struct
    import zlib

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def test_mlflow_file_store_round_trip(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"file://{tmp_path}/mlruns"
    cfg = load_config(f"tracking: {{backend: mlflow, uri: '{uri}'}}").tracking
    tracker = open_tracker(cfg, "r1")
    tracker.log_points([Point("loop/kept", 10.0, 1), Point("loop/kept", 12.0, 2)])
    tracker.log_decisions([{"kind": "promote", "iteration": 1, "reason": "better", "event_id": "e1"}])
    tracker.log_curve(1, "train/loss", [(1, 2.0), (2, 1.5)])
    tracker.end("completed")
    again = open_tracker(cfg, "r1")  # a restarted evaluator finds the same run by its tag
    assert again.tracking_run == tracker.tracking_run
    config_yaml = f"tracking: {{backend: mlflow, uri: '{uri}'}}"
    said = log_report_plots(config_yaml, "r1", _png(tmp_path / "accuracy.png").parent)
    assert said.startswith("tracking: 1 plots logged")
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("selfimprove").experiment_id],
        "tags.`selfimprove.run_id` = 'r1' and tags.`selfimprove.kind` = 'loop'",
    )
    assert run.info.run_name == "r1" and run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loop/kept")] == [
        (1, 10.0),
        (2, 12.0),
    ]
    [decision] = client.list_artifacts(run.info.run_id, "decisions")
    assert decision.path == "decisions/iter-001-promote-e1.json"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "report")] == ["report/accuracy.png"]
    [child] = client.search_runs([run.info.experiment_id], "tags.`selfimprove.iteration` = '1'")
    assert child.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert [m.value for m in client.get_metric_history(child.info.run_id, "train/loss")] == [2.0, 1.5]


def test_tensorboard_round_trip(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(f"tracking: {{backend: tensorboard, uri: 'file://{tmp_path}/tb'}}").tracking
    tracker = open_tracker(cfg, "r1")
    tracker.log_points([Point("loop/kept", 10.0, 1), Point("loop/kept", 12.0, 2)])
    tracker.log_decisions([{"kind": "promote", "iteration": 2, "reason": "better", "figures": {"p": 0.01}}])
    tracker.log_curve(1, "train/loss", [(1, 2.0), (2, 1.5)])
    tracker.log_files([_png(tmp_path / "accuracy.png")], "report")
    tracker.end("completed")
    events = EventAccumulator(str(tmp_path / "tb" / "r1"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loop/kept")] == [(1, 10.0), (2, 12.0)]
    [text] = events.Tensors("decisions")
    assert text.step == 2 and text.tensor_proto.string_val == [b"promote: better (p=0.01)"]
    [image] = events.Images("report/accuracy")
    assert (image.width, image.height) == (3, 2)
    curve = EventAccumulator(str(tmp_path / "tb" / "r1" / "iter-001"))
    curve.Reload()
    assert [(e.step, e.value) for e in curve.Scalars("train/loss")] == [(1, 2.0), (2, 1.5)]
