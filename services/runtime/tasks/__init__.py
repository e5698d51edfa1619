"""Task sources: the :class:`Task` interface, the arithmetic family, seed sets, and the resolver."""

from selfimprove.runtime.tasks.base import HELDOUT_PHRASING, SPLITS, Item, Split, Task, TooFewProblems
from selfimprove.runtime.tasks.registry import TaskLoadError, load_task, task_class
from selfimprove.runtime.tasks.tactics import Applied, Tactics, WorkedTactics

__all__ = [
    "HELDOUT_PHRASING",
    "SPLITS",
    "Applied",
    "Item",
    "Split",
    "Tactics",
    "Task",
    "TaskLoadError",
    "TooFewProblems",
    "WorkedTactics",
    "load_task",
    "task_class",
]
