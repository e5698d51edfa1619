"""Experiment-tracker backends (MLflow, TensorBoard) and the controller's tracking sink.

A run whose config has ``tracking.backend`` set gets one tracking run: in MLflow a run named by the
selfimprove run id and tagged ``selfimprove.run_id`` (each iteration's loss curve in a child run
tagged ``selfimprove.iteration``); in TensorBoard the log folder's subfolder named by the run id
(each iteration's loss curve in ``<run id>/iter-NNN``). The packages are imported only here and only
when a run tracks; a file store needs no server.

Tracking is a side effect of the loop, never a cause of its failure: :class:`TrackingSink` runs after
the transition's snapshot is stored, logs and counts every error
(``selfimprove_tracking_errors_total``) and raises none. A redelivered input changes nothing (the
controller drops it before deciding), so nothing is logged twice; logging a step twice would be
harmless anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selfimprove.core.logs import fields
from selfimprove.core.store import ArtifactStore
from selfimprove.evaluator.config import RunConfig, TrackingConfig
from selfimprove.evaluator.state import COMPLETED, FAILED, RunState
from selfimprove.evaluator.tracking import RUN_TAG, NullTracker, Point, Tracker, changes, loss_points
from selfimprove.v2.common_pb2 import ArtifactRef
from selfimprove.v2.envelope_pb2 import Envelope

log = logging.getLogger(__name__)
ITERATION_TAG = "selfimprove.iteration"
KIND_TAG = "selfimprove.kind"  # "loop" (the run's tracking run) or "training" (one iteration's curve)
MLFLOW_STATUS = {COMPLETED: "FINISHED", FAILED: "FAILED"}  # stopped: KILLED
TRACKING_TIMEOUT_S = 30.0


def open_tracker(cfg: TrackingConfig, run_id: str) -> Tracker:
    """The tracking run of ``run_id`` (created on first use) in the configured backend."""
    if cfg.backend == "mlflow":
        return MlflowTracker(cfg.uri, cfg.experiment, run_id)
    if cfg.backend == "tensorboard":
        return TensorBoardTracker(local_path(cfg.uri), run_id)
    return NullTracker()


def local_path(uri: str) -> Path:
    """A folder given as a path or a ``file://`` URI.

    >>> str(local_path("file:///data/tb")), str(local_path("/data/tb"))
    ('/data/tb', '/data/tb')
    """
    return Path(os.path.expanduser(uri.removeprefix("file://")))


class MlflowTracker:
    """One selfimprove run as an MLflow run (``mlflow-skinny`` is enough, also for a file store)."""

    def __init__(self, uri: str, experiment: str, run_id: str) -> None:
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 keeps the file store only on request; it is what a serverless setup needs.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = run_id
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self._create_experiment(experiment)
        self.tracking_run = self._run({KIND_TAG: "loop"}, run_id)

    def _create_experiment(self, name: str) -> str:
        try:
            return self.client.create_experiment(name)
        except Exception:  # created meanwhile by another process (the report, another evaluator)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _run(self, tags: dict[str, str], name: str) -> str:
        """The MLflow run id with this selfimprove run's tag and ``tags``, created when there is none."""
        wanted = {RUN_TAG: self.run_id, **tags}
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in wanted.items())
        found = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        if found:
            return found[0].info.run_id
        return self.client.create_run(self.experiment_id, run_name=name, tags=wanted).info.run_id

    def _log(self, run: str, points: Sequence[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value, step in points]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(run, metrics=metrics[i : i + 1000])

    def log_points(self, points: Sequence[Point]) -> None:
        self._log(self.tracking_run, [(p.key, p.value, p.step) for p in points])

    def log_decisions(self, decisions: Sequence[dict[str, Any]]) -> None:
        for d in decisions:
            name = f"decisions/iter-{int(d['iteration']):03d}-{d['kind']}-{d.get('event_id', '')[:12]}.json"
            self.client.log_dict(self.tracking_run, d, name)

    def log_curve(self, iteration: int, key: str, points: Sequence[tuple[int, float]]) -> None:
        child = self._run(
            {KIND_TAG: "training", ITERATION_TAG: str(iteration), "mlflow.parentRunId": self.tracking_run},
            f"{self.run_id} iter {iteration}",
        )
        self._log(child, [(key, loss, step) for step, loss in points])
        self.client.set_terminated(child, "FINISHED")

    def log_files(self, paths: Sequence[Path], folder: str) -> None:
        for path in paths:
            self.client.log_artifact(self.tracking_run, str(path), folder)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.tracking_run, MLFLOW_STATUS.get(status, "KILLED"))


class TensorBoardTracker:
    """One selfimprove run as a TensorBoard run: event files under ``<log dir>/<run id>``, written
    with the ``tensorboard`` package alone (no TensorFlow, no torch)."""

    def __init__(self, logdir: Path, run_id: str) -> None:
        self.folder = logdir / run_id
        self._writers: dict[str, Any] = {}

    def _write(self, sub: str, values: Sequence[tuple[int, Any]]) -> None:
        """Write summary values ``(step, Summary.Value)`` to the event file of ``sub`` and flush."""
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if sub not in self._writers:
            self._writers[sub] = EventFileWriter(str(self.folder / sub if sub else self.folder))
        writer = self._writers[sub]
        now = time.time()
        for step, value in values:
            writer.add_event(Event(wall_time=now, step=step, summary=Summary(value=[value])))
        writer.flush()
        if sub:  # an iteration's curve is written once
            self._writers.pop(sub).close()

    def log_points(self, points: Sequence[Point]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._write("", [(p.step, Summary.Value(tag=p.key, simple_value=p.value)) for p in points])

    def log_decisions(self, decisions: Sequence[dict[str, Any]]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

        text = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        values = []
        for d in decisions:
            line = f"{d['kind']}: {d.get('reason', '')}"
            figures = d.get("figures") or {}
            if figures:
                line += " (" + ", ".join(f"{k}={v:.4g}" for k, v in figures.items()) + ")"
            tensor = TensorProto(
                dtype=7,  # DT_STRING
                string_val=[line.encode()],
                tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
            )
            values.append((int(d["iteration"]), Summary.Value(tag="decisions", metadata=text, tensor=tensor)))
        self._write("", values)

    def log_curve(self, iteration: int, key: str, points: Sequence[tuple[int, float]]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._write(
            f"iter-{iteration:03d}", [(step, Summary.Value(tag=key, simple_value=v)) for step, v in points]
        )

    def log_files(self, paths: Sequence[Path], folder: str) -> None:
        """PNG files as images (other files are left out: TensorBoard shows no files)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = []
        for path in paths:
            data = path.read_bytes()
            if not data.startswith(b"\x89PNG"):
                continue
            width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
            image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
            values.append((0, Summary.Value(tag=f"{folder}/{path.stem}", image=image)))
        self._write("", values)

    def end(self, status: str) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def read_curve(store: ArtifactStore, record: dict[str, Any]) -> list[tuple[int, float]]:
    """The loss curve of an accepted train record: its ``loss_curve`` file, else the
    ``loss_curve.json`` inside the candidate's adapter folder; empty when it has none."""
    ref = record.get("loss_curve") or {}
    if ref.get("uri"):
        return loss_points(json.loads(store.get_bytes(ArtifactRef(**ref))))
    adapter = (record.get("candidate") or {}).get("adapter") or {}
    if not str(adapter.get("uri", "")).endswith("/manifest.json"):
        return []
    folder = ArtifactRef(**adapter)
    if "loss_curve.json" not in {e.path for e in store.manifest(folder).files}:
        return []
    return loss_points(json.loads(store.read_file(folder, "loss_curve.json")))


class TrackingSink:
    """The controller's tracking side effect: one tracker per run whose config tracks, opened on
    first use and dropped when the run ends."""

    def __init__(
        self,
        store: ArtifactStore,
        count_error: Callable[[str], None],
        opener: Callable[[TrackingConfig, str], Tracker] = open_tracker,
        timeout_s: float = TRACKING_TIMEOUT_S,
    ) -> None:
        self.store, self.count_error, self.opener, self.timeout_s = store, count_error, opener, timeout_s
        self._trackers: dict[str, Tracker] = {}

    async def after_commit(
        self, cfg: RunConfig, before: RunState | None, after: RunState, received: Envelope | None
    ) -> None:
        """Log what the transition from ``before`` to ``after`` (handling ``received``) added;
        never raises, never waits longer than the timeout."""
        if not cfg.tracking.enabled:
            return
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self.record, cfg, before, after, received), timeout=self.timeout_s
            )
        except TimeoutError:
            self._failed(cfg, after, f"no answer within {self.timeout_s:.0f}s")

    def record(
        self, cfg: RunConfig, before: RunState | None, after: RunState, received: Envelope | None
    ) -> None:
        try:
            found = changes(before, after, received)
            if not found:
                return
            tracker = self._trackers.get(after.run_id)
            if tracker is None:
                tracker = self._trackers[after.run_id] = self.opener(cfg.tracking, after.run_id)
            if found.points:
                tracker.log_points(found.points)
            if found.decisions:
                tracker.log_decisions(found.decisions)
            if found.curve:
                curve = read_curve(self.store, found.curve)
                if curve:
                    tracker.log_curve(found.curve_step, "train/loss", curve)
            if found.ended:
                self._trackers.pop(after.run_id, None)
                tracker.end(found.ended)
        except Exception as exc:  # tracking never fails the run
            self._failed(cfg, after, f"{type(exc).__name__}: {exc}")

    def _failed(self, cfg: RunConfig, state: RunState, why: str) -> None:
        log.warning(
            "tracking to %s failed: %s",
            cfg.tracking.backend,
            why,
            extra=fields(run_id=state.run_id, iteration=state.iteration),
        )
        self.count_error(cfg.tracking.backend)


def log_report_plots(config_yaml: str, run_id: str, folder: Path) -> str:
    """Log the report's PNG plots in ``folder`` to the run's tracking run when the run's config
    tracks (found by its run-id tag, created if missing); a line saying what happened, empty when
    the run does not track. A failure is said, never raised: the report is written either way."""
    from selfimprove.evaluator.config import load_config

    try:
        cfg = load_config(config_yaml, files=False).tracking if config_yaml.strip() else None
    except ValueError as exc:
        return f"tracking: the run's config does not load here, plots not logged: {exc}"
    if cfg is None or not cfg.enabled:
        return ""
    plots = sorted(folder.glob("*.png"))
    try:
        open_tracker(cfg, run_id).log_files(plots, "report")
    except Exception as exc:  # noqa: BLE001 (a missing package, an unreachable store: said, not raised)
        return f"tracking: plots not logged to {cfg.backend} at {cfg.uri}: {type(exc).__name__}: {exc}"
    return f"tracking: {len(plots)} plots logged to {cfg.backend} at {cfg.uri}"
