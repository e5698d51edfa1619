"""Focus: share an iteration's prompts over the task's categories by what the model is still learning.

After each acquisition the evaluator keeps every category's pass rate (prompt-weighted over the
shards, from each shard's ``CategoryStats`` ``pass_rate`` and ``verified``) and its open-label share
(``open_labels`` over ``asked``: prompts with a checked majority answer that not
every sample gave, read from the model's own answers only). With ``acquisition.focus`` on, the next
iteration's acquire commands carry category weights, each share at least ``focus_floor``: in a
verified run proportional to the failure rate ``1 - pass rate``; in a label-free run, which must not
read the reference answers, proportional to the open-label share, so generation goes where the loop
gets labels the model is not yet sure of (a category it answers unanimously is learnt, one it gets
no label for teaches nothing), and every category still keeps a share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from selfimprove.v2.stages_pb2 import AcquireStats, CategoryStats


def _by_category(shards: Sequence[AcquireStats]) -> dict[str, list[CategoryStats]]:
    out: dict[str, list[CategoryStats]] = {}
    for stats in shards:
        for c in stats.categories:
            out.setdefault(c.category, []).append(c)
    return dict(sorted(out.items()))


def category_pass(shards: Sequence[AcquireStats]) -> dict[str, float]:
    """Each category's pass rate over ``shards``, weighted by its verified prompts.

    >>> C = CategoryStats
    >>> category_pass([AcquireStats(categories=[C(category="add2", pass_rate=1.0, verified=3),
    ...                                         C(category="sub2", pass_rate=0.0, verified=1)]),
    ...                AcquireStats(categories=[C(category="add2", pass_rate=0.0, verified=1)])])
    {'add2': 0.75, 'sub2': 0.0}
    """
    out = {}
    for category, parts in _by_category(shards).items():
        n = sum(c.verified for c in parts)
        if n > 0:
            out[category] = sum(c.pass_rate * c.verified for c in parts) / n
    return out


def category_asked(shards: Sequence[AcquireStats]) -> dict[str, float]:
    """Each category's prompts asked over ``shards``.

    >>> C = CategoryStats
    >>> category_asked([AcquireStats(categories=[C(category="add2", asked=4), C(category="sub2", asked=2)]),
    ...                 AcquireStats(categories=[C(category="add2", asked=2)])])
    {'add2': 6.0, 'sub2': 2.0}
    """
    return {k: float(sum(c.asked for c in parts)) for k, parts in _by_category(shards).items()}


def category_open(shards: Sequence[AcquireStats]) -> dict[str, float]:
    """Each category's share of prompts with an open label, over ``shards``.

    >>> C = CategoryStats
    >>> category_open([AcquireStats(categories=[C(category="add2", open_labels=1, asked=4), C(category="sub2", asked=2)]),
    ...                AcquireStats(categories=[C(category="add2", open_labels=2, asked=2), C(category="sub2", asked=2)])])
    {'add2': 0.5, 'sub2': 0.0}
    """
    out = {}
    for category, parts in _by_category(shards).items():
        asked = sum(c.asked for c in parts)
        if asked > 0:
            out[category] = sum(c.open_labels for c in parts) / asked
    return out


def shares(scores: Mapping[str, float], floor: float) -> dict[str, float]:
    """Shares proportional to ``scores``, none below ``floor`` (then renormalised); an even mix when
    every score is 0.

    >>> shares({"add2": 0.3, "sub2": 0.9}, 0.1)
    {'add2': 0.25, 'sub2': 0.75}
    >>> shares({"add2": 0.0, "sub2": 0.8}, 0.2)
    {'add2': 0.2, 'sub2': 0.8}
    >>> shares({"add2": 0.0, "sub2": 0.0}, 0.0)
    {'add2': 0.5, 'sub2': 0.5}
    """
    if not scores:
        return {}
    total = sum(scores.values())
    raw = {c: f / total for c, f in scores.items()} if total > 0 else dict.fromkeys(scores, 1 / len(scores))
    floor = min(floor, 1 / len(raw))
    low = {c for c, w in raw.items() if w < floor}
    rest = sum(w for c, w in raw.items() if c not in low)
    spare = 1.0 - floor * len(low)
    return {c: round(floor if c in low else w * spare / rest, 6) for c, w in raw.items()}


def focus_weights(pass_rates: Mapping[str, float], floor: float) -> dict[str, float]:
    """A verified run's shares: proportional to ``1 - pass rate``, none below ``floor``.

    >>> focus_weights({"add2": 0.7, "sub2": 0.1}, 0.1)
    {'add2': 0.25, 'sub2': 0.75}
    >>> focus_weights({"add2": 1.0, "sub2": 1.0}, 0.0)  # nothing failed: an even mix
    {'add2': 0.5, 'sub2': 0.5}
    """
    return shares({c: max(0.0, 1.0 - p) for c, p in pass_rates.items()}, floor)


def next_weights(
    history: Sequence[Mapping], iteration: int, floor: float, label_free: bool = False
) -> dict[str, float]:
    """The weights for ``iteration``: from the latest earlier iteration with category figures (pass
    rates, or in a label-free run open-label shares).

    >>> next_weights([{"iteration": 1, "category_pass": {"a": 0.5, "b": 0.0}}], 2, 0.0)
    {'a': 0.333333, 'b': 0.666667}
    >>> next_weights([{"iteration": 1, "category_pass": {"a": 0.5}, "category_open": {"a": 0.1, "b": 0.3}}], 2, 0.0, True)
    {'a': 0.25, 'b': 0.75}
    >>> next_weights([{"iteration": 1}], 2, 0.1)
    {}
    """
    key = "category_open" if label_free else "category_pass"
    earlier = [r for r in history if r["iteration"] < iteration and r.get(key)]
    if not earlier:
        return {}
    figures = earlier[-1][key]
    return shares(figures, floor) if label_free else focus_weights(figures, floor)
