"""Focus: share an iteration's prompts over the task's categories by what the model is still learning.

After each acquisition the evaluator keeps every category's pass rate (prompt-weighted over the
shards, from the stats ``pass_rate/<category>`` and ``prompts/<category>``) and its open-label share
(``open_labels/<category>`` over ``asked/<category>``: prompts with a checked majority answer that not
every sample gave, read from the model's own answers only). With ``acquisition.focus`` on, the next
iteration's acquire commands carry category weights, each share at least ``focus_floor``: in a
verified run proportional to the failure rate ``1 - pass rate``; in a label-free run, which must not
read the reference answers, proportional to the open-label share, so generation goes where the loop
gets labels the model is not yet sure of (a category it answers unanimously is learnt, one it gets
no label for teaches nothing), and every category still keeps a share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from selfimprove.acquisition.shard import CATEGORY_ASKED, CATEGORY_OPEN, CATEGORY_PASS_RATE, CATEGORY_PROMPTS


def category_pass(shards: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each category's pass rate over ``shards``' stats, weighted by its verified prompts.

    >>> category_pass([{"pass_rate/add2": 1.0, "prompts/add2": 3, "pass_rate/sub2": 0.0, "prompts/sub2": 1},
    ...                {"pass_rate/add2": 0.0, "prompts/add2": 1}])
    {'add2': 0.75, 'sub2': 0.0}
    """
    passed: dict[str, float] = {}
    prompts: dict[str, float] = {}
    for stats in shards:
        for key, value in stats.items():
            if key.startswith(CATEGORY_PASS_RATE):
                category = key[len(CATEGORY_PASS_RATE) :]
                n = float(stats.get(f"{CATEGORY_PROMPTS}{category}", 0.0))
                passed[category] = passed.get(category, 0.0) + value * n
                prompts[category] = prompts.get(category, 0.0) + n
    return {c: passed[c] / prompts[c] for c in sorted(prompts) if prompts[c] > 0}


def category_counts(shards: Sequence[Mapping[str, float]], prefix: str) -> dict[str, float]:
    """Each category's total of the stats named ``prefix + category`` over ``shards``.

    >>> category_counts([{"asked/add2": 4, "asked/sub2": 2}, {"asked/add2": 2, "yield": 0.5}], "asked/")
    {'add2': 6.0, 'sub2': 2.0}
    """
    out: dict[str, float] = {}
    for stats in shards:
        for key, value in stats.items():
            if key.startswith(prefix):
                out[key[len(prefix) :]] = out.get(key[len(prefix) :], 0.0) + float(value)
    return dict(sorted(out.items()))


def category_open(shards: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each category's share of prompts with an open label, over ``shards``' stats.

    >>> category_open([{"open_labels/add2": 1, "asked/add2": 4, "asked/sub2": 2},
    ...                {"open_labels/add2": 2, "asked/add2": 2, "open_labels/sub2": 0, "asked/sub2": 2}])
    {'add2': 0.5, 'sub2': 0.0}
    """
    opened, asked = category_counts(shards, CATEGORY_OPEN), category_counts(shards, CATEGORY_ASKED)
    return {c: opened.get(c, 0.0) / n for c, n in asked.items() if n > 0}


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
