"""A run's status as plain data: the summary that ``run --json``, ``status --json`` and the report share.

It lives with the report, not the CLI, so the report builds on it without importing the command line.
"""

from __future__ import annotations

import json
from typing import Any


def decision_line(decision) -> str:
    """One evaluator decision in a line: its kind, its reason and the suites' evidence.

    >>> from selfimprove.v2.stages_pb2 import Decision, SuiteScore
    >>> evidence = [SuiteScore(name="dev", incumbent_accuracy=0.5, candidate_accuracy=0.625, p_value=0.01)]
    >>> decision_line(Decision(kind=Decision.KIND_PROMOTE, reason="better", evidence=evidence))
    'promote: better [dev 0.500→0.625 (p=0.01)]'
    >>> decision_line(Decision(kind=Decision.KIND_STOP, reason="budget"))
    'stop: budget'
    >>> back = [SuiteScore(name="add1", incumbent_accuracy=0.83, candidate_accuracy=0.9)]
    >>> decision_line(Decision(kind=Decision.KIND_ROLLBACK, reason="drift", evidence=back))
    'rollback: drift [add1 0.830→0.900]'
    """
    from selfimprove.v2.stages_pb2 import Decision

    kind = Decision.Kind.Name(decision.kind).removeprefix("KIND_").lower()
    tested = decision.kind != Decision.KIND_ROLLBACK  # a rollback compares recorded scores: no test
    scores = "; ".join(
        f"{s.name} {s.incumbent_accuracy:.3f}→{s.candidate_accuracy:.3f}"
        + (f" (p={s.p_value:.3g})" if tested else "")
        for s in decision.evidence
    )
    return f"{kind}: {decision.reason}" + (f" [{scores}]" if scores else "")


def summarize(status) -> dict[str, Any]:
    """The machine-readable summary of a control-plane ``RunStatus``.

    >>> from selfimprove.v2.control_pb2 import RunStatus
    >>> s = summarize(RunStatus(run_id="r", state="completed", iteration=2, lineage_json='{"artifacts": []}'))
    >>> s["run_id"], s["state"], s["iteration"], s["decisions"], s["lineage"]
    ('r', 'completed', 2, [], {'artifacts': []})
    """
    from google.protobuf import json_format

    lineage = json.loads(status.lineage_json or "{}")
    return {
        "run_id": status.run_id,
        "state": status.state,
        "stop_reason": status.stop_reason,
        "iteration": status.iteration,
        "incumbent": json_format.MessageToDict(status.incumbent, preserving_proto_field_name=True),
        "accuracy": list(status.accuracy),
        "decisions": [decision_line(d) for d in status.decisions],
        "lineage": lineage,
    }
