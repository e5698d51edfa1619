"""Can the model produce a stepwise reply form itself, when shown it? The yield of a format demonstration.

Samples train-split 2-digit addition and subtraction problems (T = 0.7, top-p 0.95, 2 samples each,
as the demo acquires) three ways: the plain prompt; the same prompt after three worked examples as
chat turns (the tens, then the ones: "61 - 20 = 41, 41 - 3 = 38, so the answer is 38."; the README's
figures were measured before a negative difference was turned round first); and that
with the answer as a hint. The hint is the loop's (``acquisition.prompts.hint_prompt``) without its
"Reply briefly" request, which would ask for the direct form instead of the one shown. For each it counts samples with the right final
answer, samples that use the form (an equation ``a ± b = c``), and right samples whose every equation
is true: the ones a loop could train the form on. The GPT-3 sets are not read.

    .venv/bin/python docs/experiments/scripts/format_yield.py [--adapter DIR] [--problems 64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from selfimprove.runtime.engine import GenerationRequest, SamplingParams, make_engine
from selfimprove.runtime.models import resolve_base
from selfimprove.runtime.tasks.arithmetic import EQUATION, ArithmeticTask, equations_true

DEMONSTRATION = [
    ("What is 52 - 17?", "52 - 10 = 42, 42 - 7 = 35, so the answer is 35."),
    ("What is 23 - 61?", "23 - 61 = -(61 - 23): 61 - 20 = 41, 41 - 3 = 38, so the answer is -38."),
    ("What is 47 + 36?", "47 + 30 = 77, 77 + 6 = 83, so the answer is 83."),
]


def shown(prompt: str) -> list[dict]:
    """``prompt`` after the worked examples as chat turns; their replies are the loop's worked form.

    >>> from selfimprove.runtime.tasks.worked import plan
    >>> [plan({"operator": q.split()[3], "operands": (int(q.split()[2]), int(q.split()[4][:-1]))}).solved()
    ...  for q, _ in DEMONSTRATION] == [a for _, a in DEMONSTRATION]
    True
    >>> [t["role"] for t in shown("What is 1 + 2?")][-3:]
    ['user', 'assistant', 'user']
    """
    turns = [{"role": r, "content": t} for q, a in DEMONSTRATION for r, t in (("user", q), ("assistant", a))]
    return [*turns, {"role": "user", "content": prompt}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", type=Path, help="PEFT folder on the base (default: the base model)")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = str(resolve_base("smollm2-135m-instruct", None))
    engine = make_engine("transformers", base, [args.adapter] if args.adapter else [])
    task = ArithmeticTask(categories=["add2", "sub2"])
    items = task.items("train", args.problems, seed=5)
    sampling = SamplingParams(n=2, temperature=0.7, top_p=0.95, max_new_tokens=64, seed=1)
    variants = {
        "plain": lambda i: i.prompt,
        "shown": lambda i: shown(i.prompt),
        "shown+hint": lambda i: shown(f"{i.prompt} The answer is {i.answer}."),
    }
    for name, prompt in variants.items():
        tic = time.perf_counter()
        results = engine.generate(GenerationRequest([prompt(i) for i in items], sampling))
        texts = [(i, s.text) for i, r in zip(items, results, strict=True) for s in r.samples]
        right = [t for i, t in texts if task.verify(i, t)]
        print(
            json.dumps(
                {
                    "prompt": name,
                    "samples": len(texts),
                    "right": len(right),
                    "in_form": sum(bool(EQUATION.search(t)) for _, t in texts),
                    "right_with_true_steps": sum(map(equations_true, right)),
                    "seconds": round(time.perf_counter() - tic, 1),
                    "example": texts[1][1],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
