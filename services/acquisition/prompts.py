"""Where a shard's prompts come from: the task's train stream, or self-instruct from a seed set.

Task prompts are the slice ``[shard * n, (shard + 1) * n)`` of one stream of ``n * num_shards``
distinct train items drawn with a seed fixed by ``(seed, iteration)``, so the shards of an iteration
never overlap and a redelivered shard gets the same prompts. With category weights (the evaluator's
focus on what the model fails), the stream is first drawn ``len(categories)`` times as long and
then cut to ``n * num_shards`` items shared out by weight (:func:`focused`). Problems of the
evaluation sets (``exclude``, by the key selection decontaminates with, and ``overlaps``, its n-gram
rule) are skipped before sampling, so no generation is spent on a prompt selection would drop. Self-instruct prompts are written by the
model from a few seed examples; they have no reference answer (no verifier).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence

from selfimprove.runtime.tasks.base import Item, Task, TooFewProblems, problem_key
from selfimprove.runtime.tasks.datafile import text_key
from selfimprove.runtime.tasks.seedset import SeedExample

HINT = "{prompt} The answer is {answer}. Reply briefly, giving the answer."


def hint_prompt(item: Item) -> str:
    """The prompt of ``item`` with its reference answer as a hint (STaR rationalization).

    >>> hint_prompt(Item(id="x", prompt="What is 9 - 12?", category="sub1", difficulty=1, answer="-3"))
    'What is 9 - 12? The answer is -3. Reply briefly, giving the answer.'
    """
    if item.answer is None:
        raise ValueError(f"item {item.id} has no reference answer to hint")
    return HINT.format(prompt=item.prompt, answer=item.answer)


def stream_seed(seed: int, iteration: int) -> int:
    """The task-stream seed of an iteration.

    >>> stream_seed(7, 1) == stream_seed(7, 1) != stream_seed(7, 2)
    True
    """
    digest = hashlib.sha256(f"{seed}/{iteration}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


def sample_seed(seed: int, iteration: int, shard: int) -> int:
    """The sampling seed of one shard.

    >>> sample_seed(7, 1, 0) != sample_seed(7, 1, 1)
    True
    """
    digest = hashlib.sha256(f"{seed}/{iteration}/{shard}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def shard_bounds(shard: int, num_prompts: int) -> tuple[int, int]:
    """``[start, stop)`` of a shard in the iteration's stream.

    >>> shard_bounds(0, 3), shard_bounds(2, 3)
    ((0, 3), (6, 9))
    """
    return shard * num_prompts, (shard + 1) * num_prompts


def quotas(weights: Mapping[str, float], available: Mapping[str, int], n: int) -> dict[str, int]:
    """``n`` prompts shared out over categories by ``weights`` (largest remainder), none above what
    it has ``available``; a category's shortfall goes to the others by weight, then to any.

    >>> quotas({"add2": 1, "sub2": 3}, {"add2": 100, "sub2": 100}, 10)
    {'add2': 3, 'sub2': 7}
    >>> quotas({"add1": 3, "add2": 1}, {"add1": 4, "add2": 100}, 10)
    {'add1': 4, 'add2': 6}
    >>> quotas({"add2": 1}, {"add2": 2, "sub2": 9}, 5)
    {'add2': 2, 'sub2': 3}
    """
    if sum(available.values()) < n:
        raise ValueError(f"{n} prompts asked but only {sum(available.values())} available")
    out = dict.fromkeys(available, 0)
    while (left := n - sum(out.values())) > 0:
        room = [c for c in available if out[c] < available[c]]
        live = [c for c in room if weights.get(c, 0) > 0] or room
        weight = {c: weights.get(c, 0) or 1.0 for c in live}
        share = {c: left * weight[c] / sum(weight.values()) for c in live}
        give = {c: int(share[c]) for c in live}
        for c in sorted(live, key=lambda c: (give[c] - share[c], c))[: left - sum(give.values())]:
            give[c] += 1
        for c in live:
            out[c] += min(give[c], available[c] - out[c])
    return out


def focused(pool: Sequence[Item], weights: Mapping[str, float], n: int) -> list[Item]:
    """``n`` items of ``pool``: each category's first items in pool order, as many as its
    :func:`quotas` share, interleaved evenly so that every slice of the result has about the same mix.

    >>> pool = [Item(id=str(i), prompt="p", category="ab"[i % 2], difficulty=1) for i in range(12)]
    >>> [i.category + i.id for i in focused(pool, {"a": 1, "b": 3}, 8)]
    ['b1', 'a0', 'b3', 'b5', 'b7', 'a2', 'b9', 'b11']
    """
    want = quotas(weights, Counter(item.category for item in pool), n)
    taken: dict[str, int] = {}
    keyed = []
    for position, item in enumerate(pool):
        k = taken.get(item.category, 0)
        if k < want[item.category]:
            taken[item.category] = k + 1
            keyed.append(((k + 0.5) / want[item.category], position, item))
    return [item for *_, item in sorted(keyed, key=lambda t: t[:2])]


def train_stream(
    task: Task,
    n: int,
    seed: int,
    exclude: Collection[tuple] = frozenset(),
    overlaps: Callable[[str], bool] | None = None,
) -> list[Item]:
    """The first ``n`` items of the task's train stream whose problem key is not in ``exclude`` and
    whose prompt ``overlaps`` no evaluation item; all of them when the task has fewer (a finite task
    asked for more than it has, as a data retry may).

    >>> from selfimprove.runtime.tasks.arithmetic import ArithmeticTask
    >>> task = ArithmeticTask(("add2",))
    >>> plain = train_stream(task, 6, 0)
    >>> skipped = train_stream(task, 5, 0, {tuple(plain[1].meta["key"])})
    >>> [i.id for i in skipped] == [i.id for i in plain if i is not plain[1]]
    True
    >>> [i.id for i in train_stream(task, 5, 0, overlaps=lambda p: p == plain[1].prompt)] == [i.id for i in skipped]
    True
    >>> every = train_stream(ArithmeticTask(("add1",)), 500, 0)
    >>> len(every), len({i.id for i in every})
    (88, 88)
    """
    size = n
    while True:
        try:
            pool = task.items("train", size, seed=seed)
        except TooFewProblems as exc:
            pool = exc.found
        kept = [
            item
            for item in pool
            if problem_key(item.meta) not in exclude and not (overlaps and overlaps(item.prompt))
        ]
        if len(kept) >= n or len(pool) < size:  # enough, or the task has no more
            return kept[:n]
        size += 2 * (n - len(kept))


def shard_items(
    task: Task,
    seed: int,
    iteration: int,
    shard: int,
    num_shards: int,
    num_prompts: int,
    weights: Mapping[str, float] | None = None,
    exclude: Collection[tuple] = frozenset(),
    overlaps: Callable[[str], bool] | None = None,
) -> list[Item]:
    """The task prompts of one shard (see the module docstring)."""
    if not 0 <= shard < max(1, num_shards):
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    start, stop = shard_bounds(shard, num_prompts)
    if not weights:
        return train_stream(task, stop, stream_seed(seed, iteration), exclude, overlaps)[start:stop]
    unknown = sorted(set(weights) - set(task.categories))
    if unknown or any(w < 0 for w in weights.values()):
        raise ValueError(
            f"category weights {dict(weights)}: unknown categories {unknown} or a negative weight "
            f"(the task has {', '.join(task.categories)})"
        )
    total = num_prompts * num_shards
    pool = train_stream(
        task, total * max(1, len(task.categories)), stream_seed(seed, iteration), exclude, overlaps
    )
    return focused(pool, weights, total)[start:stop]


def instruct_prompt(examples: Sequence[SeedExample]) -> str:
    """The request for one new problem in the style of ``examples``.

    >>> print(instruct_prompt([SeedExample("What is 2 + 3?")]))
    Here are examples of tasks:
    Task 1: What is 2 + 3?
    Write one new task of the same kind. Reply with the task only.
    """
    lines = [f"Task {i}: {ex.prompt}" for i, ex in enumerate(examples, start=1)]
    return (
        "Here are examples of tasks:\n"
        + "\n".join(lines)
        + "\nWrite one new task of the same kind. Reply with the task only."
    )


def demos_for(seed_set: Sequence[SeedExample], count: int, k: int, seed: int) -> list[list[SeedExample]]:
    """``count`` draws of ``k`` seed examples each, deterministic from ``seed``.

    >>> ex = [SeedExample(str(i)) for i in range(5)]
    >>> demos_for(ex, 2, 2, 0) == demos_for(ex, 2, 2, 0)
    True
    """
    rng = random.Random(seed)
    k = min(k, len(seed_set))
    return [rng.sample(list(seed_set), k) for _ in range(count)]


def clean_instruction(text: str) -> str:
    """The problem in a self-instruct reply: the first non-empty line, without a ``Task N:`` label.

    >>> clean_instruction("Task 3: What is 12 + 9?\\nSure!")
    'What is 12 + 9?'
    """
    for line in text.strip().splitlines():
        line = line.strip()
        if line:
            head, sep, rest = line.partition(":")
            return rest.strip() if sep and head.lower().startswith("task") else line
    return ""


def instruct_items(texts: Sequence[str], demos: Sequence[Sequence[SeedExample]]) -> list[Item]:
    """Items from self-instruct replies, dropping empty ones (category of the first demo; repeats are
    left to :func:`selfimprove.acquisition.instruct.screen`, which counts them). Each carries its text
    key in ``meta["key"]``, the key selection decontaminates free-text problems by.

    >>> items = instruct_items(["Task: A?", "A?", ""], [[SeedExample("x", category="c")]] * 3)
    >>> [i.prompt for i in items], items[0].meta["key"], items[0].id == items[1].id
    (['A?', 'A?'], ['text', ['a']], True)
    """
    out = []
    for text, demo in zip(texts, demos, strict=True):
        prompt = clean_instruction(text)
        if not prompt:
            continue
        category = demo[0].category if demo else "general"
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:16]
        kind, parts = text_key(prompt)
        meta = {"key": [kind, list(parts)]}
        out.append(Item(id=f"si-{digest}", prompt=prompt, category=category, difficulty=0, meta=meta))
    return out
