"""Score a model on evaluation items: any items with reference answers, judged by a verifier, under
an inference strategy. The GPT-3 arithmetic sets go through the same path as a test set whose
verifier is ``integer``, the fixed GPT-3 rule (:mod:`.tasks.verifiers`).

    loaded = load_test_set(TestSet(label="2D+", gpt3="two_digit_addition"), limit=200)
    result = evaluate_set(engine, loaded)
    result.accuracy.value, result.accuracy.low, result.accuracy.high
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from selfimprove.runtime.engine import Engine
from selfimprove.runtime.stats import Accuracy, accuracy
from selfimprove.runtime.tasks.base import Item
from selfimprove.runtime.tasks.verifiers import Verifier
from selfimprove.runtime.testsets import TestSet

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


def evaluate_items(
    engine: Engine,
    name: str,
    items: Sequence[Item],
    verifier: Verifier,
    strategy: str = "greedy",
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
    progress: Callable[[int], None] | None = None,
) -> SetResult:
    """Answers to every item under ``strategy`` (see :mod:`.strategies`), each judged by ``verifier``
    against the item's reference answer (items without one are refused). ``progress`` is told how
    many more items are answered as they are."""
    from selfimprove.runtime.strategies import Settings, run

    check_strategy(strategy)
    unanswered = [it.id for it in items if it.answer is None]
    if unanswered:
        raise ValueError(f"{name}: {len(unanswered)} items have no reference answer (first: {unanswered[0]})")
    done = run(
        engine,
        strategy,
        [it.prompt for it in items],
        verifier.extract,
        Settings(max_new_tokens=max_new_tokens),
        progress=progress,
    )
    replies = tuple(a.text for a in done.answers)
    outcomes = tuple(
        verifier.verify(reply, str(item.answer)) for reply, item in zip(replies, items, strict=True)
    )
    return SetResult(name, accuracy(outcomes), outcomes, replies, done.tokens, done.seconds)


@dataclass(frozen=True)
class EvalSet:
    """A test set ready to score: its label, its items (each with a reference answer), its verifier."""

    name: str
    items: tuple[Item, ...]
    verifier: Verifier


def load_test_set(test_set: TestSet, benchmarks_dir: Path | None = None, limit: int | None = None) -> EvalSet:
    """The first ``limit`` items of a declared test set with the verifier that judges them; a file
    without reference answers is refused, naming it."""
    source = test_set.source(benchmarks_dir)
    if source.answer is None:
        raise ValueError(f"test set {test_set.label!r}: {source.path} names no answer field to score against")
    return EvalSet(test_set.label, tuple(test_set.items(benchmarks_dir, limit)), source.make_verifier())


def evaluate_set(
    engine: Engine,
    s: EvalSet,
    strategy: str = "greedy",
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
    progress: Callable[[int], None] | None = None,
) -> SetResult:
    """:func:`evaluate_items` on a loaded test set."""
    return evaluate_items(engine, s.name, s.items, s.verifier, strategy, max_new_tokens, progress)
