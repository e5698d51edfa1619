"""Where a run's candidate is right on the dev set: an iteration's evaluation details, read from the
local stack's store, counted by operation and by the sign of the answer.

    .venv/bin/python benchmarks/dev_breakdown.py demo-r --iteration 3

Prints each suite's paired score as the evaluator computes it (``suite_score``: both accuracies and
the exact McNemar p), then, for incumbent and candidate: right / items for addition, subtraction with a result >= 0, and
subtraction with a negative result (the main dev suite only), and how many replies state an equation
(the worked form of ``acquisition.worked_from_iteration``); then right / items by the prompt's
phrasing (the task's ``phrasing``); then how far the wrong answers are off, by kind (:func:`miss`),
and which step of a wrong worked reply is false first (:func:`false_step`).
"""

from __future__ import annotations

import json
import re
from collections import Counter

from storekit import read_latest, run_parser

from selfimprove.evaluator.scoring import suite_score
from selfimprove.runtime.extract import last_integer
from selfimprove.runtime.tasks.arithmetic import EQUATION, phrasing

STEP = re.compile(r"(?<![\d(])(\d+) ([+-]) (\d+) = (-?\d+)(?![\d(])")
MISSES = ("off by 1-2", "off by 3-9", "off by 10", "off by more", "wrong sign", "no number")


def kind(prompt: str, answer: str) -> str:
    """``add``, ``sub`` or ``sub<0`` of a 2-operand problem.

    >>> kind("What is 86 plus 29?", "115"), kind("Calculate 53 - 55.", "-2"), kind("What is 9 minus 2?", "7")
    ('add', 'sub<0', 'sub')
    """
    if "plus" in prompt or "+" in prompt:
        return "add"
    return "sub<0" if answer.startswith("-") else "sub"


def miss(reply: str, answer: str) -> str:
    """How a wrong reply's answer misses: by its distance from the right one (the ones digit, a
    carry or borrow of ten, more), the wrong sign, or no number at all.

    >>> [miss(r, "75") for r in ("The answer is 85.", "It is 73", "-75", "75 or so: 120", "none")]
    ['off by 10', 'off by 1-2', 'wrong sign', 'off by more', 'no number']
    """
    said = last_integer(reply)
    if said is None:
        return "no number"
    got, want = int(said), int(answer)
    if got * want < 0:
        return "wrong sign"
    off = abs(got - want)
    if off <= 2:
        return "off by 1-2"
    if off < 10:
        return "off by 3-9"
    return "off by 10" if off == 10 else "off by more"


def false_step(reply: str) -> str:
    """The first false step of a worked reply: the ``tens`` step, or the ``ones`` step by what it
    asks (a ``borrow`` or ``carry``, a result that is a whole ten: ``round``, else ``plain``);
    ``none`` when every step is true (the turn ``a - b = -(b - a)`` is not a step here).

    >>> false_step("94 - 40 = 54, 54 - 4 = 48, so the answer is 48."), false_step("65 - 10 = 55, 55 - 8 = 49")
    ('ones round', 'ones borrow')
    >>> false_step("26 - 76 = -(76 - 26): 76 - 20 = 46, 46 - 6 = 40"), false_step("47 + 30 = 77, 77 + 6 = 84")
    ('tens', 'ones carry')
    >>> false_step("47 + 30 = 77, 77 + 2 = 78"), false_step("The answer is 5.")
    ('ones plain', 'none')
    """
    for m in STEP.finditer(reply):
        x, op, y, said = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        if (x + y if op == "+" else x - y) == said:
            continue
        if y % 10 == 0:
            return "tens"
        ones = x % 10 + y if op == "+" else x % 10 - y
        if ones in (0, 10):
            return "ones round"
        return "ones " + ("plain" if 0 < ones < 10 else "carry" if op == "+" else "borrow")
    return "none"


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--iteration", type=int, default=1)
    args = ap.parse_args()
    [data] = read_latest(args.data_dir, args.run_id, "evaluate", "details.jsonl", args.iteration).values()
    every = [json.loads(line) for line in data.splitlines()]
    for suite in dict.fromkeys(r["suite"] for r in every):
        of = [r for r in every if r["suite"] == suite]
        s = suite_score(suite, [r["incumbent_ok"] for r in of], [r["candidate_ok"] for r in of])
        print(
            f"suite {suite}: incumbent {s['incumbent_accuracy']:.4f}, candidate {s['candidate_accuracy']:.4f} "
            f"of {s['n']}, p = {s['p_value']:.4f}"
        )
    rows = [r for r in every if r["suite"] == "dev"]
    total, right = Counter(), {"incumbent": Counter(), "candidate": Counter()}
    for r in rows:
        k = kind(r["prompt"], r["answer"])
        total[k] += 1
        for model, counts in right.items():
            counts[k] += bool(r[f"{model}_ok"])
            counts["worked form"] += bool(EQUATION.search(r.get(f"{model}_reply") or ""))
    asked, by_phrase = Counter(), {"incumbent": Counter(), "candidate": Counter()}
    for r in rows:
        for part in phrasing(r["prompt"]):
            asked[part] += 1
            for model, counts in by_phrase.items():
                counts[part] += bool(r[f"{model}_ok"])
    for model, counts in right.items():
        print(
            f"{model}: "
            + ", ".join(f"{k} {counts[k]}/{total[k]}" for k in sorted(total))
            + f", worked form {counts['worked form']}/{len(rows)}"
        )
    parts = ("bare", "Q/A", "Question/Answer", "symbols", "words")
    for model, counts in by_phrase.items():
        print(f"{model} by phrasing: " + ", ".join(f"{p} {counts[p]}/{asked[p]}" for p in parts))
    for model in right:
        misses = Counter(
            (kind(r["prompt"], r["answer"]), miss(r.get(f"{model}_reply") or "", r["answer"]))
            for r in rows
            if not r[f"{model}_ok"]
        )
        for k in sorted(total):
            said = ", ".join(f"{m} {misses[k, m]}" for m in MISSES if misses[k, m])
            print(f"{model} wrong {k}: {said or 'none'}")
        steps = Counter(
            false_step(r[f"{model}_reply"])
            for r in rows
            if not r[f"{model}_ok"] and EQUATION.search(r.get(f"{model}_reply") or "")
        )
        print(
            f"{model} wrong worked replies, first false step: "
            + ", ".join(f"{k} {v}" for k, v in sorted(steps.items()))
        )


if __name__ == "__main__":
    main()
