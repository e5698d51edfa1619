"""Loop-health metrics of the controller (names fixed by the deployment's alert rules and dashboard).

A run's gauges, counters and stage durations are labelled ``run_id`` (``core.runseries``); a run's
series are removed after it ends (at the next run's end). Process-level: results ignored (their run
may be unknown), the control latency and the count of runs per state.
"""

from __future__ import annotations

from selfimprove.core.metrics import Metrics
from selfimprove.core.runseries import run_label
from selfimprove.evaluator.commands import STAGE_ENUM
from selfimprove.evaluator.state import RUNNING, RunState

CONTROL_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5)


class LoopMetrics:
    def __init__(self, metrics: Metrics) -> None:
        m = metrics
        self.runs_series = r = m.per_run
        self.iteration = r.gauge("iteration", "Current iteration of the run")
        self.stage = r.gauge("stage", "Current stage of the run (selfimprove.v2.Stage number)")
        self.stage_seconds = r.histogram(
            "stage_duration_seconds", "Time from a stage's command to its last accepted result", ["stage"]
        )
        self.retries = r.counter(
            "stage_retries_total", "Stage commands re-sent with a higher attempt", ["stage"]
        )
        self.failures = r.counter("stage_failures_total", "Stage failures and timeouts", ["stage"])
        self.parked = r.counter(
            "results_parked_total",
            "Stage results that arrived before the event that caused them, kept until it is applied",
            ["stage"],
        )
        self.incumbent = r.gauge("incumbent_accuracy", "Dev accuracy of the run's incumbent")
        self.candidate = r.gauge("candidate_accuracy", "Dev accuracy of the run's last candidate")
        self.phrasing = r.gauge(
            "heldout_phrasing_accuracy",
            "Accuracy on the held-out-phrasing split (the dev problems in wordings never trained on) of "
            "the incumbent and the candidate at the run's last evaluation",
            ["model"],
        )
        self.promotions = r.counter("promotions_total", "Candidates promoted")
        self.rejections = r.counter("rejections_total", "Candidates rejected")
        self.rollbacks = r.counter(
            "rollbacks_total", "Served models rolled back to an earlier promoted one (evaluation.rollback)"
        )
        self.progress = r.gauge(
            "last_progress_timestamp_seconds",
            "Unix time a stage result of the run was last accepted (0 once the run is not running)",
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
        self.tracking_errors = m.counter(
            "tracking_errors_total", "Experiment-tracking calls that failed (the run goes on)", ["backend"]
        )

    def apply(self, state: RunState, signals: list[tuple]) -> None:
        """Export the run's state and count its signals; a run that is no longer running has its
        progress timestamp set to 0 (no stall) and its series retired (``RunSeries.end``)."""
        run = state.run_id

        def of(metric, *values: str):
            return self.runs_series.labels(metric, run, *values)

        if run_label(run) not in self.runs_series.runs():
            # A new run's counters start at 0, so that rate() and "no promotion yet" see them.
            for counter in (self.promotions, self.rejections, self.rollbacks):
                of(counter)
            for stage in STAGE_ENUM:
                of(self.retries, stage)
                of(self.failures, stage)
        of(self.iteration).set(state.iteration)
        of(self.stage).set(STAGE_ENUM.get(state.stage, 0))
        if state.incumbent_accuracy is not None:
            of(self.incumbent).set(state.incumbent_accuracy)
        if state.status != RUNNING:
            of(self.progress).set(0)
        elif state.last_progress:
            of(self.progress).set(state.last_progress)
        for sig in signals:
            kind = sig[0]
            if kind == "retry":
                of(self.retries, sig[1]).inc()
            elif kind == "failure":
                of(self.failures, sig[1]).inc()
            elif kind == "stage_done":
                of(self.stage_seconds, sig[1]).observe(max(0.0, sig[2]))
            elif kind == "promote":
                of(self.promotions).inc()
            elif kind == "reject":
                of(self.rejections).inc()
            elif kind == "rollback":
                of(self.rollbacks).inc()
            elif kind == "accuracy":
                of(self.candidate).set(sig[2])
            elif kind == "phrasing_accuracy":
                of(self.phrasing, "incumbent").set(sig[1])
                of(self.phrasing, "candidate").set(sig[2])
            elif kind == "ignored":
                self.ignored_result(sig[1], sig[3] if len(sig) > 3 else "")
            elif kind == "parked":
                of(self.parked, sig[1]).inc()
        if state.status != RUNNING:
            self.runs_series.end(run)

    def ignored_result(self, stage: str, reason: str) -> None:
        """Count a stage result the controller did not apply (``reason``: one of a few words)."""
        self.ignored.labels(stage or "unknown", reason or "other").inc()

    def count_runs(self, states: list[RunState]) -> None:
        for name in ("running", "stopped", "completed", "failed"):
            self.runs.labels(name).set(sum(1 for s in states if s.status == name))
