"""Doctest collection for the whole repository: every example in a docstring is a unit test.

``--doctest-modules`` (pyproject) makes pytest collect the docstrings of ``services/`` (the
``selfimprove`` package) and ``benchmarks/`` beside ``tests/``, so no hand-kept module list can miss
one. This file adapts that collection to the layout:

- a module of ``services/`` is imported under its installed name (``selfimprove.core.retry``), not
  the folder's (``services.core.retry``): a second copy would register its metrics twice and keep its
  own registries;
- files without a ``>>>`` are not imported for doctests, so collection stays fast (no torch where no
  example needs it); the generated ``services/v2`` and modules whose optional dependency is absent are
  skipped (``__main__.py`` entry points pytest never imports for doctests);
- every doctest carries the ``unit`` marker, so ``pytest -m unit`` runs them.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Generator
from pathlib import Path
from types import ModuleType

import pytest
from _pytest.doctest import DoctestItem, DoctestModule

ROOT = Path(__file__).resolve().parent
SERVICES = ROOT / "services"
PACKAGE = "selfimprove"

# Modules that need an optional dependency: collected only where it can be imported.
OPTIONAL = {"services/runtime/vllm_engine.py": "vllm"}

# The stack, Prometheus and name fixtures, for the tests and the benchmarks alike.
pytest_plugins = ["tests.support.fixtures"]

collect_ignore = ["services/v2"] + [
    path for path, dependency in OPTIONAL.items() if importlib.util.find_spec(dependency) is None
]


def installed_name(path: Path) -> str:
    """The import name of a file of ``services/``.

    >>> installed_name(SERVICES / "core" / "retry.py")
    'selfimprove.core.retry'
    >>> installed_name(SERVICES / "runtime" / "tasks" / "__init__.py")
    'selfimprove.runtime.tasks'
    """
    parts = path.relative_to(SERVICES).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


class InstalledDoctestModule(DoctestModule):
    """The doctests of a ``services/`` module, imported as part of the installed package."""

    def _getobj(self) -> ModuleType:
        return importlib.import_module(installed_name(self.path))


def has_examples(path: Path) -> bool:
    return ">>>" in path.read_text(encoding="utf-8")


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(
    file_path: Path, parent: pytest.Collector
) -> Generator[None, list[pytest.Collector | None], list[pytest.Collector | None]]:
    """Drop pytest's doctest collector of a file without examples (importing it would only cost) and
    swap the one of a ``services/`` file for one importing the installed name."""
    collected = yield
    if not any(type(node) is DoctestModule for node in collected):
        return collected
    keep = has_examples(file_path)
    swap = file_path.is_relative_to(SERVICES)
    out: list[pytest.Collector | None] = []
    for node in collected:
        if type(node) is not DoctestModule:
            out.append(node)
        elif keep:
            out.append(InstalledDoctestModule.from_parent(parent, path=file_path) if swap else node)
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every doctest ``unit`` (before ``-m`` deselects), wherever it was collected."""
    for item in items:
        if isinstance(item, DoctestItem):
            item.add_marker(pytest.mark.unit)
