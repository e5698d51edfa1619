"""Paired scoring of a candidate against the incumbent on the same dev items. Pure (stdlib).

>>> s = suite_score("dev", [True] * 10 + [False] * 10, [True] * 10 + [True] * 8 + [False] * 2)
>>> s["incumbent_accuracy"], s["candidate_accuracy"], s["n"], round(s["p_value"], 4)
(0.5, 0.9, 20, 0.0078)
>>> task_params('{"categories": ["add1"]}')
{'categories': ['add1']}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from selfimprove.runtime.stats import mcnemar


def suite_score(name: str, incumbent: Sequence[bool], candidate: Sequence[bool]) -> dict[str, Any]:
    """A ``SuiteScore`` as a dict: accuracies, the paired delta's 95 % interval, exact McNemar p."""
    r = mcnemar(incumbent, candidate)
    n = len(incumbent)
    return {
        "name": name,
        "candidate_accuracy": sum(map(bool, candidate)) / n if n else 0.0,
        "incumbent_accuracy": sum(map(bool, incumbent)) / n if n else 0.0,
        "n": n,
        "delta_low": r.low,
        "delta_high": r.high,
        "p_value": r.p_value,
    }


def chunks(n: int, looks: Sequence[int]) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of the dev items, evaluated one after the other: up to each interim look
    (sizes below ``n``), then the rest.

    >>> chunks(400, [100, 200]), chunks(400, []), chunks(50, [100, 50])
    ([(0, 100), (100, 200), (200, 400)], [(0, 400)], [(0, 50)])
    """
    bounds = [k for k in sorted(set(looks)) if 0 < k < n] + [n]
    return list(zip([0, *bounds[:-1]], bounds, strict=True))


def decided_early(incumbent: Sequence[bool], candidate: Sequence[bool], interim_alpha: float) -> bool:
    """Whether an interim look already settles the comparison (Haybittle-Peto): a gain whose exact
    McNemar p-value is below ``interim_alpha``, far below the final test's alpha, so stopping there
    barely changes the error rate. Only a gain stops early; anything else goes on to every item.

    >>> decided_early([False] * 90 + [True] * 10, [True] * 40 + [False] * 50 + [True] * 10, 0.001)
    True
    >>> decided_early([False] * 90 + [True] * 10, [True] * 8 + [False] * 82 + [True] * 10, 0.001)
    False
    """
    s = suite_score("", incumbent, candidate)
    return s["candidate_accuracy"] > s["incumbent_accuracy"] and s["p_value"] < interim_alpha


def task_params(params_json: str) -> dict[str, Any]:
    """A suite's task parameters (a JSON object)."""
    params = json.loads(params_json or "{}")
    if not isinstance(params, dict):
        raise ValueError(f"task params_json must be a JSON object, got {params_json!r}")
    return params
