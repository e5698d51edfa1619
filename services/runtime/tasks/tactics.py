"""A task's acquisition tactics: the typed ``task.tactics`` section of a run config.

A tactic changes how a shard acquires data for a task (a hinted second try, worked replies, a label
check), through the task's own hooks (:meth:`Task.worked_plan`, :meth:`Task.check_item`). Which tactics
a task takes is the task's business: its class names a pydantic model (``Task.tactics_model``) that
validates the section when the run config loads and says what applies in each iteration
(:meth:`Tactics.at`), so the evaluator stays task-agnostic and the command carries only the answer.
Only tactics a measured run kept are here (docs/tasks.md); the base model takes those any task with
reference answers or a check question can use, :class:`WorkedTactics` adds the worked-plan ones.

>>> WorkedTactics.model_validate({"worked_from_iteration": 2, "rationalize_steps": True}).at(1, False)
Applied(rationalize=False, worked=False, worked_by_majority=False, rationalize_steps=True, check_labels=False)
>>> WorkedTactics.model_validate({"worked_from_iteration": 2}).at(2, True).worked
True
>>> Tactics.model_validate({"rationalize": True}).check("label-free")
Traceback (most recent call last):
...
ValueError: rationalize: hints carry the reference answer, so it needs label_mode verified (got label-free)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator


@dataclass(frozen=True)
class Applied:
    """The tactics one iteration's acquisition uses (the acquire command's ``tactics``)."""

    rationalize: bool = False
    worked: bool = False
    worked_by_majority: bool = False
    rationalize_steps: bool = False
    check_labels: bool = False


class Tactics(BaseModel):
    """Tactics for any task with reference answers (``rationalize``) or a check question
    (``check_labels``, :meth:`Task.check_item`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # tactics that read the reference answers: refused in label-free runs (``run --label-mode
    # label-free`` turns them off), and those that check pseudo-labels: refused in verified runs
    TRUTH_FED: ClassVar[dict[str, str]] = {"rationalize": "hints carry the reference answer"}
    LABEL_FREE_ONLY: ClassVar[dict[str, str]] = {"check_labels": "it checks label-free pseudo-labels"}

    rationalize: bool = Field(
        False,
        description="Verified mode only: re-ask prompts no sample answered with the answer as a hint (STaR).",
    )
    check_labels: bool = Field(
        False,
        description="Label-free mode only: each prompt's majority answer is also checked by one greedy "
        "question whose answer follows from it (the task's check question: for arithmetic a sum asked "
        "again with its operands swapped, a difference undone by a sum), and selection keeps only the "
        "labels whose check the model answered as they predict.",
    )

    def check(self, label_mode: str) -> None:
        """Refuse a tactic the run's label mode cannot take: one that shows the truth to a label-free
        run, or one that checks pseudo-labels in a verified run. Raises ``ValueError`` naming it."""
        label_free = label_mode == "label-free"
        refused, needs = (self.TRUTH_FED, "verified") if label_free else (self.LABEL_FREE_ONLY, "label-free")
        for name, why in refused.items():
            if getattr(self, name):
                raise ValueError(f"{name}: {why}, so it needs label_mode {needs} (got {label_mode})")

    @classmethod
    def off_for(cls, label_mode: str) -> dict[str, Any]:
        """The settings that turn off what ``label_mode`` refuses (``run --label-mode``).

        >>> Tactics.off_for("label-free"), Tactics.off_for("verified")
        ({'rationalize': False}, {'check_labels': False})
        """
        refused = cls.TRUTH_FED if label_mode == "label-free" else cls.LABEL_FREE_ONLY
        return {name: cls.model_fields[name].default for name in refused}

    def at(self, iteration: int, label_free: bool) -> Applied:
        """The tactics iteration ``iteration`` (from 1) acquires with."""
        return Applied(
            rationalize=self.rationalize,
            worked_by_majority=label_free,
            check_labels=self.check_labels,
        )


class WorkedTactics(Tactics):
    """Tactics for a task with worked plans (:meth:`Task.worked_plan`; arithmetic: the tens, then the
    ones), on top of :class:`Tactics`."""

    TRUTH_FED: ClassVar[dict[str, str]] = {
        **Tactics.TRUTH_FED,
        "rationalize_steps": "hints carry the reference answer",
    }

    worked_from_iteration: int = Field(
        0,
        ge=0,
        description="From this iteration on (0: never), the model also answers each prompt's worked-reply "
        "sub-questions (the task's plan: for arithmetic the tens, then the ones; samples_per_prompt "
        "samples each), a worked reply is written from its answers, and the sub-questions are rows of "
        "the shard, so the steps are trained too. Verified mode: a verified sample of each step is "
        "chosen, and the reply is trained on when it is verified, step by step (at any pass rate). "
        "Label-free mode: each step's majority answer is chosen (none on a tie; the verifier is never "
        "asked), and the reply is trained on when its answer is the prompt's label.",
    )
    rationalize_steps: bool = Field(
        False,
        description="Verified mode only, with worked_from_iteration: a worked reply's sub-question none of "
        "whose samples is right is asked again with its answer as a hint (STaR's rationalization, one "
        "step at a time), and the reply is written from a right hinted answer, so the steps the model "
        "cannot yet do alone (for arithmetic a borrow or a carry in the ones step) are in its worked "
        "replies too; the hinted replies are trained on under the sub-question's plain prompt.",
    )

    @model_validator(mode="after")
    def _steps_need_worked(self) -> WorkedTactics:
        if self.rationalize_steps and not self.worked_from_iteration:
            raise ValueError(
                "rationalize_steps: it hints a worked reply's sub-questions, so it needs "
                "worked_from_iteration above 0"
            )
        return self

    def at(self, iteration: int, label_free: bool) -> Applied:
        base = super().at(iteration, label_free)
        return Applied(
            rationalize=base.rationalize,
            worked=0 < self.worked_from_iteration <= iteration,
            worked_by_majority=base.worked_by_majority,
            rationalize_steps=self.rationalize_steps,
            check_labels=base.check_labels,
        )
