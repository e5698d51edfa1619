"""Per-run series (core.runseries): every series of a run's work is labelled ``run_id``, the registry
stays bounded, and only the documented process-level metrics go without the label."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from selfimprove.core.metrics import Metrics
from selfimprove.core.runseries import RunSeries
from selfimprove.evaluator.loopmetrics import LoopMetrics
from selfimprove.evaluator.state import COMPLETED, RunState
from selfimprove.refinement.metrics import RefinementMetrics
from selfimprove.trainer.metrics import TrainerMetrics

SERVICES = Path(__file__).resolve().parents[2] / "services"
# Metrics with no run_id label, and why (docs/deploy.md, "Metrics"): a topic, a consumer group, a
# process and the control plane serve every run at once.
PROCESS_LEVEL = {
    "messages_consumed_total",  # per topic: the command topics are shared by every run
    "messages_published_total",
    "dlq_messages_total",  # a dead letter may not decode to a run
    "broker_retries_total",
    "consumer_rejoins_total",  # per consumer group, which serves every run
    "handler_seconds",
    "consumer_lag",  # per topic and partition of the consumer group
    "service_up",
    "results_ignored_total",  # the result's run may be unknown (unbounded values)
    "control_latency_seconds",  # the controller's own latency, whatever the run
    "runs",  # runs per state
    "control_plane_rate_limited_total",  # refused before the request is decoded
    "auth_refusals_total",  # refused before the request is decoded (a caller without a credential)
    "refinement_model_swap_failures_total",  # the failed promotion is in the log
    "refinement_calibrations_in_progress",  # one service calibrates for any run, one at a time
    "tracking_errors_total",  # per tracking backend; the failed call's run is in the log
}
DEFINED = re.compile(r"\b(\w+)\.(counter|gauge|histogram)\(\s*\"([a-z_0-9]+)\"")


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value("selfimprove_" + name, labels)


def test_series_are_labelled_by_run_and_bounded_by_keep() -> None:
    metrics = Metrics("unit")
    series = RunSeries(metrics, keep=2)
    done = series.counter("unit_done_total", "Things done", ["kind"])
    for run in ("a", "b", "c"):
        series.labels(done, run, "x").inc()
    assert series.runs() == ["b", "c"]
    assert sample(metrics, "unit_done_total", run_id="a", kind="x") is None  # evicted: least recently used
    assert sample(metrics, "unit_done_total", run_id="c", kind="x") == 1
    series.labels(done, "b", "x").inc()  # b becomes the most recent: d evicts c
    series.labels(done, "d", "y").inc()
    assert series.runs() == ["b", "d"]
    assert sample(metrics, "unit_done_total", run_id="b", kind="x") == 2
    with pytest.raises(ValueError, match="keep must be at least 1"):
        RunSeries(metrics, keep=0)


def test_an_ended_run_is_scraped_once_more_then_removed_at_the_next_end() -> None:
    metrics = Metrics("unit")
    loop = LoopMetrics(metrics)
    first = RunState(run_id="r1", config_yaml="", iteration=3, incumbent_accuracy=0.5, last_progress=100.0)
    loop.apply(first, [("promote",), ("stage_done", "train", 4.0)])
    assert sample(metrics, "iteration", run_id="r1") == 3
    assert sample(metrics, "promotions_total", run_id="r1") == 1
    assert sample(metrics, "last_progress_timestamp_seconds", run_id="r1") == 100
    first.status = COMPLETED
    loop.apply(first, [])
    # Still exported (its final values get scraped), with no progress timestamp to alert on.
    assert sample(metrics, "incumbent_accuracy", run_id="r1") == 0.5
    assert sample(metrics, "last_progress_timestamp_seconds", run_id="r1") == 0
    second = RunState(run_id="r2", config_yaml="", iteration=1, last_progress=200.0)
    loop.apply(second, [("reject",)])
    assert sample(metrics, "iteration", run_id="r1") == 3  # r1 stays until the next run ends
    second.status = COMPLETED
    loop.apply(second, [])
    assert sample(metrics, "iteration", run_id="r1") is None
    assert sample(metrics, "stage_duration_seconds_count", run_id="r1", stage="train") is None
    assert sample(metrics, "rejections_total", run_id="r2") == 1


def test_trainer_and_refinement_label_their_work_with_the_run() -> None:
    metrics = Metrics("unit")
    trainer = TrainerMetrics(metrics)
    trainer.on_step("r1", {"step": 4, "loss": 0.75, "tokens": 100, "seconds": 2.0, "method": "sft"})
    assert sample(metrics, "training_loss", run_id="r1") == 0.75
    assert sample(metrics, "training_tokens_per_second", run_id="r1") == 50
    refinement = RefinementMetrics(metrics)
    refinement.serving("greedy", "base")
    refinement.request("Generate", "greedy", "OK", 0.2)
    assert sample(metrics, "refinement_request_seconds_count", run_id="none", method="Generate") == 1
    refinement.swapped("r1")
    refinement.serving("greedy", "r1/iter-001", "r1")
    refinement.request("Generate", "greedy", "OK", 0.3)
    assert sample(metrics, "refinement_request_seconds_count", run_id="r1", method="Generate") == 1
    assert sample(metrics, "refinement_model_info", run_id="r1", version="r1/iter-001") == 1
    assert sample(metrics, "refinement_model_info", run_id="none", version="base") == 0


def test_every_metric_of_the_services_is_per_run_or_documented_process_level() -> None:
    per_run, process = set(), set()
    for path in SERVICES.rglob("*.py"):
        if "v2" in path.relative_to(SERVICES).parts:
            continue
        for receiver, _, name in DEFINED.findall(path.read_text()):
            (per_run if receiver in {"r", "per_run", "series"} else process).add(name)
    assert {"training_loss", "refinement_request_seconds", "iteration", "data_yield"} <= per_run
    assert process == PROCESS_LEVEL, (
        f"metrics without run_id that are not documented process-level: {sorted(process - PROCESS_LEVEL)}; "
        f"documented but not found: {sorted(PROCESS_LEVEL - process)}"
    )


def test_the_heldout_phrasing_accuracy_is_a_gauge_per_run_and_model() -> None:
    metrics = Metrics("unit")
    loop = LoopMetrics(metrics)
    state = RunState(run_id="r1", config_yaml="", iteration=1)
    loop.apply(state, [("accuracy", 0.4, 0.6), ("phrasing_accuracy", 0.3, 0.35)])
    assert sample(metrics, "heldout_phrasing_accuracy", run_id="r1", model="incumbent") == 0.3
    assert sample(metrics, "heldout_phrasing_accuracy", run_id="r1", model="candidate") == 0.35
