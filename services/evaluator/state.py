"""The state of one run: plain data, saved as JSON in the snapshot, changed only by ``decide``.

A run moves through the stages of an iteration; each *slot* (``acquire/0`` ... ``acquire/N-1``,
``select``, ``train``, ``evaluate``, ``refine``) is commanded with an attempt number, and its first
complete result is accepted (``accepted``); later results of the slot are ignored. ``floor`` is the
lowest attempt still wanted: a data retry raises it so results of the abandoned round are ignored.

>>> s = RunState(run_id="r", config_yaml="")
>>> RunState.from_json(s.to_json()) == s
True
>>> slot_name("acquire", 3), slot_stage("acquire/3"), slot_shard("acquire/3")
('acquire/3', 'acquire', 3)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

RUNNING, STOPPED, COMPLETED, FAILED = "running", "stopped", "completed", "failed"
APPLIED_KEEP = 512  # recent input event ids already applied (a redelivery changes nothing)


def slot_name(stage: str, shard: int | None = None) -> str:
    return f"{stage}/{shard}" if shard is not None else stage


def slot_stage(slot: str) -> str:
    return slot.split("/", 1)[0]


def slot_shard(slot: str) -> int:
    return int(slot.split("/", 1)[1]) if "/" in slot else 0


@dataclass
class Slot:
    """One commanded unit of work of the current iteration."""

    attempt: int = 0  # last attempt commanded
    floor: int = 1  # results of lower attempts belong to an abandoned round
    commanded_at: float = 0.0  # wall time of the last command (for the timeout)
    started_at: float = 0.0  # wall time of the first command of this round (for the duration)
    failures: int = 0


@dataclass
class RunState:
    run_id: str
    config_yaml: str
    status: str = RUNNING
    topic_prefix: str = ""  # the deployment (topic prefix) the run belongs to
    stop_reason: str = ""
    iteration: int = 1
    stage: str = "acquire"
    started_at: float = 0.0
    iteration_started_at: float = 0.0  # when the current iteration began (budget.whole_iterations)
    last_progress: float = 0.0
    slots: dict[str, Slot] = field(default_factory=dict)
    # slot -> {event_id, attempt, payload fields as dicts}; this iteration's accepted results
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    # every result event id ever accepted in this run (a result is never accepted twice)
    accepted_ids: list[str] = field(default_factory=list)
    # every result event id seen and ignored (late, duplicate, abandoned round)
    ignored_ids: list[str] = field(default_factory=list)
    # results ahead of the run, kept until their slot is commanded: {event_id, iteration, stage,
    # envelope (base64 of the serialized event)}; see decide._park
    parked: list[dict[str, Any]] = field(default_factory=list)
    incumbent: dict[str, Any] = field(default_factory=dict)
    incumbent_accuracy: float | None = None
    candidate: dict[str, Any] = field(default_factory=dict)
    # the model the next training continues (empty: the incumbent); see training.continue_pending
    train_parent: dict[str, Any] = field(default_factory=dict)
    # the last evaluated candidate, when it beat the incumbent on the whole dev set without
    # significance (empty otherwise); evaluation.final_pick: best_dev serves it at the end
    runner_up: dict[str, Any] = field(default_factory=dict)
    accuracy: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    promotions: list[dict[str, Any]] = field(default_factory=list)
    # each promoted model's scores as measured when it was promoted, the base model first (see
    # ``rollback.card``), and how many promotions in a row drifted below an earlier one
    scorecards: list[dict[str, Any]] = field(default_factory=list)
    drift_streak: int = 0
    rollbacks: list[dict[str, Any]] = field(default_factory=list)  # served models rolled back
    tokens_used: float = 0.0
    prompts_per_shard: int = 0
    data_retries: int = 0
    refined_for: str = ""  # version of the incumbent the last refine ran for
    finishing: str = ""  # the stop reason a last refine runs before (refinement.when: end)
    refined_targets: dict[str, Any] = field(default_factory=dict)
    seed_set: dict[str, Any] = field(default_factory=dict)  # the stored seed set (self-instruct runs)
    lineage: dict[str, Any] = field(default_factory=dict)
    # input events applied and published (a snapshot is written only after publishing)
    applied: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status == RUNNING

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> RunState:
        body = json.loads(data)
        known = {f.name for f in fields(cls)}
        body = {k: v for k, v in body.items() if k in known}
        body["slots"] = {k: Slot(**v) for k, v in body.get("slots", {}).items()}
        return cls(**body)

    def mark_applied(self, event_id: str) -> None:
        """Record an input whose outputs were published, so its redelivery is a no-op."""
        if event_id and event_id not in self.applied:
            self.applied.append(event_id)
            del self.applied[:-APPLIED_KEEP]


def training_sets(state: RunState, replay: int) -> list[dict]:
    """This iteration's selected set, then those of up to ``replay`` earlier iterations, newest first.

    >>> s = RunState("r", "", iteration=3, accepted={"select": {"dataset": {"uri": "c"}}},
    ...              history=[{"iteration": 1, "dataset": {"uri": "a"}}, {"iteration": 2, "dataset": {"uri": "b"}},
    ...                       {"iteration": 3, "dataset": {"uri": "c"}}])
    >>> [d["uri"] for d in training_sets(s, 0)], [d["uri"] for d in training_sets(s, 5)]
    (['c'], ['c', 'b', 'a'])
    """
    earlier = [r["dataset"] for r in state.history if r["iteration"] < state.iteration and r.get("dataset")]
    return [state.accepted["select"]["dataset"], *reversed(earlier)][: replay + 1]
