"""The calibration artifact (``table.json``, optional ``targets.jsonl``) and the result event, pure.

``targets.jsonl`` holds the model's own refined text on train prompts, one JSON object per line:
``{"id", "prompt", "response", "category", "answer_extracted"}``; selection uses it as SFT targets
in the next iteration (refine-then-distill).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from selfimprove.core.stage import parse_stats
from selfimprove.refinement.calibration import Row
from selfimprove.runtime.strategies import Answer
from selfimprove.runtime.tasks.base import Item
from selfimprove.v2.common_pb2 import ArtifactRef
from selfimprove.v2.stages_pb2 import RefineResult, RefineStats, StrategyScore


def table_records(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """JSON-ready rows of the table (per-problem outcomes included, for later paired tests)."""
    return [
        {
            "strategy": r.strategy,
            "accuracy": r.accuracy,
            "correct": sum(r.outcomes),
            "n": len(r.outcomes),
            "tokens_per_problem": r.tokens_per_problem,
            "seconds_per_problem": r.seconds_per_problem,
            "delta_vs_greedy": r.delta,
            "p_value_vs_greedy": r.p_value,
            "eligible": r.eligible,
            "outcomes": [int(x) for x in r.outcomes],
        }
        for r in rows
    ]


def result_stats(rows: Sequence[Row], chosen: str, seconds: float, targets: int) -> RefineStats:
    """The result event's ``stats`` (each strategy's own figures are in its table row).

    >>> g, s = Row("greedy", (True, False), 10, 1), Row("self_consistency@3", (True, True), 30, 3, 0.5, 0.5)
    >>> st = result_stats([g, s], "greedy", 8.0, 0)
    >>> st.dev_n, st.chosen_accuracy, st.best_accuracy
    (2, 0.5, 1.0)
    """
    by_name = {r.strategy: r for r in rows}
    return RefineStats(
        dev_n=len(rows[0].outcomes),
        strategies=len(rows),
        greedy_accuracy=by_name["greedy"].accuracy,
        chosen_accuracy=by_name[chosen].accuracy,
        chosen_delta=by_name[chosen].delta,
        chosen_p_value=by_name[chosen].p_value,
        chosen_tokens_per_problem=by_name[chosen].tokens_per_problem,
        best_accuracy=max(r.accuracy for r in rows if r.eligible),
        seconds=seconds,
        targets=targets,
    )


def targets_jsonl(items: Sequence[Item], answers: Sequence[Answer]) -> bytes:
    """One line per train prompt with the strategy's (the model's own) text.

    >>> it = Item("a1", "What is 2 + 3?", "add1", 1, "5")
    >>> targets_jsonl([it], [Answer("2 + 3 = 5", "5", 7)]).decode().strip()
    '{"id": "a1", "prompt": "What is 2 + 3?", "response": "2 + 3 = 5", "category": "add1", "answer_extracted": "5"}'
    """
    lines = [
        json.dumps(
            {
                "id": it.id,
                "prompt": it.prompt,
                "response": a.text,
                "category": it.category,
                "answer_extracted": a.answer,
            }
        )
        for it, a in zip(items, answers, strict=True)
    ]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def refine_result(meta: dict[str, Any], artifact: ArtifactRef) -> RefineResult:
    """The result event from the artifact's ``meta``: ``calibration`` is the artifact, ``targets`` the
    same artifact only when targets were written."""
    table = [
        StrategyScore(
            strategy=r["strategy"],
            accuracy=r["accuracy"],
            tokens_per_problem=r["tokens_per_problem"],
            seconds_per_problem=r["seconds_per_problem"],
            n=r["n"],
            delta_vs_greedy=r["delta_vs_greedy"],
            p_value_vs_greedy=r["p_value_vs_greedy"],
        )
        for r in meta["table"]
    ]
    out = RefineResult(table=table, chosen=meta["chosen"], stats=parse_stats(meta["stats"], RefineStats()))
    out.calibration.CopyFrom(artifact)
    if meta.get("targets_written"):
        out.targets.CopyFrom(artifact)
    return out
