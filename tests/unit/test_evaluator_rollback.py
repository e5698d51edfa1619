"""Rollback (``evaluation.rollback``): promotions that drift below an earlier incumbent, or a collapse,
serve the last good model again; driven by the fake stages' answers without a broker."""

from __future__ import annotations

import pytest

from selfimprove.core import incumbent
from selfimprove.core.metrics import Metrics
from selfimprove.evaluator.config import ConfigError, load_config
from selfimprove.evaluator.loopmetrics import LoopMetrics
from selfimprove.evaluator.status import lineage, run_status
from selfimprove.report.summary import decision_line
from selfimprove.v2.stages_pb2 import Decision
from tests.unit.test_evaluator_decide import BASE, kinds, run

pytestmark = pytest.mark.unit
SUITE = "task: {regression_suites: [{label: add1, params: {categories: [add1]}, dev_size: 10}]}\n"
ROLLBACK = "evaluation: {rollback: {enabled: true}}\n"
CONFIG = BASE.replace("iterations: 3", "iterations: 4") + SUITE
# four iterations: three promotions whose add1 accuracy falls within the regression margin each time
# (0.90, 0.90, 0.86, 0.83: more than 0.03 below the best earlier one twice in a row), then a reject
DRIFT = {
    "eval": [
        [0.6, 0.4, 0.01, {"add1": [0.9, 0.9]}],
        [0.7, 0.6, 0.01, {"add1": [0.86, 0.9]}],
        [0.75, 0.7, 0.01, {"add1": [0.83, 0.86]}],
        [0.5, 0.6, 0.5],
    ]
}


def test_drift_over_two_promotions_rolls_back_once_to_the_last_good_model():
    state, log = run(CONFIG + ROLLBACK, DRIFT)
    assert kinds(state).count("promote") == 3 and kinds(state).count("rollback") == 1
    back = next(d for d in state.decisions if d["kind"] == "rollback")
    assert back["iteration"] == 3 and back["model"] == "r1/iter-001"
    assert back["reason"] == (
        "rollback to r1/iter-001: r1/iter-003 drifted: add1 0.830 < 0.900 (r1/base) - margin 0.03 over 2 promotions"
    )
    assert [(e["name"], e["incumbent_accuracy"], e["candidate_accuracy"]) for e in back["evidence"]] == [
        ("dev", 0.75, 0.6),
        ("add1", 0.83, 0.9),
    ]
    assert back["figures"]["add1_drop"] == pytest.approx(0.07)
    # the decision right after iteration 3's promotion, on the control topic
    decisions = [o.envelope for o in log if o.envelope.WhichOneof("payload") == "decision"]
    at = next(i for i, e in enumerate(decisions) if e.decision.kind == Decision.KIND_ROLLBACK)
    assert decisions[at - 1].decision.kind == Decision.KIND_PROMOTE
    assert decisions[at].decision.model.version == "r1/iter-001"
    assert decisions[at].decision.model.adapter.uri  # the restored adapter, for the servers to load
    assert incumbent.is_promotion(decisions[at])  # the deployment's incumbent record names it
    # the state serves the restored model; iteration 4 evaluated a candidate against it
    assert state.incumbent["version"] == "r1/iter-001" and state.incumbent["adapter"]["uri"]
    evaluate = [
        o.envelope.evaluate_command for o in log if o.envelope.WhichOneof("payload") == "evaluate_command"
    ]
    assert evaluate[-1].incumbent.version == "r1/iter-001"
    assert state.accuracy[2] == 0.6 and state.drift_streak == 0
    assert [(c["version"], c["drifted"], c["rolled_back"]) for c in state.scorecards] == [
        ("r1/base", False, False),
        ("r1/iter-001", False, False),
        ("r1/iter-002", True, True),
        ("r1/iter-003", True, True),
    ]
    assert state.rollbacks == [
        {
            "iteration": 3,
            "version": "r1/iter-001",
            "previous": "r1/iter-003",
            "rolled_back": ["r1/iter-002", "r1/iter-003"],
            "decision_event_id": back["event_id"],
            "time": back["time"],
            "reason": back["reason"],
        }
    ]
    models = {m["version"]: m for m in state.lineage["models"]}
    assert models["r1/iter-003"]["rolled_back"] and not models["r1/iter-001"].get("rolled_back")
    assert next(r for r in state.history if r["iteration"] == 3)["rolled_back_to"] == "r1/iter-001"
    assert lineage(state)["rollbacks"] == state.rollbacks
    status = run_status(state)
    assert status.incumbent.version == "r1/iter-001"
    line = decision_line(next(d for d in status.decisions if d.kind == Decision.KIND_ROLLBACK))
    assert line.startswith("rollback: rollback to r1/iter-001") and line.endswith(
        "[dev 0.750→0.600; add1 0.830→0.900]"
    )


def test_the_rollback_is_counted_per_run():
    state, _ = run(CONFIG + ROLLBACK, DRIFT)
    metrics = Metrics("unit")
    LoopMetrics(metrics).apply(state, [("rollback",)])
    assert metrics.registry.get_sample_value("selfimprove_rollbacks_total", {"run_id": "r1"}) == 1


@pytest.mark.parametrize(
    "config",
    [
        "",  # disabled (the default)
        "evaluation: {rollback: {enabled: true, margin: 0.1}}\n",  # every drop within the margin
        "evaluation: {rollback: {enabled: true, over_promotions: 3}}\n",  # not held long enough
    ],
)
def test_no_rollback_when_disabled_within_the_margin_or_not_held(config):
    state, _ = run(CONFIG + config, DRIFT)
    assert "rollback" not in kinds(state) and not state.rollbacks
    assert state.incumbent["version"] == "r1/iter-003" and kinds(state).count("promote") == 3


def test_a_drop_that_recovers_resets_the_streak():
    script = {"eval": [*DRIFT["eval"][:2], [0.75, 0.7, 0.01, {"add1": [0.9, 0.86]}], [0.8, 0.75, 0.01]]}
    state, _ = run(CONFIG + ROLLBACK, script)
    assert "rollback" not in kinds(state) and kinds(state).count("promote") == 4
    assert [c["drifted"] for c in state.scorecards] == [False, False, True, False, False]


def test_collapse_rolls_back_to_the_model_before_the_window():
    cfg = BASE.replace("iterations: 3", "iterations: 10") + "stopping: {plateau_patience: 9}\n" + ROLLBACK
    script = {
        "eval": [[0.6, 0.4, 0.01], [0.5, 0.6, 0.5]],
        "agreement": [0.5, 0.7, 0.9],
        "diversity": [0.8, 0.6, 0.4],
    }
    state, _ = run(cfg, script)
    assert state.stop_reason.startswith("collapse")
    back = next(d for d in state.decisions if d["kind"] == "rollback")
    # iteration 1's data began the collapse window: the model promoted from it goes, the base serves
    assert back["model"] == "r1/base" and back["reason"].startswith("rollback to r1/base: collapse")
    assert state.incumbent["version"] == "r1/base" and kinds(state)[-2:] == ["rollback", "stop"]
    assert state.rollbacks[0]["rolled_back"] == ["r1/iter-001"]


def test_rollback_config_is_checked():
    assert load_config(CONFIG).evaluation.rollback.enabled is False
    with pytest.raises(ConfigError, match="over_promotions"):
        load_config(CONFIG + "evaluation: {rollback: {enabled: true, over_promotions: 0}}\n")
    with pytest.raises(ConfigError, match="rollback"):
        load_config(CONFIG + "evaluation: {rollback: {margins: 0.1}}\n")
