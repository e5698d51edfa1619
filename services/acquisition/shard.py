"""A shard's rows and statistics from generated samples (pure), and the ``samples.jsonl`` format.

One row per prompt::

    {"id", "prompt", "category", "difficulty", "meta", "answer",
     "samples": [{"text", "tokens", "finish_reason", "extracted", "verified", "agrees", "judge"}],
     "majority", "agreement", "pass_rate",
     "rationales": [{"text", "tokens", "finish_reason", "extracted", "verified"}],
     "worked": [{"text", "tokens", "finish_reason", "extracted", "verified", "steps", "pick"}],
     "check": {"label", "prompt", "expects", "text", "tokens", "extracted", "passed"} | null,
     "witness": {"label", "text", "tokens", "extracted", "passed"} | null}

``answer`` is the task's reference, stored for reporting only (label-free selection never reads it);
``verified`` and ``pass_rate`` are ``null`` when the task has no verifier, ``judge`` when self-judge is off.
``rationales`` are replies to the prompt with its answer as a hint (``rationalize``; empty otherwise): kept
apart, so ``pass_rate``, ``majority`` and ``agreement`` describe the model's own answers only.
``worked`` are replies written from the model's answers to the task's sub-questions (``worked``; see
:mod:`selfimprove.runtime.tasks.worked`), with those answers as ``steps`` and how they were chosen as
``pick`` (``verifier``, or ``majority`` in label-free runs); kept apart likewise. The
sub-questions themselves follow the prompts' rows as rows of their own, marked ``meta.step`` (1 or 2,
and ``meta.pick`` ``majority`` when chosen so),
so selection can train the steps too; the shard's figures count them apart (:func:`shard_stats`).
``check`` is label-free mode's consistency check of the majority answer (``check_labels``; ``null``
when off, or when the prompt has no majority or the task no check question for it): the task's check
question, the answer it expects if the label is right, and the model's greedy reply to it.
``witness`` is its second route to the label (``witness_labels``; present only then, ``null`` for a
prompt with no label, a failed check, or no plan): the task's worked plan asked greedily, its reply,
and whether its final answer is the label.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from selfimprove.acquisition.scoring import PASS_RATE_BUCKETS, agreement, bucket, majority, pass_rate
from selfimprove.runtime.tasks.base import Item

Row = dict[str, Any]
# how a worked reply was chosen: its ``pick``, and its sub-questions' ``meta.pick`` (label-free only)
BY_MAJORITY, BY_VERIFIER = "majority", "verifier"
CATEGORY_PASS_RATE = "pass_rate/"  # stats key prefix: a category's mean pass rate
CATEGORY_PROMPTS = "prompts/"  # stats key prefix: how many of a category's prompts were verified
CATEGORY_ASKED = "asked/"  # stats key prefix: how many of a category's prompts were asked
CATEGORY_OPEN = "open_labels/"  # stats key prefix: a category's prompts with an open label


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


def make_row(
    item: Item,
    samples: Sequence[Any],
    extract: Callable[[str], str | None],
    verify: Callable[[Item, str], bool | None],
    judges: Sequence[float | None] | None = None,
    hinted: Sequence[Any] = (),
    worked: Sequence[Any] = (),
) -> Row:
    """The row of one prompt from its engine samples (``text``, ``tokens``, ``finish_reason``), its
    hinted samples and its worked replies (which also have ``steps``), if any; its label ``check``
    is ``None`` here (acquisition sets it after, from the row's ``majority``)."""

    def checked(s: Any) -> dict[str, Any]:
        return {
            "text": s.text,
            "tokens": s.tokens,
            "finish_reason": s.finish_reason,
            "extracted": extract(s.text),
            "verified": verify(item, s.text),
        }

    own = [checked(s) for s in samples]
    extracted = [o["extracted"] for o in own]
    label = majority(extracted)
    judges = judges or [None] * len(samples)
    return {
        "id": item.id,
        "prompt": item.prompt,
        "category": item.category,
        "difficulty": item.difficulty,
        "meta": jsonable(item.meta),
        "answer": item.answer,
        "samples": [
            {**o, "agrees": label is not None and o["extracted"] == label, "judge": j}
            for o, j in zip(own, judges, strict=True)
        ],
        "majority": label,
        "agreement": agreement(extracted, label),
        "pass_rate": pass_rate([o["verified"] for o in own]),
        "rationales": [checked(s) for s in hinted],
        "worked": [{**checked(s), "steps": list(s.steps), "pick": s.pick} for s in worked],
        "check": None,
    }


def is_step(row: Row) -> bool:
    """Whether ``row`` is a worked reply's sub-question rather than a task prompt."""
    return bool((row.get("meta") or {}).get("step"))


def shard_stats(rows: Sequence[Row], seconds: float) -> dict[str, float]:
    """Result statistics: counts, tokens/s, pass-rate histogram (prompt counts), yield, agreement.

    ``yield`` is the fraction of prompts with at least one verified sample (0 without a verifier),
    ``majority_share`` the fraction whose samples have a majority answer (no truth: label-free runs'
    data gate reads it),
    ``answered`` the fraction with a verified reply of any kind (its own, hinted or worked);
    ``rationalized`` counts prompts that only a hinted sample answered, ``worked`` prompts with a
    verified worked reply; ``labels_checked`` counts prompts whose majority answer was checked
    (``check_labels``) and ``labels_confirmed`` those whose check passed; ``labels_witnessed`` and
    ``labels_corroborated`` count the same for the worked-plan witness (``witness_labels``). Sub-question rows
    (:func:`is_step`) are left out of every prompt figure; ``step_prompts`` counts them, ``step_yield`` is their yield
    and ``steps_rationalized`` counts those a hinted sample answered (``rationalize_steps``). ``tokens`` counts every sample
    generated: the prompts', the hinted ones, the checks' and the sub-questions' (hinted ones too). Per category:
    ``pass_rate/C`` and ``prompts/C`` over its verified prompts, ``asked/C`` its prompts and
    ``open_labels/C`` those with an open label (:func:`open_label`).

    >>> row = {"samples": [{"tokens": 5, "verified": True}, {"tokens": 3, "verified": False}],
    ...        "pass_rate": 0.5, "agreement": 0.5}
    >>> s = shard_stats([row], 2.0)
    >>> s["tokens"], s["tokens_per_second"], s["yield"], s["pass_rate_0_50"]
    (8, 4.0, 1.0, 1)
    >>> s = shard_stats([{**row, "category": "add2"}, {**row, "category": "add2", "pass_rate": 1.0}], 1.0)
    >>> s["pass_rate/add2"], s["prompts/add2"], s["asked/add2"], s["open_labels/add2"]
    (0.75, 2, 2, 0)
    """
    steps = [r for r in rows if is_step(r)]
    tokens = sum(s["tokens"] for r in steps for s in [*r["samples"], *r.get("rationales", ())])
    rows = [r for r in rows if not is_step(r)]
    samples = [s for r in rows for s in r["samples"]]
    hinted = [s for r in rows for s in r.get("rationales", ())]
    worked = [s for r in rows for s in r.get("worked", ())]
    checks = [r["check"] for r in rows if r.get("check")]
    witnesses = [r["witness"] for r in rows if r.get("witness")]
    tokens += sum(s["tokens"] for s in [*samples, *hinted, *checks, *witnesses])
    rates = [r["pass_rate"] for r in rows if r["pass_rate"] is not None]
    out: dict[str, float] = {
        "prompts": len(rows),
        "samples": len(samples),
        "tokens": tokens,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "duration_seconds": seconds,
        "pass_rate_mean": sum(rates) / len(rates) if rates else 0.0,
        "yield": sum(any(s["verified"] for s in r["samples"]) for r in rows) / len(rows) if rows else 0.0,
        "agreement_mean": sum(r["agreement"] for r in rows) / len(rows) if rows else 0.0,
        "majority_share": sum(r.get("majority") is not None for r in rows) / len(rows) if rows else 0.0,
        "answered": sum(
            any(s["verified"] for s in [*r["samples"], *r.get("rationales", ()), *r.get("worked", ())])
            for r in rows
        )
        / len(rows)
        if rows
        else 0.0,
        "hinted_samples": len(hinted),
        "rationalized": sum(any(s["verified"] for s in r.get("rationales", ())) for r in rows),
        "worked_replies": len(worked),
        "worked": sum(any(s["verified"] for s in r.get("worked", ())) for r in rows),
        "labels_checked": len(checks),
        "labels_confirmed": sum(bool(c["passed"]) for c in checks),
        "labels_witnessed": len(witnesses),
        "labels_corroborated": sum(bool(w["passed"]) for w in witnesses),
        "step_prompts": len(steps),
        "step_yield": sum(any(s["verified"] for s in r["samples"]) for r in steps) / len(steps)
        if steps
        else 0.0,
        "steps_rationalized": sum(any(s["verified"] for s in r.get("rationales", ())) for r in steps),
    }
    out.update(dict.fromkeys(PASS_RATE_BUCKETS, 0))
    for rate in rates:
        out[bucket(rate)] += 1
    by_category: dict[str, list[float]] = {}
    for r in rows:
        if r["pass_rate"] is not None and r.get("category"):
            by_category.setdefault(r["category"], []).append(r["pass_rate"])
    for category, values in sorted(by_category.items()):
        out[f"{CATEGORY_PASS_RATE}{category}"] = sum(values) / len(values)
        out[f"{CATEGORY_PROMPTS}{category}"] = len(values)
    for r in rows:
        if r.get("category"):
            for prefix, add in ((CATEGORY_ASKED, 1), (CATEGORY_OPEN, open_label(r))):
                key = f"{prefix}{r['category']}"
                out[key] = out.get(key, 0) + int(add)
    return out


def open_label(row: Row) -> bool:
    """Whether ``row`` has a label the model is still learning: a majority answer that passed every
    check asked of it (the label check, the witness), though not all of its samples gave it. Read from
    the model's own answers only, never the reference: a category whose labels are all unanimous is
    learnt, one with no label teaches nothing; label-free focus shares prompts by this.

    >>> open_label({"majority": "7", "agreement": 0.5, "check": {"passed": True}})
    True
    >>> open_label({"majority": "7", "agreement": 1.0}), open_label({"majority": None, "agreement": 0.0})
    (False, False)
    >>> open_label({"majority": "7", "agreement": 0.5, "check": {"passed": False}})
    False
    """
    checks = [row.get("check"), row.get("witness")]
    return (
        row.get("majority") is not None
        and row["agreement"] < 1.0
        and all(c["passed"] for c in checks if c is not None)
    )


def to_jsonl(rows: Sequence[Row]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


def from_jsonl(data: bytes) -> list[Row]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
