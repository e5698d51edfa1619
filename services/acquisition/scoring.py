"""Scores of a prompt's K samples, as pure functions: majority answer, agreement, pass rate, judge.

Self-consistency needs no ground truth: the majority answer of a prompt's samples is its
pseudo-label, and a sample *agrees* when its extracted answer equals it. A tie has no majority.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

# Buckets of the pass-rate histogram in the result stats: name -> (low, high], with exact 0 and 1.
PASS_RATE_BUCKETS = (
    "pass_rate_0",
    "pass_rate_0_25",
    "pass_rate_0_50",
    "pass_rate_0_75",
    "pass_rate_lt_1",
    "pass_rate_1",
)


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


def bucket(rate: float) -> str:
    """The histogram bucket of a per-prompt pass rate.

    >>> [bucket(r) for r in (0.0, 0.25, 0.5, 0.75, 0.8, 1.0)]
    ['pass_rate_0', 'pass_rate_0_25', 'pass_rate_0_50', 'pass_rate_0_75', 'pass_rate_lt_1', 'pass_rate_1']
    """
    if rate <= 0:
        return PASS_RATE_BUCKETS[0]
    if rate >= 1:
        return PASS_RATE_BUCKETS[-1]
    index = min(4, math.ceil(rate * 4 - 1e-9))
    return PASS_RATE_BUCKETS[index]


def judge_prompt(question: str, reply: str) -> str:
    """The prompt with which the model grades an answer (its first word is the verdict)."""
    return (
        f"Question: {question}\n\nProposed answer: {reply}\n\n"
        "Is the proposed answer correct? Reply with Yes or No only."
    )


def judge_score(verdict: str, logprobs: Sequence[float] | None) -> float:
    """P(correct) from a greedy verdict: the probability of its first token when it says Yes,
    one minus it when it says No, 0.5 when it says neither.

    >>> judge_score("Yes.", [math.log(0.8)]), round(judge_score("No", [math.log(0.9)]), 3)
    (0.8, 0.1)
    >>> judge_score("Maybe", None)
    0.5
    """
    word = verdict.strip().lower()
    p = math.exp(logprobs[0]) if logprobs else 1.0
    if word.startswith("yes"):
        return p
    if word.startswith("no"):
        return 1.0 - p
    return 0.5
