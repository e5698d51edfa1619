"""One transition of a run's state: the commands and decisions that handling one event produces.

A :class:`Transition` collects the commands and decision events to publish (ids derived from the
cause, so a re-run transition repeats them exactly) and *signals* for the loop-health metrics while
the decision changes the state. Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from selfimprove.core import envelope as envelopes
from selfimprove.core.outgoing import Outgoing
from selfimprove.core.topics import Topics
from selfimprove.evaluator import commands
from selfimprove.evaluator.config import RunConfig
from selfimprove.evaluator.refs import to_model, to_suite
from selfimprove.evaluator.state import FAILED, RunState, Slot, slot_stage
from selfimprove.v2.common_pb2 import ModelRef
from selfimprove.v2.stages_pb2 import Decision

KINDS = {
    "promote": Decision.KIND_PROMOTE,
    "reject": Decision.KIND_REJECT,
    "continue": Decision.KIND_CONTINUE,
    "retry": Decision.KIND_RETRY,
    "stop": Decision.KIND_STOP,
    "rollback": Decision.KIND_ROLLBACK,
}


@dataclass
class Transition:
    topics: Topics
    state: RunState
    cfg: RunConfig
    cause: str
    now: float
    out: list[Outgoing] = field(default_factory=list)
    signals: list[tuple[Any, ...]] = field(default_factory=list)

    def signal(self, *what: Any) -> None:
        self.signals.append(what)

    def decide(
        self,
        kind: str,
        reason: str,
        model: dict[str, Any] | None = None,
        evidence: Sequence[dict[str, Any]] = (),
        figures: dict[str, float] | None = None,
    ) -> str:
        """Publish a decision with its evidence (the suites, and the judged ``figures``, for display
        only); record it in the state; return its event id."""
        s = self.state
        event_id = envelopes.derived_event_id(self.cause, self.topics.control, len(self.out))
        decision = Decision(
            kind=KINDS[kind],
            reason=reason,
            model=to_model(model) if model else ModelRef(),
            evidence=[to_suite(e) for e in evidence],
            figures={k: float(v) for k, v in (figures or {}).items()},
        )
        stage = commands.STAGE_ENUM.get(s.stage, 0)
        env = envelopes.make(
            run_id=s.run_id,
            iteration=s.iteration,
            stage=stage,
            producer=commands.PRODUCER,
            causation_id=self.cause,
            event_id=event_id,
            decision=decision,
        )
        self.out.append(Outgoing(self.topics.control, env, s.run_id))
        s.decisions.append(
            {
                "event_id": event_id,
                "kind": kind,
                "reason": reason,
                "iteration": s.iteration,
                "stage": s.stage,
                "time": self.now,
                "model": (model or {}).get("version", ""),
                "evidence": list(evidence),
                "figures": dict(figures or {}),
            }
        )
        return event_id

    def command(self, slot: str, new_round: bool = False) -> None:
        """Command ``slot`` with its next attempt; a new round also raises the slot's floor."""
        s = self.state
        prev = s.slots.get(slot)
        attempt = (prev.attempt + 1) if prev else 1
        if prev is None or new_round:
            s.slots[slot] = Slot(attempt=attempt, floor=attempt, commanded_at=self.now, started_at=self.now)
            s.accepted.pop(slot, None)
        else:
            prev.attempt, prev.commanded_at = attempt, self.now
        s.stage = slot_stage(slot)
        self.out.append(commands.command(self.topics, s, self.cfg, slot, attempt, self.cause))
        if attempt > 1 and not new_round:
            self.signal("retry", slot_stage(slot))

    def finish(self, status: str, reason: str, figures: dict[str, float] | None = None) -> None:
        s = self.state
        s.status, s.stop_reason = status, reason
        self.decide("stop", reason, figures=figures)
        if status == FAILED:
            self.signal("failed_run")
