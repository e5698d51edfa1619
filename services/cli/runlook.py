"""What ``selfimprove inspect`` reads from a finished run, as pure functions of the stored records:
an iteration's dev results by operation, phrasing and kind of miss (from the evaluation details), and
the trainer's speed per iteration (from the stored loss curves)."""

from __future__ import annotations

import re
from collections import Counter

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


PHRASINGS = ("bare", "Q/A", "Question/Answer", "symbols", "words")
MODELS = ("incumbent", "candidate")


def dev_breakdown(rows: list[dict]) -> dict:
    """Per model, right / items by :func:`kind` and by phrasing, replies in the worked form, and the
    wrong answers by :func:`miss` and (worked replies) by :func:`false_step`, of the main dev suite's
    evaluation details (``prompt``, ``answer``, ``<model>_ok``, ``<model>_reply``).

    >>> rows = [{"prompt": "What is 86 plus 29?", "answer": "115", "incumbent_ok": False,
    ...          "incumbent_reply": "105", "candidate_ok": True, "candidate_reply": "115"}]
    >>> d = dev_breakdown(rows)
    >>> d["items"], d["candidate"]["right"], d["incumbent"]["misses"]
    ({'add': 1}, {'add': 1}, {'add': {'off by 10': 1}})
    """
    items = Counter(kind(r["prompt"], r["answer"]) for r in rows)
    asked = Counter(part for r in rows for part in phrasing(r["prompt"]))
    out: dict = {"items": dict(sorted(items.items())), "phrasings": {p: asked[p] for p in PHRASINGS}}
    for model in MODELS:
        right = Counter(kind(r["prompt"], r["answer"]) for r in rows if r[f"{model}_ok"])
        by_phrase = Counter(part for r in rows if r[f"{model}_ok"] for part in phrasing(r["prompt"]))
        wrong = [r for r in rows if not r[f"{model}_ok"]]
        misses: dict[str, Counter] = {}
        for r in wrong:
            misses.setdefault(kind(r["prompt"], r["answer"]), Counter())[
                miss(r.get(f"{model}_reply") or "", r["answer"])
            ] += 1
        steps = Counter(
            false_step(r[f"{model}_reply"]) for r in wrong if EQUATION.search(r.get(f"{model}_reply") or "")
        )
        out[model] = {
            "right": {k: right[k] for k in sorted(items)},
            "worked_form": sum(bool(EQUATION.search(r.get(f"{model}_reply") or "")) for r in rows),
            "by_phrasing": {p: by_phrase[p] for p in PHRASINGS},
            "misses": {k: {m: c[m] for m in MISSES if c[m]} for k, c in sorted(misses.items())},
            "first_false_step": dict(sorted(steps.items())),
        }
    return out


def curve_summary(points: list[dict]) -> dict:
    """Steps, examples, tokens, seconds inside the training loop and examples/s of one loss curve,
    and CPU seconds per wall second where the curve records them (near the torch threads when
    training had the cores to itself).

    >>> curve_summary([{"seconds": 1.5, "tokens": 300, "batch_examples": 8}, {"seconds": 0.5, "tokens": 90, "batch_examples": 2}])
    {'steps': 2, 'examples': 10, 'tokens': 390, 'seconds': 2.0, 'examples_per_s': 5.0}
    """
    row: dict = {
        "steps": len(points),
        "examples": sum(int(p.get("batch_examples", 0)) for p in points),
        "tokens": sum(int(p.get("tokens", 0)) for p in points),
        "seconds": round(sum(float(p.get("seconds", 0.0)) for p in points), 3),
    }
    row["examples_per_s"] = round(row["examples"] / row["seconds"], 2) if row["seconds"] else 0.0
    cpu = [float(p["cpu_seconds"]) for p in points if "cpu_seconds" in p]
    if cpu and row["seconds"]:
        row["cpu_per_wall"] = round(sum(cpu) / row["seconds"], 2)
    return row
