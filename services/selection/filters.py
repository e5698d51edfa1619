"""Selection filters as pure functions over lists; each returns what it kept and how many it dropped.

Rows are ``samples.jsonl`` rows (see :mod:`selfimprove.contracts.samples`); a *candidate* is
``(row, sample)``: a response the label step accepted for its prompt.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

from selfimprove.runtime.tasks.base import problem_key

Row = dict[str, Any]
Sample = dict[str, Any]


def row_key(row: Row) -> tuple | None:
    """The ``(operator, operands)`` key of a row from its meta (:func:`problem_key`).

    >>> row_key({"meta": {"key": ["+", [48, 27]]}})
    ('+', (48, 27))
    >>> row_key({"meta": {}}) is None
    True
    """
    return problem_key(row.get("meta"))


def decontaminate(rows: Sequence[Row], keys: Collection[tuple]) -> tuple[list[Row], int]:
    """Drop rows whose problem key is an evaluation item's (or a dev problem's).

    >>> rows = [{"meta": {"key": ["+", [1, 2]]}}, {"meta": {"key": ["+", [2, 2]]}}, {"meta": {}}]
    >>> kept, dropped = decontaminate(rows, {("+", (1, 2))})
    >>> len(kept), dropped
    (2, 1)
    """
    kept = [r for r in rows if row_key(r) not in keys or row_key(r) is None]
    return kept, len(rows) - len(kept)


def drop_overlapping(rows: Sequence[Row], overlaps: Callable[[str], bool]) -> tuple[list[Row], int]:
    """Drop rows whose prompt ``overlaps`` an evaluation item (the n-gram rule,
    :meth:`selfimprove.runtime.decontam.Index.contaminated`).

    >>> from selfimprove.runtime.decontam import Index
    >>> index = Index(["There were 3 dollars in Olivia's wallet. She collected 49 more dollars."])
    >>> rows = [{"prompt": "Q: there were 3 dollars in olivia's wallet; she collected 49 more dollars"},
    ...         {"prompt": "There were 5 apples."}]
    >>> kept, dropped = drop_overlapping(rows, index.contaminated)
    >>> [r["prompt"] for r in kept], dropped
    (['There were 5 apples.'], 1)
    """
    kept = [r for r in rows if not overlaps(r["prompt"])]
    return kept, len(rows) - len(kept)


def band(
    rows: Sequence[Row],
    rate: Callable[[Row], float],
    low: float,
    high: float,
    rescued: Callable[[Row], bool] = lambda row: False,
) -> tuple[list[Row], int]:
    """Keep rows whose per-prompt rate is strictly inside ``(low, high)``: drop what the model
    always gets and what it never gets, unless ``rescued`` (a verified hinted reply, for a prompt it
    never gets; a verified worked reply, at any rate: the form is what it teaches).

    >>> rows = [{"r": 0.0}, {"r": 0.5}, {"r": 1.0}, {"r": 0.0, "hint": True}, {"r": 1.0, "hint": True}]
    >>> band(rows, lambda r: r["r"], 0.0, 1.0)
    ([{'r': 0.5}], 4)
    >>> band(rows, lambda r: r["r"], 0.0, 1.0, lambda r: r.get("hint", False))
    ([{'r': 0.5}, {'r': 0.0, 'hint': True}, {'r': 1.0, 'hint': True}], 2)
    >>> band(rows, lambda r: r["r"], 0.0, 1.5)[1]  # a high above 1 keeps what every sample answered
    2
    """
    kept = [r for r in rows if low < rate(r) < high or rescued(r)]
    return kept, len(rows) - len(kept)


def sane(sample: Sample, max_tokens: int, max_chars: int) -> bool:
    """A usable response: ended by itself, not empty, has an answer, within the length caps.

    >>> ok = {"text": "48 + 27 = 75", "tokens": 9, "finish_reason": "stop", "extracted": "75"}
    >>> sane(ok, 64, 500), sane({**ok, "finish_reason": "length"}, 64, 500), sane(ok, 8, 500)
    (True, False, False)
    """
    text = (sample.get("text") or "").strip()
    return (
        sample.get("finish_reason") == "stop"
        and bool(text)
        and sample.get("extracted") is not None
        and int(sample.get("tokens") or 0) <= max_tokens
        and len(text) <= max_chars
    )


def normalize(text: str) -> str:
    """Text compared by exact deduplication: lower case, single spaces.

    >>> normalize("  The  Answer is 5. ")
    'the answer is 5.'
    """
    return " ".join(text.lower().split())


def exact_dedup(texts: Sequence[str]) -> tuple[list[int], int]:
    """Indices of the first occurrence of each normalized text.

    >>> exact_dedup(["a b", "A  b", "c"])
    ([0, 2], 1)
    """
    seen: set[str] = set()
    kept = []
    for i, t in enumerate(texts):
        if normalize(t) not in seen:
            seen.add(normalize(t))
            kept.append(i)
    return kept, len(texts) - len(kept)


def cap_per_group(groups: Sequence[str], cap: int) -> tuple[list[int], int]:
    """Indices of the first ``cap`` items of each group.

    >>> cap_per_group(["a", "a", "b", "a"], 2)
    ([0, 1, 2], 1)
    """
    counts: Counter[str] = Counter()
    kept = []
    for i, g in enumerate(groups):
        if counts[g] < cap:
            counts[g] += 1
            kept.append(i)
    return kept, len(groups) - len(kept)


def category_cap(categories: Sequence[str], cap: int | None, ratio: float) -> int:
    """The per-category cap: as given, or ``ratio`` times the mean count per category.

    >>> category_cap(["a"] * 9 + ["b"], None, 1.0), category_cap(["a"], 3, 1.0)
    (5, 3)
    """
    if cap is not None:
        return cap
    counts = Counter(categories)
    return max(1, math.ceil(ratio * len(categories) / max(1, len(counts))))
