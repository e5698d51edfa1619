"""The task interface: where prompts come from and how an answer is judged.

A task generates :class:`Item` prompts from a seed for a split (``"train"`` or ``"dev"``, disjoint
streams; a task with templates may also have ``"heldout_phrasing"``, the dev problems asked in wordings
that train and dev prompts never use) at a difficulty, extracts an answer from a reply, and verifies it. Users implement their
own by subclassing :class:`Task` and naming it in a run config as ``"package.module:Class"``
(see :func:`selfimprove.runtime.tasks.load_task`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from selfimprove.runtime.tasks.tactics import Tactics

if TYPE_CHECKING:
    from selfimprove.runtime.tasks.worked import Plan

Split = Literal["train", "dev", "heldout_phrasing"]
SPLITS: tuple[Split, ...] = ("train", "dev")  # the splits every task has
HELDOUT_PHRASING: Split = "heldout_phrasing"  # dev problems in held-out wordings (arithmetic)


@dataclass(frozen=True)
class Item:
    """One prompt. ``answer`` is the reference when the task has one; ``meta`` holds task data
    (arithmetic: ``operands``, ``operator``, ``key``) that selection can use."""

    id: str
    prompt: str
    category: str
    difficulty: int
    answer: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


def problem_key(meta: Mapping[str, Any] | None) -> tuple | None:
    """The ``(operator, operands)`` key in an item's or a row's meta (JSON lists back to tuples); the
    key decontamination compares.

    >>> problem_key({"key": ["+", [48, 27]]}), problem_key({}) is None
    (('+', (48, 27)), True)
    """
    key = (meta or {}).get("key")
    if not key:
        return None
    op, operands = key
    return (op, tuple(operands))


class TooFewProblems(ValueError):
    """A task's split has fewer distinct problems than were asked; ``found`` holds all it has, in the
    order :meth:`Task.items` gives them (so a caller that can do with fewer takes them)."""

    def __init__(self, message: str, found: list[Item]) -> None:
        super().__init__(message)
        self.found = found


class Task(ABC):
    """A source of prompts with an optional programmatic verifier."""

    name: str = "task"
    #: the model of the run config's ``task.tactics`` section: which acquisition tactics this task
    #: takes and what applies in each iteration (:mod:`selfimprove.runtime.tasks.tactics`)
    tactics_model: ClassVar[type[Tactics]] = Tactics

    @property
    @abstractmethod
    def categories(self) -> tuple[str, ...]:
        """Category names, for balancing and per-category reports."""

    @property
    def splits(self) -> tuple[Split, ...]:
        """The splits :meth:`items` takes: train and dev, and ``heldout_phrasing`` where the task
        holds some of its wordings out (evaluations score it beside dev when it is here)."""
        return SPLITS

    def heldout_wording(self, prompt: str) -> bool:
        """Whether ``prompt`` is asked in one of the wordings the task holds out of training (the
        ``heldout_phrasing`` split's): text the model writes itself (a restated prompt) in such a
        wording is not trained on, so that split keeps measuring wordings the loop never trained on."""
        return False

    @abstractmethod
    def items(self, split: Split, n: int, seed: int = 0, difficulty: int | None = None) -> list[Item]:
        """``n`` prompts of ``split``, the same for the same arguments; train and dev never share one.
        A finite task raises :class:`TooFewProblems` when the split has fewer than ``n``; a split
        not in :attr:`splits` is a ``ValueError``."""

    @abstractmethod
    def extract(self, reply: str) -> str | None:
        """The answer in a model reply, or ``None`` when there is none."""

    def verify(self, item: Item, reply: str) -> bool | None:
        """Whether ``reply`` answers ``item`` correctly; ``None`` when the task cannot tell."""
        if item.answer is None:
            return None
        return self.extract(reply) == item.answer

    def worked_plan(self, item: Item) -> Plan | None:
        """The sub-questions of a worked reply to ``item`` (``task.tactics.worked_from_iteration``), or
        ``None`` when the task has none for it."""
        return None

    def check_item(self, item: Item, label: str) -> Item | None:
        """A question whose answer follows from ``label`` being ``item``'s answer, with that answer
        as its ``answer`` (label-free mode's consistency check, ``task.tactics.check_labels``), or
        ``None`` when the task has none for it. It must not need the reference answer."""
        return None

    def step_item(self, parent: Item, expression: str, step: int) -> Item:
        """The sub-question ``expression`` (step ``step`` of ``parent``'s plan) as an item of its own:
        acquisition stores the model's answers to it as a row, so the steps are trained too. Only
        asked of tasks whose :meth:`worked_plan` gives plans."""
        raise NotImplementedError(f"task {self.name!r} has no worked plans")
