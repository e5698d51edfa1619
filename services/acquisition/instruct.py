"""The screen a self-instruct prompt passes before it is sampled: new, and no evaluation problem.

The model writes prompts in the style of the seed set (:func:`generate.self_instruct`); a small model
often repeats one, or copies a seed example back. A prompt is dropped when its normalised text
(:func:`~selfimprove.runtime.tasks.datafile.text_key`: lower case, spaces collapsed) is that of an
earlier prompt of the shard or of a seed example, and when it hits a declared evaluation set: its
text key is one of the set's keys, or it overlaps one of the set's texts by the n-gram rule
(:class:`~selfimprove.runtime.evalguard.EvalGuard`). Selection checks the same again on every shard;
screening here spends no samples on a prompt that would be dropped and counts the drops per shard.
Pure: items in, items and counts out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from selfimprove.runtime.tasks.base import Item, problem_key
from selfimprove.runtime.tasks.datafile import text_key
from selfimprove.runtime.tasks.seedset import SeedExample

# (prompt, problem key) -> why it is an evaluation problem ("key", "ngram"), or None
Rule = Callable[[str, tuple | None], str | None]


@dataclass(frozen=True)
class Screened:
    """The prompts kept, and how many were dropped as repeats and as evaluation problems."""

    items: list[Item]
    duplicates: int = 0
    contaminated: int = 0


def screen(items: Sequence[Item], seeds: Sequence[SeedExample], rule: Rule | None = None) -> Screened:
    """``items`` without repeats (of each other or of a seed example) and without those ``rule``
    names as evaluation problems, in order.

    >>> seeds = [SeedExample("Tom has 3 apples. How many?")]
    >>> items = [Item(id=str(i), prompt=p, category="w", difficulty=0) for i, p in enumerate(
    ...     ["Ann has 2 pens.", "ann has  2 PENS.", "Tom has 3 apples. How many?", "Bo has 9 cats.", "Li has 4 cups."])]
    >>> evaluation = lambda prompt, key: "key" if key == text_key("Bo has 9 cats") else None
    >>> out = screen(items, seeds, evaluation)
    >>> [i.prompt for i in out.items], out.duplicates, out.contaminated
    (['Ann has 2 pens.', 'Li has 4 cups.'], 2, 1)
    """
    seen = {text_key(s.prompt) for s in seeds} | {text_key(s.instruction) for s in seeds}
    kept: list[Item] = []
    duplicates = contaminated = 0
    for item in items:
        key = text_key(item.prompt)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        if rule is not None and rule(item.prompt, problem_key(item.meta) or key) is not None:
            contaminated += 1
            continue
        kept.append(item)
    return Screened(kept, duplicates, contaminated)
