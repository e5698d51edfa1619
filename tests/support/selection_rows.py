"""Acquisition rows for selection's tests: a fixed mix of all-right, all-wrong, majority-right,
majority-wrong, unanswered and cut-off samples over arithmetic prompts (unit and integration tests)."""

import json
import random

from selfimprove.acquisition.shard import make_row
from selfimprove.runtime.engine import Sample
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask

TASK = ArithmeticTask(categories=("add2", "sub2", "mul1"))


def synthetic_rows(n=30):
    """Rows with a mix of all-right, all-wrong, majority-right and majority-wrong prompts."""
    rows = []
    for i, item in enumerate(TASK.items("train", n, seed=5)):
        right, wrong = int(item.answer), int(item.answer) + 1 + i % 3
        pattern = ["rrrr", "wwww", "rrrw", "wwwr", "rrww", "rwx-"][i % 6]
        texts = {
            "r": [f"{item.prompt[:-1]} equals {right}.", f"The answer is {right}", f"So we get {right}!"],
            "w": [f"I think it is {wrong}.", f"It is {wrong}", f"{wrong} is the result"],
            "x": ["no idea"],
            "-": [f"cut off at {right} and"],
        }
        samples = []
        for k, c in enumerate(pattern):
            options = texts[c]
            samples.append(Sample(options[k % len(options)], 8 + k, "length" if c == "-" else "stop"))
        rows.append(make_row(item, samples, TASK.extract, TASK.verify))
    return rows


def judged(rows, right=(0.6, 1.0), wrong=(0.0, 0.5), seed=0):
    """``rows`` with the model's P(Yes) on each sample (``judge``), drawn from ``right`` when its answer
    is the truth and from ``wrong`` otherwise: overlapping ranges make an informative, imperfect judge."""
    rng = random.Random(seed)
    out = json.loads(json.dumps(rows))
    for row in out:
        for s in row["samples"]:
            low, high = right if s["extracted"] == row["answer"] else wrong
            s["judge"] = rng.uniform(low, high)
    return out
