"""Every stage result the controller does not apply is counted in
``selfimprove_results_ignored_total{stage,reason}``: results for runs it does not know (before the
pure decision) and the ones the decision ignores (late, duplicate, ...)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from selfimprove.core import envelope as envelopes
from selfimprove.core.metrics import Metrics
from selfimprove.core.topics import Topics
from selfimprove.evaluator import decide
from selfimprove.evaluator.config import dump_config, load_config
from selfimprove.evaluator.controller import Controller
from selfimprove.evaluator.loopmetrics import LoopMetrics
from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.stages_pb2 import AcquireResult, StageFailure
from tests.support.fake_stages import respond

pytestmark = pytest.mark.unit
TOPICS = Topics("t")
IGNORED = "selfimprove_results_ignored_total"


def ignored(metrics: Metrics, **labels: str) -> float:
    return metrics.registry.get_sample_value(IGNORED, labels) or 0.0


def test_results_for_unknown_runs_are_counted():
    metrics = Metrics("evaluator")
    controller = Controller(SimpleNamespace(topics=TOPICS), None, LoopMetrics(metrics), {})
    results = [
        envelopes.make(
            run_id="nobody",
            iteration=1,
            stage=Stage.STAGE_ACQUIRE,
            producer="t",
            acquire_result=AcquireResult(),
        ),
        envelopes.make(
            run_id="nobody", iteration=1, stage=Stage.STAGE_TRAIN, producer="t", stage_failure=StageFailure()
        ),
        envelopes.make(run_id="nobody", iteration=1, stage=99, producer="t", acquire_result=AcquireResult()),
    ]
    for env in results:
        assert asyncio.run(controller.handle(env)) == []
    assert not controller.runs
    assert ignored(metrics, stage="acquire", reason="unknown_run") == 1
    assert ignored(metrics, stage="train", reason="unknown_run") == 1
    assert ignored(metrics, stage="unknown", reason="unknown_run") == 1


def test_ignored_results_are_counted_with_their_reason():
    metrics = Metrics("evaluator")
    loop = LoopMetrics(metrics)
    cfg = load_config("run_id: r1\nacquisition: {shards: 2}\n")
    tr = decide.start(TOPICS, cfg, dump_config(cfg), "r1", 1000.0, "start", {})
    command = [o.envelope for o in tr.out if o.envelope.WhichOneof("payload") == "acquire_command"][0]
    [result] = respond(command, {})
    state = decide.on_result(TOPICS, tr.state, cfg, result, 1001.0).state
    again = decide.on_result(TOPICS, state, cfg, result, 1002.0)  # the same result redelivered
    loop.apply(again.state, again.signals)
    late = envelopes.caused_by(command, "t", acquire_result=AcquireResult())
    late.iteration = 0  # an iteration the run has passed
    tr = decide.on_result(TOPICS, state, cfg, late, 1003.0)
    loop.apply(tr.state, tr.signals)
    assert ignored(metrics, stage="acquire", reason="slot_done") == 1
    assert ignored(metrics, stage="acquire", reason="late") == 1
