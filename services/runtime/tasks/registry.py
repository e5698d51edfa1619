"""Resolve a task named in a run config: a built-in short name or ``"package.module:Class"``."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from selfimprove.runtime.tasks.base import Task

BUILTIN = {
    "arithmetic": "selfimprove.runtime.tasks.arithmetic:ArithmeticTask",
    "data": "selfimprove.runtime.tasks.datafile:DataTask",
}


class TaskLoadError(ValueError):
    """A task name that does not resolve to a Task class; the message says why."""


def task_class(name: str) -> type[Task]:
    """The Task class ``name`` resolves to (no instance: e.g. for its ``tactics_model``).

    >>> task_class("arithmetic").tactics_model.__name__
    'WorkedTactics'
    """
    path = BUILTIN.get(name, name)
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise TaskLoadError(
            f"unknown task {name!r}: use a built-in name ({', '.join(BUILTIN)}) or an import path 'package.module:Class'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskLoadError(f"task {name!r}: cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise TaskLoadError(f"task {name!r}: module {module_name!r} has no attribute {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskLoadError(f"task {name!r}: {path} is not a subclass of selfimprove.runtime.tasks.Task")
    return cls


def load_task(name: str, params: Mapping[str, Any] | None = None) -> Task:
    """Instantiate the task ``name`` with keyword ``params``.

    >>> load_task("arithmetic", {"categories": ["add2"]}).categories
    ('add2',)
    >>> try:
    ...     load_task("json:nope")
    ... except TaskLoadError as exc:
    ...     print(exc)
    task 'json:nope': module 'json' has no attribute 'nope'
    """
    cls = task_class(name)
    try:
        return cls(**dict(params or {}))
    except TypeError as exc:
        raise TaskLoadError(f"task {name!r}: bad parameters {dict(params or {})}: {exc}") from exc
