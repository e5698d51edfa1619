"""Per-process metrics and health: a private registry served on ``/metrics``, and ``/health``.

Names carry the ``selfimprove_`` prefix. The metrics made here are process-level (messages, consumer
lag, DLQ, readiness: a topic and a consumer group serve every run); a service's metrics of a run's work
come from ``per_run`` (``core.runseries``: labelled ``run_id``, bounded).

``/health`` answers 200 with ``{"status": "ok"}`` once the process declares itself ready and 503
before that (or after it starts shutting down).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from selfimprove.core.runseries import RunSeries

PREFIX = "selfimprove_"
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    3600,
)


class Metrics:
    """A private registry with the metrics every service shares; services add their own."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.ready = False
        self.details: dict[str, object] = {}
        self.consumed = self.counter(
            "messages_consumed_total", "Messages taken off the bus", ["topic", "outcome"]
        )
        self.published = self.counter(
            "messages_published_total", "Messages acknowledged by the broker", ["topic"]
        )
        self.dlq = self.counter(
            "dlq_messages_total", "Messages sent to a dead-letter topic", ["topic", "reason"]
        )
        self.broker_retries = self.counter("broker_retries_total", "Broker operations retried", ["operation"])
        self.rejoins = self.counter(
            "consumer_rejoins_total",
            "Consumer groups rejoined because a topic was left unassigned (core.assignor)",
            ["group"],
        )
        self.handler_seconds = self.histogram("handler_seconds", "Time in a message handler", ["topic"])
        self.lag = self.gauge(
            "consumer_lag", "Messages behind the end of the partition", ["topic", "partition"]
        )
        self.up = self.gauge("service_up", "1 while the service is ready", ["service"])
        self.per_run = RunSeries(self)

    def counter(self, name: str, doc: str, labels: list[str] | None = None) -> Counter:
        return Counter(PREFIX + name, doc, labels or [], registry=self.registry)

    def gauge(self, name: str, doc: str, labels: list[str] | None = None) -> Gauge:
        return Gauge(PREFIX + name, doc, labels or [], registry=self.registry)

    def histogram(
        self, name: str, doc: str, labels: list[str] | None = None, buckets=LATENCY_BUCKETS
    ) -> Histogram:
        return Histogram(PREFIX + name, doc, labels or [], registry=self.registry, buckets=buckets)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.up.labels(self.service).set(1 if ready else 0)


class MetricsServer:
    """Serves ``/metrics`` and ``/health`` of one ``Metrics`` on a side port, in a daemon thread."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self.metrics = metrics
        self._server = ThreadingHTTPServer((host, port), _handler(metrics))
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(metrics: Metrics) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.startswith("/metrics"):
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/health"):
                body = {
                    "status": "ok" if metrics.ready else "starting",
                    "service": metrics.service,
                    **metrics.details,
                }
                self._send(
                    200 if metrics.ready else 503, json.dumps(body, default=str).encode(), "application/json"
                )
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # scrapes are not worth a log line
            pass

    return Handler
