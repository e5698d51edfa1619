"""The ``samples.jsonl`` row: what acquisition writes for each prompt and selection reads.

One row per prompt (:class:`PromptRow`; its entries :class:`Sample`, :class:`Rationale`,
:class:`WorkedReply`, :class:`Check`)::

    {"id", "prompt", "category", "difficulty", "meta", "answer",
     "samples": [{"text", "tokens", "finish_reason", "extracted", "verified", "agrees", "judge"}],
     "majority", "agreement", "pass_rate",
     "rationales": [{"text", "tokens", "finish_reason", "extracted", "verified"}],
     "worked": [{"text", "tokens", "finish_reason", "extracted", "verified", "steps", "pick"}],
     "check": {"label", "prompt", "expects", "text", "tokens", "extracted", "passed"} | null}

``answer`` is the task's reference, stored for reporting only (label-free selection never reads it);
``verified`` and ``pass_rate`` are ``null`` when the task has no verifier, ``judge`` when self-judge is off.
``rationales`` are replies to the prompt with its answer as a hint (``rationalize``; empty otherwise): kept
apart, so ``pass_rate``, ``majority`` and ``agreement`` describe the model's own answers only.
``worked`` are replies written from the model's answers to the task's sub-questions (``worked``; see
:mod:`selfimprove.runtime.tasks.worked`), with those answers as ``steps`` and how they were chosen as
``pick`` (:data:`BY_VERIFIER`, or :data:`BY_MAJORITY` in label-free runs); kept apart likewise. The
sub-questions themselves follow the prompts' rows as rows of their own, marked ``meta.step`` (1 or 2,
and ``meta.pick`` ``majority`` when chosen so), so selection can train the steps too (:func:`is_step`).
A prompt the model restated in its own words (``acquisition.paraphrase``) has a row of its own too,
marked ``paraphrase_of`` (the source prompt's id; :func:`is_paraphrase`), stored only when the
restatement kept its meaning: it is the same item (category, reference answer, ``meta.key``) asked in
other words, and ``meta.pick`` is ``majority`` when it was kept by agreement with the source's
majority answer (label-free) rather than by the verifier.
``check`` is label-free mode's consistency check of the majority answer (``check_labels``; ``null``
when off, or when the prompt has no majority or the task no check question for it): the task's check
question, the answer it expects if the label is right, and the model's greedy reply to it.
The code passes rows as :data:`Row` (plain dicts, as JSON gives them back); the ``TypedDict`` classes
are the schema they follow, checked against acquisition's rows by the unit tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

Row = dict[str, Any]
"""One ``samples.jsonl`` row as code passes it: its keys are :class:`PromptRow`'s."""

BY_MAJORITY = "majority"
"""A worked reply's ``pick`` (and its sub-questions' ``meta.pick``): sub-answers chosen by majority."""
BY_VERIFIER = "verifier"
"""A worked reply's ``pick``: sub-answers chosen by the task's verifier."""


class Sample(TypedDict):
    """One of a prompt's own K samples."""

    text: str
    """The model's reply, as generated."""
    tokens: int
    """How many tokens the reply has."""
    finish_reason: str
    """Why generation stopped (``stop`` or ``length``)."""
    extracted: str | None
    """The final answer the task reads from the reply; ``None`` when it has none."""
    verified: bool | None
    """The task's verifier on the reply; ``None`` when the task has no verifier."""
    agrees: bool
    """Whether ``extracted`` equals the prompt's ``majority``."""
    judge: float | None
    """The model's own P(correct) for the reply; ``None`` when self-judge is off."""


class Rationale(TypedDict):
    """A reply to the prompt asked with its answer as a hint."""

    text: str
    """The reply."""
    tokens: int
    """How many tokens it has."""
    finish_reason: str
    """Why generation stopped."""
    extracted: str | None
    """Its final answer, if any."""
    verified: bool | None
    """The verifier on it; ``None`` without a verifier."""


class WorkedReply(Rationale):
    """A reply written from the model's answers to the task's sub-questions."""

    steps: list[str]
    """The sub-answers it was written from."""
    pick: str
    """How the sub-answers were chosen: :data:`BY_VERIFIER` or :data:`BY_MAJORITY`."""


class Check(TypedDict):
    """Label-free mode's check of a majority answer by the task's check question."""

    label: str
    """The majority answer checked."""
    prompt: str
    """The check question."""
    expects: str
    """The answer the check question has if the label is right."""
    text: str
    """The model's greedy reply to the check question."""
    tokens: int
    """How many tokens that reply has."""
    extracted: str | None
    """Its final answer, if any."""
    passed: bool
    """Whether ``extracted`` is ``expects``."""


class _PromptRowBase(TypedDict):
    id: str
    """The prompt's id, unique in its run (a sub-question's is its prompt's id with a step suffix)."""
    prompt: str
    """The text the model was asked."""
    category: str
    """The task category, for balance and per-category figures."""
    difficulty: int
    """The task's difficulty level the prompt was drawn at."""
    meta: dict[str, Any]
    """Task metadata, JSON-safe (:func:`jsonable`); ``step`` and ``pick`` mark sub-question rows."""
    answer: str | None
    """The task's reference answer: reporting only, never read by label-free selection."""
    samples: list[Sample]
    """The model's own K samples."""
    majority: str | None
    """The most common extracted answer of ``samples``; ``None`` when none or tied."""
    agreement: float
    """The fraction of ``samples`` that give ``majority`` (0 without one)."""
    pass_rate: float | None
    """The fraction of ``samples`` verified; ``None`` without a verifier."""
    rationales: list[Rationale]
    """Hinted replies (empty unless ``rationalize``)."""
    worked: list[WorkedReply]
    """Worked replies (empty unless ``worked``)."""
    check: Check | None
    """The label check (``None`` when off or not possible)."""


class PromptRow(_PromptRowBase, total=False):
    """One ``samples.jsonl`` row: a prompt (or a sub-question, or a restated prompt) and everything
    generated for it."""

    paraphrase_of: str
    """Only on a restated prompt's row: the id of the prompt it restates (whose row is in the same
    shard). The row's ``prompt`` is the model's restatement; everything else is the source item's."""


def jsonable(value: Any) -> Any:
    """Tuples become lists (JSON has no tuples); mappings become dicts.

    >>> jsonable({"key": ("+", (1, 2))})
    {'key': ['+', [1, 2]]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def is_step(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is a worked reply's sub-question rather than a task prompt.

    >>> is_step({"meta": {"step": 1}}), is_step({"meta": {}}), is_step({"meta": None})
    (True, False, False)
    """
    return bool((row.get("meta") or {}).get("step"))


def is_paraphrase(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is a restated prompt (``paraphrase_of``) rather than a task prompt.

    >>> is_paraphrase({"paraphrase_of": "ab"}), is_paraphrase({"id": "ab"})
    (True, False)
    """
    return bool(row.get("paraphrase_of"))


def to_jsonl(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """``samples.jsonl`` bytes: one row a line, keys sorted.

    >>> to_jsonl([{"id": "a", "agreement": 1.0}])
    b'{"agreement": 1.0, "id": "a"}\\n'
    """
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


def from_jsonl(data: bytes) -> list[Row]:
    """The rows of ``samples.jsonl`` bytes (blank lines skipped); a line that is not a JSON object is an
    error that names it.

    >>> from_jsonl(b'{"id": "a"}\\n\\n{"id": "b"}\\n')
    [{'id': 'a'}, {'id': 'b'}]
    >>> from_jsonl(b'{"id": "a"}\\n[1]\\n')
    Traceback (most recent call last):
    ...
    ValueError: samples.jsonl line 2: expected a JSON object, got list
    """
    rows: list[Row] = []
    for number, line in enumerate(data.decode().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"samples.jsonl line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"samples.jsonl line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows
