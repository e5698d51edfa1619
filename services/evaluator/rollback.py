"""Rollback: every promotion re-checked against the best earlier incumbent (``evaluation.rollback``).

A candidate is judged against the incumbent of the moment only, so drops within the regression
margin can add up over promotions. Each promoted model therefore keeps a *scorecard*: its accuracy on
the dev split and on each regression suite as the evaluation that promoted it measured them (the
candidate's column; the first promotion also records the base model from the incumbent's column, on
the same items). No extra evaluation is run: the dev seed fixes the dev items, so the cards compare.

After each promotion the newest card is compared, suite by suite, with the best earlier card still
live (not rolled back). A drop beyond ``margin`` on any suite marks the promotion *drifted*; when
``over_promotions`` consecutive promotions drifted, the served model goes back to the last good one:
the latest earlier live card whose own promotion did not drift. A collapse (``verdicts.collapse_verdict``)
goes back to the last model promoted before the collapse window began, since the models promoted
within it were trained on the collapsing data. Pure: the caller applies the verdict to the state.

>>> base = card({"version": "r/base"}, 0, _EXAMPLE_SUITES, "incumbent")
>>> m1 = card({"version": "r/iter-001"}, 1, _EXAMPLE_SUITES, "candidate")
>>> base["scores"], m1["scores"]
({'dev': 0.4, 'add1': 0.9}, {'dev': 0.6, 'add1': 0.88})
>>> drops([base, m1], m1, 0.03)
[]
>>> m2 = card({"version": "r/iter-002"}, 2, [{**_EXAMPLE_SUITES[0], "candidate_accuracy": 0.7}, {**_EXAMPLE_SUITES[2], "candidate_accuracy": 0.85}], "candidate")
>>> drops([base, m1, m2], m2, 0.03)
[{'name': 'add1', 'accuracy': 0.85, 'best': 0.9, 'best_version': 'r/base'}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfimprove.runtime.tasks.base import HELDOUT_PHRASING

_EXAMPLE_SUITES = [  # the doctests' evaluation: dev, the held-out phrasing (never carded), one regression suite
    {"name": "dev", "candidate_accuracy": 0.6, "incumbent_accuracy": 0.4, "n": 100},
    {"name": "heldout_phrasing", "split": "heldout_phrasing", "candidate_accuracy": 0.5, "n": 100},
    {"name": "add1", "candidate_accuracy": 0.88, "incumbent_accuracy": 0.9, "n": 50},
]


@dataclass(frozen=True)
class RollbackVerdict:
    """What the check after a promotion (or a collapse) found. ``target``: the card of the model to
    serve again (None: no rollback); ``evidence``: one suite score per suite of the model rolled back,
    ``incumbent_accuracy`` its score and ``candidate_accuracy`` the target's."""

    drifted: bool
    streak: int
    reason: str
    target: dict[str, Any] | None = None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)


def card(model: Mapping[str, Any], iteration: int, suites: Sequence[Mapping[str, Any]], column: str) -> dict:
    """The scorecard of ``model`` from one evaluation's ``suites``, read from the ``column``
    (``candidate`` or ``incumbent``): the main suite (the first, the dev split) and the regression
    suites; the held-out-phrasing split is no regression suite and is left out."""
    kept = [s for s in suites if s.get("split") != HELDOUT_PHRASING]
    return {
        "version": model.get("version", ""),
        "model": dict(model),
        "iteration": iteration,
        "scores": {str(s.get("name")): float(s.get(f"{column}_accuracy", 0.0)) for s in kept},
        "n": {str(s.get("name")): int(s.get("n", 0)) for s in kept},
        "main": str(kept[0].get("name")) if kept else "",
        "drifted": False,
        "rolled_back": False,
    }


def drops(cards: Sequence[Mapping[str, Any]], newest: Mapping[str, Any], margin: float) -> list[dict]:
    """The suites on which ``newest`` is below the best earlier live card by more than ``margin``."""
    earlier = [c for c in cards if c is not newest and not c.get("rolled_back")]
    out = []
    for name, accuracy in newest["scores"].items():
        scored = [c for c in earlier if name in c["scores"]]
        if not scored:
            continue
        best = max(scored, key=lambda c: c["scores"][name])
        if accuracy < best["scores"][name] - margin - 1e-12:
            out.append(
                {
                    "name": name,
                    "accuracy": accuracy,
                    "best": best["scores"][name],
                    "best_version": best["version"],
                }
            )
    return out


def last_good(cards: Sequence[Mapping[str, Any]], before_iteration: int | None = None) -> dict | None:
    """The latest live card whose promotion did not drift (promoted before ``before_iteration``).

    >>> cards = [{"version": "b", "iteration": 0}, {"version": "m1", "iteration": 1},
    ...          {"version": "m2", "iteration": 2, "drifted": True}, {"version": "m3", "iteration": 3, "rolled_back": True}]
    >>> last_good(cards)["version"], last_good(cards, before_iteration=1)["version"], last_good(cards, 0)
    ('m1', 'b', None)
    """
    for c in reversed(cards):
        if c.get("rolled_back") or c.get("drifted"):
            continue
        if before_iteration is None or c["iteration"] < before_iteration:
            return dict(c)
    return None


def after_promotion(
    cards: Sequence[Mapping[str, Any]], streak: int, margin: float, over_promotions: int
) -> RollbackVerdict:
    """Judge the newest card (the last of ``cards``) after ``streak`` consecutive drifted promotions
    before it: drifted or not, and the target to roll back to once the streak reaches
    ``over_promotions``.

    >>> base = card({"version": "b"}, 0, _EXAMPLE_SUITES, "incumbent")
    >>> m1 = card({"version": "m1"}, 1, _EXAMPLE_SUITES, "candidate")
    >>> m2 = {**m1, "version": "m2", "iteration": 2, "scores": {"dev": 0.7, "add1": 0.86}}
    >>> v = after_promotion([base, m1, m2], 0, 0.03, 2)
    >>> v.drifted, v.streak, v.target, v.reason
    (True, 1, None, 'm2 drifted: add1 0.860 < 0.900 (b) - margin 0.03 (1 of 2 promotions)')
    >>> m2["drifted"] = True
    >>> m3 = {**m1, "version": "m3", "iteration": 3, "scores": {"dev": 0.75, "add1": 0.83}}
    >>> v = after_promotion([base, m1, m2, m3], 1, 0.03, 2)
    >>> v.target["version"], v.reason
    ('m1', 'rollback to m1: m3 drifted: add1 0.830 < 0.900 (b) - margin 0.03 over 2 promotions')
    >>> [(e["name"], e["incumbent_accuracy"], e["candidate_accuracy"]) for e in v.evidence]
    [('dev', 0.75, 0.6), ('add1', 0.83, 0.88)]
    >>> after_promotion([base, m1], 0, 0.03, 2).reason
    'm1 within 0.03 of the best earlier incumbents'
    """
    newest = cards[-1]
    lost = drops(cards, newest, margin)
    if not lost:
        return RollbackVerdict(
            False, 0, f"{newest['version']} within {margin:g} of the best earlier incumbents"
        )
    streak += 1
    said = ", ".join(f"{d['name']} {d['accuracy']:.3f} < {d['best']:.3f} ({d['best_version']})" for d in lost)
    said = f"{newest['version']} drifted: {said} - margin {margin:g}"
    figures = {f"{d['name']}_drop": d["best"] - d["accuracy"] for d in lost}
    figures.update(drifted_promotions=float(streak), margin=margin)
    if streak < over_promotions:
        return RollbackVerdict(
            True, streak, f"{said} ({streak} of {over_promotions} promotions)", figures=figures
        )
    target = last_good(cards[:-1])
    if target is None:
        return RollbackVerdict(True, streak, f"{said}; no earlier model to roll back to", figures=figures)
    reason = f"rollback to {target['version']}: {said} over {streak} promotions"
    return RollbackVerdict(True, streak, reason, target, evidence(newest, target), figures)


def collapse_since(history: Sequence[Mapping[str, Any]], window: int) -> int:
    """The first iteration of the collapse window ``collapse_verdict`` judged (the current one when it
    fired on the latest diversity alone).

    >>> rows = [{"iteration": i, "diversity": 0.5, "agreement": 0.5} for i in (1, 2, 3)]
    >>> collapse_since(rows, 2), collapse_since(rows[:1], 2)
    (1, 1)
    """
    rows = [r for r in history if "diversity" in r and "agreement" in r]
    if not rows:
        return 0
    return int(rows[-window - 1]["iteration"] if len(rows) > window else rows[-1]["iteration"])


def after_collapse(
    cards: Sequence[Mapping[str, Any]], incumbent: Mapping[str, Any], since: int, why: str
) -> RollbackVerdict:
    """The model to serve after a collapse that began at iteration ``since``: the last good one
    promoted before it, unless that is the ``incumbent`` already.

    >>> base = card({"version": "b"}, 0, _EXAMPLE_SUITES, "incumbent")
    >>> m1 = card({"version": "m1"}, 1, _EXAMPLE_SUITES, "candidate")
    >>> after_collapse([base, m1], {"version": "m1"}, 1, "collapse").reason
    'rollback to b: collapse since iteration 1'
    >>> after_collapse([base, m1], {"version": "m1"}, 2, "collapse").target is None
    True
    """
    target = last_good(cards, before_iteration=since)
    if target is None or target["version"] == incumbent.get("version"):
        return RollbackVerdict(False, 0, f"{why}: the incumbent came before it")
    newest = next((c for c in reversed(cards) if c["version"] == incumbent.get("version")), None)
    reason = f"rollback to {target['version']}: {why} since iteration {since}"
    return RollbackVerdict(
        False, 0, reason, target, evidence(newest, target) if newest else [], {"collapse": 1.0}
    )


def evidence(newest: Mapping[str, Any], target: Mapping[str, Any]) -> list[dict]:
    """One suite score per suite of ``newest``: its score (the incumbent's column, the model served
    until now) beside the ``target``'s (the candidate's column, the model served next)."""
    return [
        {
            "name": name,
            "incumbent_accuracy": accuracy,
            "candidate_accuracy": target["scores"].get(name, 0.0),
            "n": newest["n"].get(name, 0),
        }
        for name, accuracy in newest["scores"].items()
    ]
