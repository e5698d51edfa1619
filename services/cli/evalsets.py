"""Which test sets ``selfimprove eval`` and ``selfimprove report`` score: the GPT-3 sets named by
``--benchmark``, the ``evaluation.test_sets`` a run config declares, or one data file described by
flags. Every function returns :class:`~selfimprove.runtime.testsets.TestSet` s, so all of them are
scored by one path (:mod:`selfimprove.runtime.evaluate`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from selfimprove.runtime.testsets import TestSet

CONFIG_SUFFIXES = (".yaml", ".yml")


class EvalSetError(ValueError):
    """A ``--benchmark`` or ``--task`` that names no scorable set; the message says what is wrong."""


def benchmark_sets(benchmark: str) -> list[TestSet]:
    """``gpt3`` (the six sets), one GPT-3 set name, or a JSONL file in the GPT-3 format (``context``,
    ``completion``), each labelled by its set or file name and scored by the fixed GPT-3 rule.

    >>> [s.label for s in benchmark_sets("gpt3")][:2], benchmark_sets("two_digit_addition")[0].gpt3
    (['two_digit_addition', 'two_digit_subtraction'], 'two_digit_addition')
    """
    from selfimprove.runtime.benchmarks import GPT3_SETS
    from selfimprove.runtime.tasks.datafile import DataSource

    if benchmark == "gpt3":
        return [TestSet(label=name, gpt3=name) for name in GPT3_SETS]
    if benchmark in GPT3_SETS:
        return [TestSet(label=benchmark, gpt3=benchmark)]
    if benchmark.endswith(".jsonl") or os.sep in benchmark:
        path = Path(benchmark).expanduser()
        if not path.is_file():
            raise EvalSetError(f"benchmark file {path} does not exist")
        source = DataSource(path=str(path), prompt="context", answer="completion", verifier="integer")
        return [TestSet(label=path.stem, data=source)]
    raise EvalSetError(
        f"unknown benchmark {benchmark!r}: use 'gpt3', one of {', '.join(GPT3_SETS)}, or a .jsonl path"
    )


def declared_test_sets(config_yaml: str, where: str = "run config") -> list[TestSet]:
    """The ``evaluation.test_sets`` of a run config's text (only that section is read, so a config
    whose task files live elsewhere still names its test sets).

    >>> [s.label for s in declared_test_sets("evaluation: {test_sets: [{label: A, gpt3: two_digit_addition}]}")]
    ['A']
    >>> declared_test_sets("task: {name: arithmetic}")
    []
    """
    import yaml
    from pydantic import TypeAdapter, ValidationError

    try:
        data = yaml.safe_load(config_yaml) if config_yaml.strip() else {}
    except yaml.YAMLError as exc:
        raise EvalSetError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise EvalSetError(f"{where}: a run config is a YAML mapping of fields")
    evaluation = data.get("evaluation") or {}
    if not isinstance(evaluation, dict):
        raise EvalSetError(f"{where}: evaluation must be a mapping")
    try:
        return TypeAdapter(list[TestSet]).validate_python(evaluation.get("test_sets") or [])
    except ValidationError as exc:
        problems = "; ".join(
            f"evaluation.test_sets.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise EvalSetError(f"{where}: {problems}") from None


def config_sets(path: Path) -> list[TestSet]:
    """Every test set a run config file declares; a config that declares none is an error."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise EvalSetError(f"cannot read run config {path}: {exc.strerror}") from None
    sets = declared_test_sets(text, str(path))
    if not sets:
        raise EvalSetError(f"{path} declares no evaluation.test_sets: nothing to evaluate")
    return sets


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as verifier params, each value read as YAML (numbers stay numbers).

    >>> parse_params(["tolerance=0.01", "pattern=[A-D]"])
    {'tolerance': 0.01, 'pattern': '[A-D]'}
    """
    import yaml

    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EvalSetError(f"bad verifier param {pair!r}: use KEY=VALUE")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        params[key.strip()] = parsed if isinstance(parsed, (int, float, bool)) else value
    return params


def file_set(
    path: Path,
    prompt: str = "question",
    answer: str = "answer",
    id_field: str | None = None,
    template: str | None = None,
    verifier: str = "exact",
    verifier_params: dict[str, Any] | None = None,
) -> TestSet:
    """One data file (JSONL, CSV, Parquet or a ``save_to_disk`` folder) as a test set labelled by
    its name."""
    from selfimprove.runtime.tasks.datafile import DataSource

    if not path.exists():
        raise EvalSetError(f"no such data file {path}")
    source = DataSource(
        path=str(path),
        prompt=prompt,
        answer=answer,
        id=id_field,
        template=template,
        verifier=verifier,
        verifier_params=verifier_params or {},
    )
    return TestSet(label=path.stem if path.is_file() else path.name, data=source)


def is_config(path: Path) -> bool:
    return path.suffix.lower() in CONFIG_SUFFIXES
