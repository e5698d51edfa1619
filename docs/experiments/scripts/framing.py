"""The loop's own dev problems in other framings, as JSONL sets ``selfimprove eval --benchmark PATH``
reads: how much of a model's accuracy depends on the wording it was trained on.

    .venv/bin/python docs/experiments/scripts/framing.py --category add2 --n 200 --out DIR
    .venv/bin/selfimprove eval --adapter ADAPTER --benchmark DIR/add2_task.jsonl --json
    .venv/bin/selfimprove eval --adapter ADAPTER --benchmark DIR/add2_qa.jsonl --json

Writes one set per framing of the same dev problems (the evaluator's seed): ``task`` (the task's own
prompts, as the loop asks them) and ``qa`` ("Q: What is 86 plus 29?" then "A:", a few-shot style
framing; since commit 697e090 about one task prompt in four is framed that way too, so the gap
measured here is that of models trained before it). The problems are the task's dev split, never a
benchmark's items.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfimprove.runtime.tasks.arithmetic import ArithmeticTask, in_words

FRAMINGS = {"task": None, "qa": "\n\nQ: What is {words}?\n\nA:"}


def framed(prompt: str, expression: str, framing: str) -> str:
    """The user message of one problem in ``framing``.

    >>> framed("Compute 86 + 29.", "86 + 29", "task"), framed("Compute 86 + 29.", "86 + 29", "qa")
    ('Compute 86 + 29.', '\\n\\nQ: What is 86 plus 29?\\n\\nA:')
    """
    template = FRAMINGS[framing]
    if template is None:
        return prompt
    return template.format(words=in_words(expression))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--category", default="add2")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1234, help="the evaluator's seed (evaluation.seed)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    items = ArithmeticTask((args.category,)).items("dev", args.n, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for framing in FRAMINGS:
        path = args.out / f"{args.category}_{framing}.jsonl"
        lines = (
            json.dumps(
                {"context": framed(it.prompt, it.meta["expression"], framing), "completion": f" {it.answer}"}
            )
            for it in items
        )
        path.write_text("\n".join(lines) + "\n")
        print(path)


if __name__ == "__main__":
    main()
