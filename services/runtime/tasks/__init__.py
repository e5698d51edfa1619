"""Task sources: the :class:`Task` interface, the arithmetic family, seed sets, and the resolver."""

from selfimprove.runtime.tasks.base import SPLITS, Item, Split, Task, TooFewProblems
from selfimprove.runtime.tasks.registry import TaskLoadError, load_task

__all__ = ["SPLITS", "Item", "Split", "Task", "TaskLoadError", "TooFewProblems", "load_task"]
