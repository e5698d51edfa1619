"""Series that belong to one run: labelled ``run_id`` first, and bounded per process.

Every stage handles commands of any run, so a metric of a run's work (a shard's yield, a training loss,
a promotion) carries the run's id, and Grafana's run variable selects it. A label whose values grow
with every run would grow the registry without end, so a process keeps the series of a few runs only:

- a run that ENDS (the evaluator says so) keeps its series until the next run ends, so that its final
  values are scraped at least once; then they are removed;
- a process that never learns that a run ended (a stage service) keeps the ``keep`` runs it touched
  last and removes the series of the least recently touched one when another run arrives.

Removed series go stale in Prometheus; their history stays queryable.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from selfimprove.core.metrics import Metrics

RUN_LABEL = "run_id"
NO_RUN = "none"  # work of no run (the refinement service's base model before any promotion)
KEEP_RUNS = 8

Metric = Counter | Gauge | Histogram


def run_label(run_id: str) -> str:
    """The label value of a run id (``NO_RUN`` for an empty one).

    >>> run_label("r-1"), run_label("")
    ('r-1', 'none')
    """
    return run_id or NO_RUN


class RunSeries:
    """The per-run metrics of one process and the children each run created."""

    def __init__(self, metrics: Metrics, keep: int = KEEP_RUNS) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1 run, got {keep}")
        self.metrics, self.keep = metrics, keep
        self._children: OrderedDict[str, set[tuple[Metric, tuple[str, ...]]]] = OrderedDict()
        self._ended: set[str] = set()
        self._lock = threading.Lock()  # a trainer's steps report from its worker thread

    def counter(self, name: str, doc: str, labels: list[str] | None = None) -> Counter:
        return self.metrics.counter(name, doc, [RUN_LABEL, *(labels or [])])

    def gauge(self, name: str, doc: str, labels: list[str] | None = None) -> Gauge:
        return self.metrics.gauge(name, doc, [RUN_LABEL, *(labels or [])])

    def histogram(self, name: str, doc: str, labels: list[str] | None = None, **kwargs: Any) -> Histogram:
        return self.metrics.histogram(name, doc, [RUN_LABEL, *(labels or [])], **kwargs)

    def labels(self, metric: Metric, run_id: str, *values: str) -> Any:
        """The child of ``metric`` for ``run_id`` and the other label ``values``; the run becomes the
        most recently used one (a run beyond ``keep`` evicts the least recently used)."""
        run = run_label(run_id)
        with self._lock:
            children = self._children.pop(run, set())
            self._children[run] = children
            children.add((metric, values))
            self._ended.discard(run)
            while len(self._children) > self.keep:
                self._remove(next(iter(self._children)))
            return metric.labels(run, *values)

    def end(self, run_id: str) -> None:
        """``run_id`` ended: the series of runs that ended before it are removed now, its own at the
        next end (so its last values are scraped)."""
        run = run_label(run_id)
        with self._lock:
            for old in [r for r in self._ended if r != run]:
                self._remove(old)
            if run in self._children:
                self._ended.add(run)

    def runs(self) -> list[str]:
        """Runs whose series are exported, least recently used first."""
        with self._lock:
            return list(self._children)

    def _remove(self, run: str) -> None:
        for metric, values in self._children.pop(run, set()):
            with contextlib.suppress(KeyError):  # removed already
                metric.remove(run, *values)
        self._ended.discard(run)
