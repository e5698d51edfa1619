"""The trainer's metrics: the step, loss and tokens/s of the training in progress, per run.

Every series is labelled with the ``run_id`` of the train command (``core.runseries``), so Grafana's
run variable charts one run's loss (the gauge holds the last step's loss; the loss of every step is in
the adapter's ``loss_curve.json``).
"""

from __future__ import annotations

from selfimprove.core.metrics import Metrics


class TrainerMetrics:
    def __init__(self, m: Metrics) -> None:
        self.series = r = m.per_run
        self.step = r.gauge("training_step", "Optimizer step of the training in progress")
        self.loss = r.gauge("training_loss", "Training loss at the last step")
        self.tps = r.gauge("training_tokens_per_second", "Training tokens per second at the last step")
        self.examples = r.counter("training_examples_total", "Training examples seen", ["method"])
        self.steps = r.counter("training_steps_total", "Optimizer steps run by this process", ["method"])
        self.runs = r.counter("training_runs_total", "Train commands finished", ["outcome"])

    def on_step(self, run_id: str, point: dict) -> None:
        """One optimizer step of ``run_id`` (``point``: the job's loss-curve point)."""
        r = self.series
        r.labels(self.step, run_id).set(point["step"])
        r.labels(self.loss, run_id).set(point["loss"])
        if point.get("seconds"):
            r.labels(self.tps, run_id).set(point["tokens"] / point["seconds"])
        r.labels(self.examples, run_id, point["method"]).inc(point.get("batch_examples", 0))
        r.labels(self.steps, run_id, point["method"]).inc()

    def finished(self, run_id: str, outcome: str) -> None:
        self.series.labels(self.runs, run_id, outcome).inc()
