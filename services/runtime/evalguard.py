"""What a run's evaluation sets (``evaluation.test_sets``) forbid in its training data, read once
from their files: their exact problem keys and an n-gram index of their texts
(:mod:`selfimprove.runtime.decontam`).

Selection drops a training row by it (``decontaminated_key``, then ``decontaminated_ngram``);
acquisition skips a task prompt by it before sampling. The sets travel in the stage commands as
``test_sets_json``; a run that declares none gets an empty guard and reads no file. GPT-3 sets are
read from the stage's benchmarks folder and keyed as arithmetic problems (:attr:`BenchItem.key`);
data sets are keyed by their normalised text (:func:`~.tasks.datafile.text_key`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from selfimprove.runtime.decontam import Index
from selfimprove.runtime.tasks.base import problem_key
from selfimprove.runtime.testsets import TestSet

_SETS = TypeAdapter(list[TestSet])


class TestSetError(ValueError):
    """A declared evaluation set that cannot be read or parsed; the message names the set and file."""

    __test__ = False  # not a pytest class


def parse_test_sets(text: str) -> list[TestSet]:
    """The test sets of a command's ``test_sets_json`` (empty text: none).

    >>> [s.label for s in parse_test_sets('[{"label": "2D+", "gpt3": "two_digit_addition"}]')]
    ['2D+']
    >>> parse_test_sets("")
    []
    """
    try:
        return _SETS.validate_json(text or "[]")
    except ValidationError as exc:
        raise TestSetError(f"test_sets_json is not a list of test sets: {exc}") from None


def dump_test_sets(sets: Sequence[TestSet]) -> str:
    """``sets`` as the commands carry them (``""`` for none).

    >>> dump_test_sets([]), parse_test_sets(dump_test_sets([TestSet(label="a", gpt3="two_digit_addition")]))[0].label
    ('', 'a')
    """
    return _SETS.dump_json(list(sets), exclude_none=True).decode() if sets else ""


@dataclass(frozen=True)
class EvalGuard:
    """Exact keys and the n-gram index of some evaluation sets (the empty guard forbids nothing).

    >>> guard = EvalGuard(frozenset({("+", (1, 2))}), Index(["Q: What is 1 plus 2?"]), ("2D+",))
    >>> guard.rule("Q: What is 1 plus 2?", ("+", (1, 2))), guard.rule("Q: What is 1 plus 2?", None)
    ('key', 'ngram')
    >>> guard.rule("What is 2 + 2?", ("+", (2, 2))), EvalGuard().rule("anything", ("+", (1, 2)))
    (None, None)
    """

    keys: frozenset = frozenset()
    index: Index = field(default_factory=lambda: Index(()))
    labels: tuple[str, ...] = ()

    def rule(self, prompt: str, key: tuple | None) -> str | None:
        """``"key"`` when the problem key is an evaluation item's, else ``"ngram"`` when the prompt
        overlaps one (:meth:`Index.contaminated`), else ``None``."""
        if key is not None and key in self.keys:
            return "key"
        if self.index.contaminated(prompt):
            return "ngram"
        return None


def _gpt3(test_set: TestSet, benchmarks_dir: Path | None) -> tuple[list[tuple], list[str]]:
    from selfimprove.runtime.benchmarks import BenchmarkNotFoundError, load_set, resolve_sets

    name = str(test_set.gpt3)
    try:
        path = resolve_sets(name, benchmarks_dir)[name]
        items = load_set(path)
    except (BenchmarkNotFoundError, ValueError, OSError) as exc:
        raise TestSetError(f"test set {test_set.label!r} (GPT-3 {name}): {exc}") from None
    return [item.key for item in items], [item.prompt for item in items]


def _data(test_set: TestSet) -> tuple[list[tuple], list[str]]:
    from selfimprove.runtime.tasks.datafile import data_items

    assert test_set.data is not None
    try:
        items = data_items(test_set.data)
    except (ValueError, OSError) as exc:  # DataFileError names the file
        raise TestSetError(f"test set {test_set.label!r} ({test_set.data.path}): {exc}") from None
    keys = [k for k in (problem_key(item.meta) for item in items) if k is not None]
    return keys, [item.prompt for item in items]


def load_guard(sets: Sequence[TestSet], benchmarks_dir: Path | None = None) -> EvalGuard:
    """The guard of ``sets``; GPT-3 files are read from ``benchmarks_dir`` (else the default folder)
    only when a set is a GPT-3 one. A set that cannot be read is a :class:`TestSetError`."""
    keys: set = set()
    texts: list[str] = []
    for test_set in sets:
        found = _gpt3(test_set, benchmarks_dir) if test_set.gpt3 is not None else _data(test_set)
        keys.update(found[0])
        texts.extend(found[1])
    return EvalGuard(frozenset(keys), Index(texts), tuple(s.label for s in sets))


@lru_cache(maxsize=4)
def _cached(sets_json: str, benchmarks_dir: str | None) -> EvalGuard:
    return load_guard(parse_test_sets(sets_json), Path(benchmarks_dir) if benchmarks_dir else None)


def guard_for(sets_json: str, benchmarks_dir: Path | None = None) -> EvalGuard:
    """:func:`load_guard` of a command's ``test_sets_json``, built once per process for the same sets
    (stages see the same sets every iteration of a run)."""
    if not sets_json or sets_json.strip() == "[]":
        return EvalGuard()
    return _cached(sets_json, str(benchmarks_dir) if benchmarks_dir else None)
