"""Run a benchmark with an engine under an inference strategy and score it (the fixed GPT-3 rule)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfimprove.runtime.benchmarks import BenchItem, score
from selfimprove.runtime.engine import Engine
from selfimprove.runtime.stats import Accuracy, accuracy

STRATEGIES = ("greedy", "self_consistency@k", "best_of_n@n", "self_refine@r", "prompt_ensemble@k")
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
    """Evaluation answers as serving would: strategies that need a verifier are refused."""
    from selfimprove.runtime.strategies import parse

    parse(strategy, serving=True)


def evaluate_set(
    engine: Engine,
    set_name: str,
    items: Sequence[BenchItem],
    strategy: str = "greedy",
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
) -> SetResult:
    """Answers to every item under ``strategy`` (see :mod:`.strategies`), scored by exact match of
    the last signed integer."""
    from selfimprove.runtime.extract import last_integer
    from selfimprove.runtime.strategies import Settings, run

    check_strategy(strategy)

    def extract(reply: str) -> str | None:
        value = last_integer(reply)
        return None if value is None else str(value)

    done = run(
        engine, strategy, [it.prompt for it in items], extract, Settings(max_new_tokens=max_new_tokens)
    )
    replies = tuple(a.text for a in done.answers)
    outcomes = tuple(score(reply, item) for reply, item in zip(replies, items, strict=True))
    return SetResult(set_name, accuracy(outcomes), outcomes, replies, done.tokens, done.seconds)
