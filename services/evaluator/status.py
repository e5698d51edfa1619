"""A run's public view: ``RunStatus`` for the control plane, with the lineage record as JSON."""

from __future__ import annotations

import json

from selfimprove.evaluator.commands import STAGE_ENUM
from selfimprove.evaluator.refs import to_model, to_suite
from selfimprove.evaluator.state import RunState
from selfimprove.evaluator.transition import KINDS
from selfimprove.v2.control_pb2 import RunStatus, ShardProgress
from selfimprove.v2.stages_pb2 import Decision


def lineage(state: RunState) -> dict:
    """Every artifact and model version of the run, what trained what, promotions and rollbacks (with
    each promoted model's scores as recorded then), code and config."""
    return {
        "run_id": state.run_id,
        "code_version": state.lineage.get("code_version", ""),
        "packages": state.lineage.get("packages", {}),
        "config": state.config_yaml,
        "artifacts": state.lineage.get("artifacts", []),
        "models": state.lineage.get("models", []),
        "promotions": state.promotions,
        "rollbacks": state.rollbacks,
        "scorecards": state.scorecards,
        "incumbent": state.incumbent,
        "history": state.history,
        "tokens_used": state.tokens_used,
        "started_at": state.started_at,
    }


def run_status(state: RunState, progress: list[ShardProgress] | None = None) -> RunStatus:
    """The run's public view; ``progress``: the current stage's reports (``ProgressBoard.current``)."""
    decisions = [
        Decision(
            kind=KINDS.get(d["kind"], 0),
            reason=d["reason"],
            evidence=[to_suite(e) for e in d.get("evidence", [])],
            figures={k: float(v) for k, v in d.get("figures", {}).items()},
        )
        for d in state.decisions
    ]
    for proto, d in zip(decisions, state.decisions, strict=True):
        if d.get("model"):
            proto.model.version = d["model"]
    return RunStatus(
        run_id=state.run_id,
        state=state.status,
        iteration=state.iteration,
        stage=STAGE_ENUM.get(state.stage, 0),
        incumbent=to_model(state.incumbent),
        decisions=decisions,
        stop_reason=state.stop_reason,
        accuracy=list(state.accuracy),
        lineage_json=json.dumps(lineage(state), sort_keys=True, default=str),
        progress=progress or [],
    )
