"""Where a run's candidate is right on the dev set: an iteration's evaluation details, read from the
local stack's store, counted by operation and by the sign of the answer.

    .venv/bin/python benchmarks/dev_breakdown.py demo-r --iteration 3

Prints, for incumbent and candidate: right / items for addition, subtraction with a result >= 0, and
subtraction with a negative result (the main dev suite only), and how many replies state an equation
(the worked form of ``acquisition.worked_from_iteration``); then right / items by the prompt's
phrasing (the task's ``phrasing``).
"""

from __future__ import annotations

import json
from collections import Counter

from storekit import read_latest, run_parser

from selfimprove.runtime.tasks.arithmetic import EQUATION, phrasing


def kind(prompt: str, answer: str) -> str:
    """``add``, ``sub`` or ``sub<0`` of a 2-operand problem.

    >>> kind("What is 86 plus 29?", "115"), kind("Calculate 53 - 55.", "-2"), kind("What is 9 minus 2?", "7")
    ('add', 'sub<0', 'sub')
    """
    if "plus" in prompt or "+" in prompt:
        return "add"
    return "sub<0" if answer.startswith("-") else "sub"


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--iteration", type=int, default=1)
    args = ap.parse_args()
    [data] = read_latest(args.data_dir, args.run_id, "evaluate", "details.jsonl", args.iteration).values()
    rows = [r for r in map(json.loads, data.splitlines()) if r["suite"] == "dev"]
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


if __name__ == "__main__":
    main()
