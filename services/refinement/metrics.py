"""The refinement service's metrics: requests, latency, tokens/s, the strategy in use, calibration."""

from __future__ import annotations

from collections.abc import Iterable

from selfimprove.core.metrics import Metrics


class RefinementMetrics:
    def __init__(self, m: Metrics) -> None:
        self.requests = m.counter(
            "refinement_requests_total", "gRPC requests answered", ["method", "strategy", "code"]
        )
        self.latency = m.histogram("refinement_request_seconds", "gRPC request latency", ["method"])
        self.tokens = m.counter("refinement_generated_tokens_total", "Tokens generated for requests")
        self.tps = m.gauge("generation_tokens_per_second", "Generated tokens per second of the last request")
        self.strategy = m.gauge("refinement_strategy_in_use", "1 for the strategy served now", ["strategy"])
        self.accuracy = m.gauge(
            "refinement_calibration_accuracy",
            "Dev accuracy per strategy at the last calibration",
            ["strategy"],
        )
        self.swaps = m.counter("refinement_model_swaps_total", "Served model versions swapped in")
        self.swap_failures = m.counter(
            "refinement_model_swap_failures_total",
            "Promoted models that could not be loaded (still serving the old one)",
        )
        self.model = m.gauge("refinement_model_info", "1 for the model version served now", ["version"])
        self._strategies: set[str] = set()
        self._versions: set[str] = set()

    def request(self, method: str, strategy: str, code: str, seconds: float) -> None:
        self.requests.labels(method, strategy, code).inc()
        self.latency.labels(method).observe(seconds)

    def generated(self, tokens: int, seconds: float) -> None:
        self.tokens.inc(tokens)
        if seconds > 0:
            self.tps.set(tokens / seconds)

    def serving(self, strategy: str, version: str) -> None:
        for s in self._strategies | {strategy}:
            self.strategy.labels(s).set(1 if s == strategy else 0)
        for v in self._versions | {version}:
            self.model.labels(v).set(1 if v == version else 0)
        self._strategies.add(strategy)
        self._versions.add(version)

    def calibrated(self, table: Iterable[tuple[str, float]]) -> None:
        for strategy, accuracy in table:
            self.accuracy.labels(strategy).set(accuracy)
