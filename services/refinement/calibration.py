"""Calibration: measure each strategy on the same dev problems and choose one under a token budget.

The task verifier only *scores* the dev answers here; the strategies themselves never see it (except
``best_of_n_verifier``, which is measured as an oracle row when asked for but never chosen).
The choice is the most accurate eligible strategy within the budget whose gain over greedy is
significant by an exact paired (McNemar) test; greedy when none is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from selfimprove.runtime import strategies
from selfimprove.runtime.engine import Engine
from selfimprove.runtime.stats import mcnemar
from selfimprove.runtime.tasks.base import Item, Task

ALPHA = 0.05


@dataclass(frozen=True)
class Row:
    """One strategy's dev-set measurement; ``outcomes`` are per problem, in dev order."""

    strategy: str
    outcomes: tuple[bool, ...]
    tokens_per_problem: float
    seconds_per_problem: float
    p_value: float = 1.0  # paired test against greedy
    delta: float = 0.0
    eligible: bool = True  # may be served (uses no verifier)

    @property
    def accuracy(self) -> float:
        return sum(self.outcomes) / len(self.outcomes) if self.outcomes else 0.0


def with_greedy(specs: Sequence[str]) -> list[str]:
    """Validated, deduplicated specs with greedy (the baseline) first.

    >>> with_greedy(["self_consistency@5", "greedy", "self_consistency@5"])
    ['greedy', 'self_consistency@5']
    """
    names = ["greedy"] + [strategies.parse(s).name for s in specs]
    return list(dict.fromkeys(names))


def choose(rows: Sequence[Row], token_budget: float = 0.0, alpha: float = ALPHA) -> str:
    """The strategy to serve: best accuracy among eligible rows within ``token_budget`` tokens per
    problem (0 = no budget) that beat greedy with ``p < alpha``; greedy otherwise.

    >>> g = Row("greedy", (True, False, False, False), 10, 1)
    >>> sc = Row("self_consistency@5", (True, True, True, False), 50, 5, p_value=0.01, delta=0.5)
    >>> choose([g, sc]), choose([g, sc], token_budget=20), choose([g, sc], alpha=0.001)
    ('self_consistency@5', 'greedy', 'greedy')
    """
    fits = [
        r
        for r in rows
        if r.eligible
        and r.strategy != "greedy"
        and (token_budget <= 0 or r.tokens_per_problem <= token_budget)
        and r.delta > 0
        and r.p_value < alpha
    ]
    if not fits:
        return "greedy"
    return max(fits, key=lambda r: (r.accuracy, -r.tokens_per_problem)).strategy


def measure(
    engine: Engine,
    task: Task,
    items: Sequence[Item],
    specs: Sequence[str],
    settings: strategies.Settings | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Every strategy of ``specs`` (greedy added first) on ``items``, with its paired test vs greedy."""
    if not items:
        raise ValueError("calibration needs at least one dev problem")
    settings = settings or strategies.Settings()
    prompts = [it.prompt for it in items]
    verify = [lambda reply, it=it: task.verify(it, reply) for it in items]
    rows: list[Row] = []
    for spec in with_greedy(specs):
        parsed = strategies.parse(spec)
        done = strategies.run(
            engine, parsed, prompts, task.extract, settings, verify=verify if parsed.uses_verifier else None
        )
        outcomes = tuple(bool(task.verify(it, a.text)) for it, a in zip(items, done.answers, strict=True))
        row = Row(
            parsed.name,
            outcomes,
            done.tokens / len(items),
            done.seconds / len(items),
            eligible=not parsed.uses_verifier,
        )
        if rows:  # rows[0] is greedy
            test = mcnemar(rows[0].outcomes, outcomes)
            row = Row(**{**row.__dict__, "p_value": test.p_value, "delta": test.delta})
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows
