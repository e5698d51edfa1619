"""Which samples of a prompt count as right: by the verifier, or by the majority pseudo-label.

The label-free path works on :func:`blind` rows, which hold no reference answer and no verifier
verdict, so no ground truth can reach it. :func:`precision` compares labels with the truth
afterwards, for the data card only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from selfimprove.contracts.samples import BY_MAJORITY, is_paraphrase, is_step
from selfimprove.contracts.voting import agreement, majority

VERIFIED, LABEL_FREE = "verified", "label_free"
Row = dict[str, Any]


def blind(rows: Sequence[Row]) -> list[Row]:
    """Copies of ``rows`` without ground truth: no ``answer``, ``pass_rate``, sample ``verified``,
    ``rationales`` (replies to a prompt that carried the answer), and no worked reply or sub-question
    row the verifier chose (which sub-question was asked second depended on it), nor a restated
    prompt the verifier kept. Worked replies, sub-questions and restated prompts chosen by majority
    (``pick`` ``majority``, label-free acquisition) stay, without their verdicts.

    >>> blind([{"id": "a", "answer": "5", "pass_rate": 1.0, "samples": [{"text": "5", "verified": True}],
    ...         "rationales": [{"text": "5", "verified": True}]}, {"id": "a.s1", "meta": {"step": 1}, "samples": []}])
    [{'id': 'a', 'samples': [{'text': '5'}], 'worked': []}]
    >>> worked = [{"text": "5", "verified": True, "pick": "majority"}, {"text": "6", "verified": True}]
    >>> step = {"id": "a.s1", "meta": {"step": 1, "pick": "majority"}, "samples": []}
    >>> blind([{"id": "a", "samples": [], "worked": worked}, step])
    [{'id': 'a', 'samples': [], 'worked': [{'text': '5', 'pick': 'majority'}]}, {'id': 'a.s1', 'meta': {'step': 1, 'pick': 'majority'}, 'samples': [], 'worked': []}]
    >>> restated = {"id": "a.p1", "paraphrase_of": "a", "meta": {}, "samples": []}
    >>> [r["id"] for r in blind([restated, {**restated, "id": "a.p2", "meta": {"pick": "majority"}}])]
    ['a.p2']
    """
    hidden = {"answer", "pass_rate", "rationales", "worked", "samples"}
    return [
        {
            **{k: v for k, v in r.items() if k not in hidden},
            "samples": [_unverified(s) for s in r["samples"]],
            "worked": [_unverified(s) for s in r.get("worked", ()) if _by_majority(s)],
        }
        for r in rows
        if not (is_step(r) or is_paraphrase(r)) or _by_majority(r.get("meta") or {})
    ]


def _by_majority(entry: Mapping[str, Any]) -> bool:
    return entry.get("pick") == BY_MAJORITY


def _unverified(sample: Row) -> Row:
    return {k: v for k, v in sample.items() if k != "verified"}


def rationales(row: Row) -> list[Row]:
    """The verified hinted replies of a row (verified mode's rescue for prompts the model never got).

    >>> rationales({"rationales": [{"text": "5", "verified": True}, {"text": "6", "verified": False}]})
    [{'text': '5', 'verified': True}]
    >>> rationales({"samples": []})
    []
    """
    return [s for s in row.get("rationales", ()) if s.get("verified")]


def worked(row: Row, mode: str, label: str | None = None) -> list[Row]:
    """The worked replies of a row that count as right, marked ``worked``: verified mode, those the
    verifier accepted (final answer and every step); label-free, those whose answer is ``label``.

    >>> worked({"worked": [{"text": "5", "verified": True}, {"text": "6", "verified": False}]}, VERIFIED)
    [{'text': '5', 'verified': True, 'worked': True}]
    >>> row = {"worked": [{"text": "so 5", "extracted": "5"}]}
    >>> worked(row, LABEL_FREE, "5"), worked(row, LABEL_FREE, "6"), worked(row, LABEL_FREE, None)
    ([{'text': 'so 5', 'extracted': '5', 'worked': True}], [], [])
    """
    if mode == LABEL_FREE:
        right = [s for s in row.get("worked", ()) if label is not None and s.get("extracted") == label]
    else:
        right = [s for s in row.get("worked", ()) if s.get("verified")]
    return [{**s, "worked": True} for s in right]


def label_of(row: Row, mode: str, threshold: float) -> str | None:
    """The answer a sample must give to count as right (label-free: the majority answer when its
    share reaches ``threshold``; verified: unused, ``None``).

    >>> row = {"samples": [{"extracted": "7"}, {"extracted": "7"}, {"extracted": "8"}, {"extracted": None}]}
    >>> label_of(row, LABEL_FREE, 0.5), label_of(row, LABEL_FREE, 0.75)
    ('7', None)
    """
    if mode != LABEL_FREE:
        return None
    answers = [s.get("extracted") for s in row["samples"]]
    label = majority(answers)
    return label if label is not None and agreement(answers, label) >= threshold else None


def refused(row: Row, label: str | None) -> bool:
    """Whether the row's label check (``task.tactics.check_labels``) refuses ``label``: a check was
    asked and it was of another answer, or the model did not answer it as the label predicts. A row
    with no check (off, or none possible) refuses nothing.

    >>> check = {"label": "7", "passed": True}
    >>> refused({"check": check}, "7"), refused({"check": {**check, "passed": False}}, "7"), refused({"check": check}, "8")
    (False, True, True)
    >>> refused({"check": None}, "7"), refused({}, "7"), refused({"check": check}, None)
    (False, False, False)
    """
    return _refuses(row.get("check"), label)


def _refuses(check: Mapping[str, Any] | None, label: str | None) -> bool:
    return label is not None and bool(check) and not (check["label"] == label and check["passed"])


def has_verdict(row: Row) -> bool:
    """Whether the task's verifier judged any reply of ``row`` (its own samples, or its hinted
    replies when a hint-only iteration asked it nothing plain).

    >>> has_verdict({"samples": [], "rationales": [{"verified": False}]}), has_verdict({"samples": [{"verified": None}]})
    (True, False)
    """
    return any(s.get("verified") is not None for s in [*row.get("samples", ()), *row.get("rationales", ())])


def rate(row: Row, mode: str) -> float:
    """Per-prompt rate for the difficulty band: verified fraction, or majority agreement.

    >>> row = {"samples": [{"extracted": "7", "verified": True}, {"extracted": "7", "verified": False}]}
    >>> rate(row, VERIFIED), rate(row, LABEL_FREE)
    (0.5, 1.0)
    """
    samples = row["samples"]
    if not samples:
        return 0.0
    if mode == VERIFIED:
        return sum(bool(s.get("verified")) for s in samples) / len(samples)
    answers = [s.get("extracted") for s in samples]
    return agreement(answers, majority(answers))


def split(row: Row, mode: str, label: str | None) -> tuple[list[dict], list[dict]]:
    """``(right, wrong)`` samples of a row under the mode's labels.

    >>> row = {"samples": [{"extracted": "7", "verified": False}, {"extracted": "8", "verified": True}]}
    >>> [len(x) for x in split(row, VERIFIED, None)], [len(x) for x in split(row, LABEL_FREE, "7")]
    ([1, 1], [1, 1])
    """
    if mode == VERIFIED:
        right = [s for s in row["samples"] if s.get("verified") is True]
        wrong = [s for s in row["samples"] if s.get("verified") is False]
        return right, wrong
    if label is None:
        return [], list(row["samples"])
    return [s for s in row["samples"] if s.get("extracted") == label], [
        s for s in row["samples"] if s.get("extracted") != label
    ]


def precision(labels: Mapping[str, str | None], truth: Mapping[str, str | None]) -> float | None:
    """Fraction of labelled prompts whose label equals the truth (``None`` when nothing to compare).

    >>> precision({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "5", "c": None})
    0.5
    """
    pairs = [(labels[k], truth.get(k)) for k in labels if truth.get(k) is not None]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None
