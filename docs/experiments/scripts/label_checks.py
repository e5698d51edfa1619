"""Which consistency check makes label-free pseudo-labels right more often (a pilot for the loop).

Samples train problems as the label-free demo acquires (T = 0.7, top-p 0.95, K samples each), takes
each prompt's pseudo-label as selection does (``selection.labels.label_of``), then asks the model
greedily, for every labelled prompt, two check questions that need no reference answer:

- ``inverse``: the label undone: ``a + b = c`` is checked by asking ``c - b`` (expects ``a``),
  ``a - b = c`` by asking ``c + b`` (expects ``a``);
- ``twin``: the same problem asked again in another phrasing, a sum with its operands swapped
  (expects ``c``);
- ``turned``: a difference asked the other way round, expecting the label negated (``a - b = c``
  asks ``b - a``, expects ``-c``; a sum: the twin);
- ``task_check``: the loop's check (``acquisition.check_labels``, ``ArithmeticTask.check_item``): the
  twin for a sum, the inverse for a difference.

Prints, per category: prompts, labelled, labelled right, and for each check how many labels pass
it and how many of those are right (the truth is read only for these counts). The GPT-3 sets are not read.

    .venv/bin/python docs/experiments/scripts/label_checks.py [--adapter DIR] [--problems 256] [--samples 6]
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter

from pilotkit import pilot_setup

from selfimprove.runtime.engine import GenerationRequest, SamplingParams
from selfimprove.runtime.tasks.arithmetic import phrase
from selfimprove.selection.labels import LABEL_FREE, label_of


def inverse(operator: str, a: int, b: int, label: int) -> tuple[str, int]:
    """The question that undoes ``a op b = label``, and the answer it expects.

    >>> inverse("+", 47, 36, 83), inverse("-", 23, 61, -38)
    (('83 - 36', 47), ('-38 + 61', 23))
    """
    return (f"{label} - {b}" if operator == "+" else f"{label} + {b}"), a


def twin(operator: str, a: int, b: int) -> str:
    """The problem again, a sum with its operands swapped.

    >>> twin("+", 47, 36), twin("-", 23, 61)
    ('36 + 47', '23 - 61')
    """
    return f"{b} + {a}" if operator == "+" else f"{a} - {b}"


def turned(operator: str, a: int, b: int, label: int) -> tuple[str, int]:
    """A difference the other way round (a sum: its twin), and the answer it expects.

    >>> turned("-", 23, 61, -38), turned("+", 47, 36, 83)
    (('61 - 23', 38), ('36 + 47', 83))
    """
    return (f"{b} - {a}", -label) if operator == "-" else (twin(operator, a, b), label)


def main() -> None:
    args, engine, task, items, sampling = pilot_setup(__doc__)
    tic = time.perf_counter()
    results = engine.generate(GenerationRequest([i.prompt for i in items], sampling))
    labelled = []
    for item, r in zip(items, results, strict=True):
        row = {"samples": [{"extracted": task.extract(s.text)} for s in r.samples]}
        label = label_of(row, LABEL_FREE, args.threshold)
        if label is not None:
            labelled.append((item, int(label)))
    rng, turned_rng = random.Random(0), random.Random(1)  # the turned check draws apart: the others as before
    names = ("inverse", "twin", "turned", "task_check")
    questions = []  # per labelled prompt, one question per name
    for item, label in labelled:
        op, (a, b) = item.meta["operator"], item.meta["operands"]
        expr, expects = inverse(op, a, b, label)
        check = task.check_item(item, str(label))
        questions += [(phrase(expr, rng), expects), (phrase(twin(op, a, b), rng), label)]
        expr, expects = turned(op, a, b, label)
        questions += [(phrase(expr, turned_rng), expects), (check.prompt, check.answer)]
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=48)
    answers = engine.generate(GenerationRequest([q for q, _ in questions], greedy))
    passed = [task.extract(r.samples[0].text) == str(e) for r, (_, e) in zip(answers, questions, strict=True)]
    counts: dict[str, Counter] = {}
    for item in items:
        counts.setdefault(item.category, Counter())["prompts"] += 1
    for k, (item, label) in enumerate(labelled):
        c, right = counts[item.category], str(label) == item.answer
        c["labelled"] += 1
        c["labelled_right"] += right
        negative = label < 0
        c["labelled_negative"] += negative
        c["labelled_negative_right"] += negative and right
        for j, name in enumerate(names):
            ok = passed[len(names) * k + j]
            if negative:
                c[f"{name}_pass_negative"] += ok
                c[f"{name}_pass_negative_right"] += ok and right
            c[f"{name}_pass"] += ok
            c[f"{name}_pass_right"] += ok and right
    for cat in sorted(counts):
        print(json.dumps({"category": cat, **counts[cat]}))
    print(json.dumps({"seconds": round(time.perf_counter() - tic, 1), "questions": len(questions)}))


if __name__ == "__main__":
    main()
