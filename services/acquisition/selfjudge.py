"""The self-judge (the model grading its own replies: its prompt and the P(correct) read from its
verdict) and the pass-rate histogram buckets of a shard's stats. Pure functions.

Label voting (majority answer, agreement, pass rate), which selection shares, lives in
:mod:`selfimprove.contracts.voting`.
"""

from __future__ import annotations

import math
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
