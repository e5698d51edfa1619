"""The refinement service's metrics: requests, latency, tokens/s, the strategy in use, calibration.

A request belongs to the run whose model is served (the run of the last promotion this replica loaded,
or of the last calibration; ``none`` while the base model is served): requests, their latency, tokens,
the strategy and the model served are labelled with that ``run_id``; a calibration's accuracies and a
swap with the run of the command or promotion. Process-level: the swap failures (the promotion that
failed is in the log) and the calibrations in progress.
"""

from __future__ import annotations

from collections.abc import Iterable

from selfimprove.core.metrics import Metrics
from selfimprove.core.runseries import NO_RUN


class RefinementMetrics:
    def __init__(self, m: Metrics) -> None:
        self.series = r = m.per_run
        self.requests = r.counter(
            "refinement_requests_total",
            "Requests answered (gRPC methods and HTTP endpoints)",
            ["method", "strategy", "code"],
        )
        self.latency = r.histogram(
            "refinement_request_seconds", "Request latency (gRPC and HTTP)", ["method"]
        )
        self.tokens = r.counter("refinement_generated_tokens_total", "Tokens generated for requests")
        self.tps = r.gauge("generation_tokens_per_second", "Generated tokens per second of the last request")
        self.strategy = r.gauge("refinement_strategy_in_use", "1 for the strategy served now", ["strategy"])
        self.accuracy = r.gauge(
            "refinement_calibration_accuracy",
            "Dev accuracy per strategy at the run's last calibration",
            ["strategy"],
        )
        self.swaps = r.counter("refinement_model_swaps_total", "Served model versions swapped in")
        self.swap_failures = m.counter(
            "refinement_model_swap_failures_total",
            "Promoted models that could not be loaded (still serving the old one)",
        )
        self.calibrating = m.gauge(
            "refinement_calibrations_in_progress", "Calibrations measuring strategies now (served beside)"
        )
        self.model = r.gauge("refinement_model_info", "1 for the model version served now", ["version"])
        self.run_id = NO_RUN  # the run whose model (or calibration) is served now
        self._served: tuple[str, str, str] | None = None  # (run, strategy, version) set to 1 now

    def request(self, method: str, strategy: str, code: str, seconds: float) -> None:
        self.series.labels(self.requests, self.run_id, method, strategy, code).inc()
        self.series.labels(self.latency, self.run_id, method).observe(seconds)

    def generated(self, tokens: int, seconds: float) -> None:
        self.series.labels(self.tokens, self.run_id).inc(tokens)
        if seconds > 0:
            self.series.labels(self.tps, self.run_id).set(tokens / seconds)

    def swapped(self, run_id: str) -> None:
        self.series.labels(self.swaps, run_id).inc()

    def serving(self, strategy: str, version: str, run_id: str = "") -> None:
        """Now serving ``version`` with ``strategy`` for ``run_id`` (empty: the run served so far)."""
        self.run_id = run_id or self.run_id
        now = (self.run_id, strategy, version)
        if self._served is not None and self._served != now and self._served[0] in self.series.runs():
            run, old_strategy, old_version = self._served
            self.series.labels(self.strategy, run, old_strategy).set(0)
            self.series.labels(self.model, run, old_version).set(0)
        self.series.labels(self.strategy, self.run_id, strategy).set(1)
        self.series.labels(self.model, self.run_id, version).set(1)
        self._served = now

    def calibrated(self, run_id: str, table: Iterable[tuple[str, float]]) -> None:
        for strategy, accuracy in table:
            self.series.labels(self.accuracy, run_id, strategy).set(accuracy)
