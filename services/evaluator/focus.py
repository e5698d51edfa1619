"""Focus: share an iteration's prompts over the task's categories by what the model still fails.

After each acquisition the evaluator keeps every category's pass rate (prompt-weighted over the
shards, from the stats ``pass_rate/<category>`` and ``prompts/<category>``). With
``acquisition.focus`` on, the next iteration's acquire commands carry category weights proportional
to the failure rate ``1 - pass rate``, each share at least ``focus_floor``, so generation goes where
the data teaches most and a mastered category still keeps a share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from selfimprove.acquisition.shard import CATEGORY_PASS_RATE, CATEGORY_PROMPTS


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


def focus_weights(pass_rates: Mapping[str, float], floor: float) -> dict[str, float]:
    """Shares proportional to ``1 - pass rate``, none below ``floor`` (then renormalised).

    >>> focus_weights({"add2": 0.7, "sub2": 0.1}, 0.1)
    {'add2': 0.25, 'sub2': 0.75}
    >>> focus_weights({"add2": 1.0, "sub2": 0.2}, 0.2)
    {'add2': 0.2, 'sub2': 0.8}
    >>> focus_weights({"add2": 1.0, "sub2": 1.0}, 0.0)  # nothing failed: an even mix
    {'add2': 0.5, 'sub2': 0.5}
    """
    if not pass_rates:
        return {}
    fail = {c: max(0.0, 1.0 - p) for c, p in pass_rates.items()}
    total = sum(fail.values())
    raw = {c: f / total for c, f in fail.items()} if total > 0 else dict.fromkeys(fail, 1 / len(fail))
    floor = min(floor, 1 / len(raw))
    low = {c for c, w in raw.items() if w < floor}
    rest = sum(w for c, w in raw.items() if c not in low)
    spare = 1.0 - floor * len(low)
    return {c: round(floor if c in low else w * spare / rest, 6) for c, w in raw.items()}


def next_weights(history: Sequence[Mapping], iteration: int, floor: float) -> dict[str, float]:
    """The weights for ``iteration``: from the latest earlier iteration with category pass rates.

    >>> next_weights([{"iteration": 1, "category_pass": {"a": 0.5, "b": 0.0}}], 2, 0.0)
    {'a': 0.333333, 'b': 0.666667}
    >>> next_weights([{"iteration": 1}], 2, 0.1)
    {}
    """
    earlier = [r for r in history if r["iteration"] < iteration and r.get("category_pass")]
    return focus_weights(earlier[-1]["category_pass"], floor) if earlier else {}
