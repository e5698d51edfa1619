"""Run a benchmark with an engine under an inference strategy and score it (the fixed GPT-3 rule)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfimprove.runtime.benchmarks import BenchItem, score
from selfimprove.runtime.engine import Engine, GenerationRequest, SamplingParams
from selfimprove.runtime.stats import Accuracy, accuracy

STRATEGIES = ("greedy",)
EVAL_MAX_NEW_TOKENS = 128


@dataclass(frozen=True)
class SetResult:
    set_name: str
    accuracy: Accuracy
    outcomes: tuple[bool, ...]
    replies: tuple[str, ...]
    tokens: int
    seconds: float


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {strategy!r}: only {', '.join(STRATEGIES)} is available now "
            "(sampling strategies come with the refinement service)"
        )


def evaluate_set(
    engine: Engine,
    set_name: str,
    items: Sequence[BenchItem],
    strategy: str = "greedy",
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
) -> SetResult:
    """Greedy answers to every item, scored by exact match of the last signed integer."""
    import time

    check_strategy(strategy)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    start = time.perf_counter()
    results = engine.generate(GenerationRequest([it.prompt for it in items], params))
    seconds = time.perf_counter() - start
    replies = tuple(r.samples[0].text for r in results)
    outcomes = tuple(score(reply, item) for reply, item in zip(replies, items, strict=True))
    tokens = sum(r.samples[0].tokens for r in results)
    return SetResult(set_name, accuracy(outcomes), outcomes, replies, tokens, seconds)
