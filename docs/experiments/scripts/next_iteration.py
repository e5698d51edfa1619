"""Train the iteration a run's budget cut short, by hand: continue an adapter on the run's stored
selected sets, as the loop's trainer would have, and score it on the run's own dev set.

Reads ``sft.jsonl`` of ``--iteration`` N (and of the ``--replay`` iterations before it, as
``training.replay_iterations`` does) from a stopped local stack folder, continues ``--adapter`` (the
run's incumbent, exported) with LoRA SFT (one epoch, batch 8, lr 3e-4, rank 16: the demo's
hyperparameters), then answers the dev prompts of iteration N-1's evaluation greedily (48 new tokens)
before and after (``--repeat-worked sub2 --times 3`` trains that category's examples that state an
equation, worked replies and sub-questions answered as one, three times, to see what more of them would do; the examples it trains are counted per category and
form first, also with ``--score-only``; ``--reform`` writes the stored worked replies again in the
current form of :mod:`selfimprove.runtime.tasks.worked` first, to measure a change of form on the same data). Counted as ``selfimprove inspect dev`` counts them: right / items for addition, subtraction
with a result >= 0 and with a negative one (right: the answer, and no false equation, as the task's
verifier), and of each the replies in the worked form (stating an equation). The GPT-3 sets are not read.

    .venv/bin/python docs/experiments/scripts/next_iteration.py demo-y --iteration 3 --adapter DIR --data-dir DIR
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import torch
from data_volume import replies
from storekit import read_latest, run_parser

from selfimprove.cli.runlook import kind
from selfimprove.contracts.params import Hparams
from selfimprove.runtime.models import resolve_base
from selfimprove.runtime.tasks.arithmetic import EQUATION, ArithmeticTask
from selfimprove.runtime.tasks.base import Item
from selfimprove.runtime.tasks.worked import Plan
from selfimprove.trainer.batches import encode
from selfimprove.trainer.model import trainable_model
from selfimprove.trainer.sft import train_unsynced

TASK = ArithmeticTask()  # its verifier: the final answer, and no false equation


def breakdown(dev: list[dict], texts: list[str]) -> dict[str, str]:
    """Right / items per kind of problem, and per kind right / replies in the worked form.

    >>> dev = [{"prompt": "What is 5 - 9?", "answer": "-4"}, {"prompt": "What is 5 + 9?", "answer": "14"}]
    >>> breakdown(dev, ["9 - 5 = 4, so the answer is -4.", "5 + 9 = 15, so 14."])
    {'add': '0/1', 'sub<0': '1/1', 'add worked': '0/1', 'sub<0 worked': '1/1'}
    """
    total, right = Counter(), Counter()
    for row, text in zip(dev, texts, strict=True):
        k = kind(row["prompt"], row["answer"])
        ok = TASK.verify(
            Item(id="", prompt=row["prompt"], category="", difficulty=0, answer=row["answer"]), text
        )
        for key in (k, f"{k} worked") if EQUATION.search(text) else (k,):
            total[key] += 1
            right[key] += ok
    return {k: f"{right[k]}/{total[k]}" for k in sorted(total, key=lambda k: ("worked" in k, k))}


def repeats(example: dict, categories: list[str], times: int) -> int:
    """How often an SFT example is trained: ``times`` for one of ``categories`` that states an equation
    (a worked reply, or a sub-question answered as one), else once.

        >>> worked = {"category": "sub2", "response": "61 - 20 = 41, 41 - 3 = 38, so the answer is -38."}
        >>> repeats(worked, ["sub2"], 3), repeats({**worked, "response": "-38"}, ["sub2"], 3), repeats(worked, [], 3)
        (3, 1, 1)
    """
    return times if example["category"] in categories and EQUATION.search(example["response"]) else 1


# a worked reply as the loop writes it, in this or an earlier form (a negative difference turned round or not)
WORKED = re.compile(
    r"(?:\d+ - \d+ = -\(\d+ - \d+\): )?(\d+) ([+-]) (\d+) = (-?\d+), -?\d+ [+-] (\d+) = (-?\d+), so the answer is (-?\d+)\."
)


def reform(example: dict) -> dict:
    """The example with a stored worked reply written again in the current form (:class:`Plan`).

    >>> reform({"response": "61 - 20 = 41, 41 - 3 = 38, so the answer is -38."})["response"]
    '23 - 61 = -(61 - 23): 61 - 20 = 41, 41 - 3 = 38, so the answer is -38.'
    >>> reform({"response": "The answer is -38."})["response"]
    'The answer is -38.'
    """
    m = WORKED.fullmatch(example["response"])
    if not m:
        return example
    first, op, tens, mid, ones, d, answer = m.groups()
    plan = Plan(op=op, first=int(first), tens=int(tens), ones=int(ones), negate=int(answer) < 0)
    return {**example, "response": plan.reply(int(mid), int(d))}


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument(
        "--iteration", type=int, required=True, help="the iteration whose selected set is trained"
    )
    ap.add_argument("--adapter", type=Path, required=True, help="the incumbent it starts from (PEFT folder)")
    ap.add_argument("--replay", type=int, default=1, help="earlier iterations' sets trained with it")
    ap.add_argument("--save", type=Path, help="write the trained adapter to this folder")
    ap.add_argument("--score-only", action="store_true", help="score --adapter on the dev set, train nothing")
    ap.add_argument(
        "--repeat-worked", nargs="*", default=[], help="categories whose worked replies are repeated"
    )
    ap.add_argument("--times", type=int, default=1, help="how often those worked replies are trained")
    ap.add_argument(
        "--reform", action="store_true", help="write the stored worked replies again in the current form"
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sft = []
    for it in range(max(1, args.iteration - args.replay), args.iteration + 1):
        for data in read_latest(args.data_dir, args.run_id, "select", "sft.jsonl", it).values():
            sft += [json.loads(line) for line in data.splitlines() if line.strip()]
    [details] = read_latest(
        args.data_dir, args.run_id, "evaluate", "details.jsonl", args.iteration - 1
    ).values()
    dev = [r for r in map(json.loads, details.splitlines()) if r["suite"] == "dev"]
    hp = Hparams(epochs=1, lr=3e-4, lora_r=16, lora_alpha=32, batch_size=8, grad_accum=1)
    model, tok = trainable_model(resolve_base("smollm2-135m-instruct", None), args.adapter, hp, 0)
    prompts = [r["prompt"] for r in dev]
    print(json.dumps({"examples": 0, **breakdown(dev, replies(model, tok, prompts))}), flush=True)
    sft = [
        reform(x) if args.reform else x
        for x in sft
        for _ in range(repeats(x, args.repeat_worked, args.times))
    ]
    trained = Counter(x["category"] + (" worked" if EQUATION.search(x["response"]) else "") for x in sft)
    print(json.dumps({"trained": dict(sorted(trained.items()))}), flush=True)
    if args.score_only:
        return
    examples = [encode(tok, x["prompt"], x["response"], hp.max_length) for x in sft]
    tic = time.perf_counter()
    out = train_unsynced(model, examples, hp, tok.pad_token_id)
    seconds = round(time.perf_counter() - tic)
    print(
        json.dumps(
            {"examples": out.examples, "train_s": seconds, **breakdown(dev, replies(model, tok, prompts))}
        )
    )
    if args.save:
        model.save_pretrained(args.save)


if __name__ == "__main__":
    main()
