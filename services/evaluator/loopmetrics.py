"""Loop-health metrics of the controller (names fixed by the deployment's alert rules and dashboard).

The gauges show the run that changed last; counters and histograms are labelled by stage.
"""

from __future__ import annotations

from selfimprove.core.metrics import Metrics
from selfimprove.evaluator.commands import STAGE_ENUM
from selfimprove.evaluator.state import RunState

CONTROL_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5)


class LoopMetrics:
    def __init__(self, metrics: Metrics) -> None:
        m = metrics
        self.iteration = m.gauge("iteration", "Current iteration of the run that changed last")
        self.stage = m.gauge("stage", "Current stage (selfimprove.v2.Stage number)")
        self.stage_seconds = m.histogram(
            "stage_duration_seconds", "Time from a stage's command to its last accepted result", ["stage"]
        )
        self.retries = m.counter(
            "stage_retries_total", "Stage commands re-sent with a higher attempt", ["stage"]
        )
        self.failures = m.counter("stage_failures_total", "Stage failures and timeouts", ["stage"])
        self.incumbent = m.gauge("incumbent_accuracy", "Dev accuracy of the incumbent")
        self.candidate = m.gauge("candidate_accuracy", "Dev accuracy of the last candidate")
        self.promotions = m.counter("promotions_total", "Candidates promoted")
        self.rejections = m.counter("rejections_total", "Candidates rejected")
        self.progress = m.gauge(
            "last_progress_timestamp_seconds", "Unix time a stage result was last accepted"
        )
        self.ignored = m.counter(
            "results_ignored_total",
            "Stage results ignored (late, duplicate, other attempt, unknown run)",
            ["stage", "reason"],
        )
        self.control_latency = m.histogram(
            "control_latency_seconds", "Result consumed to next command acknowledged", buckets=CONTROL_BUCKETS
        )
        self.runs = m.gauge("runs", "Runs known to the controller", ["state"])

    def apply(self, state: RunState, signals: list[tuple]) -> None:
        self.iteration.set(state.iteration)
        self.stage.set(STAGE_ENUM.get(state.stage, 0))
        if state.incumbent_accuracy is not None:
            self.incumbent.set(state.incumbent_accuracy)
        if state.last_progress:
            self.progress.set(state.last_progress)
        for sig in signals:
            kind = sig[0]
            if kind == "retry":
                self.retries.labels(sig[1]).inc()
            elif kind == "failure":
                self.failures.labels(sig[1]).inc()
            elif kind == "stage_done":
                self.stage_seconds.labels(sig[1]).observe(max(0.0, sig[2]))
            elif kind == "promote":
                self.promotions.inc()
            elif kind == "reject":
                self.rejections.inc()
            elif kind == "accuracy":
                self.candidate.set(sig[2])
            elif kind == "ignored":
                self.ignored_result(sig[1], sig[3] if len(sig) > 3 else "")

    def ignored_result(self, stage: str, reason: str) -> None:
        """Count a stage result the controller did not apply (``reason``: one of a few words)."""
        self.ignored.labels(stage or "unknown", reason or "other").inc()

    def count_runs(self, states: list[RunState]) -> None:
        for name in ("running", "stopped", "completed", "failed"):
            self.runs.labels(name).set(sum(1 for s in states if s.status == name))
