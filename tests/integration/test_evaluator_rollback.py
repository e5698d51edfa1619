"""A rollback against the real broker and object store (``evaluation.rollback``): promotions that
drift below an earlier incumbent are rolled back once, the decision is on the control topic, and the
run's status and the deployment's incumbent record name the restored model."""

from __future__ import annotations

import json

import pytest

from selfimprove.core import incumbent
from selfimprove.v2.stages_pb2 import Decision
from tests.support.buskit import artifact_store
from tests.support.evaluator_kit import Loop, control_events, metric

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

CONFIG = """
budget: {iterations: 3}
acquisition: {shards: 2}
task: {dev_size: 20, regression_suites: [{label: add1, params: {categories: [add1]}, dev_size: 10}]}
evaluation: {rollback: {enabled: true, margin: 0.03, over_promotions: 2}}
"""
# three promotions, add1 falling within the regression margin each time: 0.90, 0.86, 0.83
DRIFT = {
    "eval": [
        [0.6, 0.4, 0.001, {"add1": [0.9, 0.9]}],
        [0.7, 0.6, 0.001, {"add1": [0.86, 0.9]}],
        [0.75, 0.7, 0.001, {"add1": [0.83, 0.86]}],
    ]
}


@pytest.fixture
def loop(stack, unique_name, tmp_path):
    loop = Loop(stack, unique_name, tmp_path, DRIFT)
    yield loop
    loop.stop()


async def test_drifting_promotions_are_rolled_back_once(loop, stack, unique_name):
    RID = unique_name  # noqa: N806 (run id: unique per test, the bucket is shared)
    loop.start(CONFIG, run_id=RID)
    status = loop.wait_done(RID)
    assert status.state == "completed", status.stop_reason
    kinds = [d.kind for d in status.decisions]
    assert kinds.count(Decision.KIND_PROMOTE) == 3 and kinds.count(Decision.KIND_ROLLBACK) == 1
    assert status.incumbent.version == f"{RID}/iter-001" and status.incumbent.adapter.uri
    lineage = json.loads(status.lineage_json)
    [back] = lineage["rollbacks"]
    assert back["version"] == f"{RID}/iter-001" and back["rolled_back"] == [
        f"{RID}/iter-002",
        f"{RID}/iter-003",
    ]
    # on the control topic once, after the third promotion, naming the restored model with its evidence
    events = [e for e in await control_events(stack, unique_name) if e.run_id == RID]
    served = [e for e in events if e.WhichOneof("payload") == "decision" and incumbent.is_promotion(e)]
    assert [e.decision.kind for e in served] == [Decision.KIND_PROMOTE] * 3 + [Decision.KIND_ROLLBACK]
    rollback = served[-1]
    assert rollback.decision.model.version == f"{RID}/iter-001"
    assert rollback.decision.model.adapter.uri == status.incumbent.adapter.uri
    assert [(s.name, s.incumbent_accuracy, s.candidate_accuracy) for s in rollback.decision.evidence] == [
        ("dev", 0.75, 0.6),
        ("add1", pytest.approx(0.83), pytest.approx(0.9)),
    ]
    # what a serving replica starting now would load: the restored model
    record = incumbent.read(artifact_store(stack), unique_name)
    assert record is not None and record.event_id == rollback.event_id
    assert metric(loop.evaluator, "selfimprove_rollbacks_total", run_id=RID) == 1
