"""Label voting over a prompt's K samples, as pure functions: majority answer, agreement, pass rate.

Self-consistency needs no ground truth: the majority answer of a prompt's samples is its
pseudo-label, and a sample *agrees* when its extracted answer equals it. A tie has no majority.
Acquisition writes these figures into each ``samples.jsonl`` row; selection votes again over the
answers it keeps (label-free mode), so both use these functions and their rules agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def majority(answers: Sequence[str | None]) -> str | None:
    """The most common non-empty answer; ``None`` when there is none or the top count is tied.

    >>> majority(["75", "75", "74", None])
    '75'
    >>> majority(["1", "2"]) is None, majority([None, None]) is None
    (True, True)
    """
    counts = Counter(a for a in answers if a is not None).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def agreement(answers: Sequence[str | None], label: str | None) -> float:
    """Fraction of all samples whose answer equals ``label`` (0 without a label).

    >>> agreement(["75", "75", "74", None], "75")
    0.5
    >>> agreement(["1", "2"], None)
    0.0
    """
    if label is None or not answers:
        return 0.0
    return sum(a == label for a in answers) / len(answers)


def pass_rate(verified: Sequence[bool | None]) -> float | None:
    """Fraction of samples the verifier accepted; ``None`` when the task has no verifier.

    >>> pass_rate([True, False, False, True]), pass_rate([None, None])
    (0.5, None)
    """
    if not verified or any(v is None for v in verified):
        return None
    return sum(bool(v) for v in verified) / len(verified)
