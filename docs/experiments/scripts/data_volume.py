"""Does accuracy on a category keep growing with more verified examples of the loop's answer form?

Continues an adapter (for example a demo's final one, copied from the store) with LoRA SFT, as the
trainer does (same loop, one epoch, batch 8, lr 3e-4 unless ``--lr``), on N train-split problems of one category
answered as the loop's trained replies read ("The answer is N."), and scores greedy answers on
fixed dev-split problems before, after each of the ``--at`` example counts, and at the end.
The dev split never meets the train split, and the GPT-3 sets are not read.

    .venv/bin/python docs/experiments/scripts/data_volume.py --adapter DIR --category sub2 --examples 1600 --at 400 800

Prints one JSON line per point: examples seen, training seconds so far (scoring left out), accuracy, and right/items
split by the sign of the answer. ``--form difference`` trains negative answers restated as the
positive difference first ("76 - 48 = 28, so the answer is -28.") instead; ``--form steps`` works every
difference out in two steps, tens then ones, turned round first when negative ("48 - 76 = -(76 - 48):
76 - 40 = 36, 36 - 8 = 28, so the answer is -28."; the ``--form steps`` figures in the README are of the
earlier form without the turn). ``--full`` trains every
weight (the adapter, if any, merged first; the trainer's ``full`` method) instead of LoRA: give it its
own ``--lr``. ``--epochs 2`` trains each example twice (``--at`` and the counts printed include every pass),
so fresh examples can be weighed against repeated ones at the same training cost.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from selfimprove.contracts.params import Hparams
from selfimprove.runtime.extract import last_integer
from selfimprove.runtime.models import resolve_base
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask
from selfimprove.runtime.tasks.worked import REPLY, plan
from selfimprove.trainer.batches import encode
from selfimprove.trainer.model import trainable_model
from selfimprove.trainer.sft import train_unsynced

FORMS = {
    # the loop's trained replies read like this
    "direct": "The answer is {answer}.",
    # a negative difference restated as the positive one first (two operands only)
    "difference": "{b} - {a} = {d}, so the answer is {answer}.",
    # tens, then ones: the larger operand less the other's (a sum: the first plus the second's);
    # the loop's worked replies (selfimprove.runtime.tasks.worked)
    "steps": REPLY,
}


def trained_reply(form: str, item) -> str:
    """The trained reply of ``item`` in ``form``; "difference" changes negative answers only.

    >>> from selfimprove.runtime.tasks.base import Item
    >>> item = Item(id="x", prompt="What is 48 - 76?", category="sub2", difficulty=2, answer="-28",
    ...             meta={"operands": (48, 76), "operator": "-"})
    >>> trained_reply("difference", item), trained_reply("direct", item)
    ('76 - 48 = 28, so the answer is -28.', 'The answer is -28.')
    >>> total = Item(id="y", prompt="What is 47 + 36?", category="add2", difficulty=2, answer="83",
    ...              meta={"operands": (47, 36), "operator": "+"})
    >>> trained_reply("steps", item), trained_reply("steps", total)
    ('48 - 76 = -(76 - 48): 76 - 40 = 36, 36 - 8 = 28, so the answer is -28.', '47 + 30 = 77, 77 + 6 = 83, so the answer is 83.')
    """
    if form == "steps":
        return plan(item.meta).solved()
    if form == "direct" or not item.answer.startswith("-"):
        return FORMS["direct"].format(answer=item.answer)
    a, b = item.meta["operands"]
    return FORMS[form].format(a=a, b=b, d=b - a, answer=item.answer)


def replies(model, tok, prompts, batch: int = 50) -> list[str]:
    """Greedy replies (48 new tokens, as the loop evaluates) of a model being trained; it is left in
    training mode."""
    model.eval()
    tok.padding_side = "left"
    out_texts = []
    for start in range(0, len(prompts), batch):
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in prompts[start : start + batch]
        ]
        enc = tok(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=48, do_sample=False, pad_token_id=tok.pad_token_id)
        out_texts += [tok.decode(ids[enc.input_ids.shape[1] :], skip_special_tokens=True) for ids in out]
    model.train()
    return out_texts


def score(model, tok, dev, batch: int = 50) -> dict:
    right = {"neg": 0, "pos": 0}
    total = {"neg": 0, "pos": 0}
    for item, reply in zip(dev, replies(model, tok, [i.prompt for i in dev], batch), strict=True):
        sign = "neg" if item.answer.startswith("-") else "pos"
        total[sign] += 1
        right[sign] += str(last_integer(reply)) == item.answer
    return {
        "accuracy": round(sum(right.values()) / len(dev), 4),
        **{f"{k}_right": f"{right[k]}/{total[k]}" for k in total},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", type=Path, help="PEFT folder to continue (default: a new LoRA on the base)")
    ap.add_argument("--category", nargs="+", default=["sub2"], help="one or more task categories, mixed")
    ap.add_argument("--examples", type=int, default=1600)
    ap.add_argument("--at", type=int, nargs="*", default=[400, 800], help="also score after this many")
    ap.add_argument("--dev", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4, help="the demo's learning rate by default")
    ap.add_argument("--epochs", type=int, default=1, help="passes over the examples (--at counts every pass)")
    ap.add_argument("--full", action="store_true", help="train every weight, not a LoRA")
    ap.add_argument(
        "--lora-r", type=int, help="a new LoRA of this rank (alpha twice it) on the merged adapter"
    )
    ap.add_argument("--save", type=Path, help="write the trained adapter (or model) to this folder")
    ap.add_argument(
        "--form", choices=sorted(FORMS), default="direct", help="the trained reply's form (see FORMS)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = ArithmeticTask(categories=args.category)
    train, dev = task.items("train", args.examples, seed=11), task.items("dev", args.dev, seed=1234)
    hp = Hparams(
        epochs=args.epochs,
        lr=args.lr,
        lora_r=args.lora_r or 16,
        lora_alpha=2 * (args.lora_r or 16),
        batch_size=8,
        grad_accum=1,
    )
    base, adapter = resolve_base("smollm2-135m-instruct", None), args.adapter
    merged_dir = tempfile.TemporaryDirectory()  # removed when the script ends
    if args.lora_r and adapter:  # merge the adapter, then a new LoRA of the given rank
        from selfimprove.runtime.models import load_model

        merged, merged_tok = load_model(str(base), [adapter], merge=True)
        base, adapter = Path(merged_dir.name), None
        merged.save_pretrained(base)
        merged_tok.save_pretrained(base)
    model, tok = trainable_model(base, adapter, hp, 0, full=args.full)
    examples = [encode(tok, i.prompt, trained_reply(args.form, i), hp.max_length) for i in train]
    print(json.dumps({"examples": 0, "train_s": 0, **score(model, tok, dev)}), flush=True)
    start, scoring = time.perf_counter(), 0.0

    def on_step(point: dict) -> None:
        nonlocal scoring
        if point["examples"] in args.at:
            tic = time.perf_counter()
            seconds = round(tic - start - scoring)
            print(
                json.dumps({"examples": point["examples"], "train_s": seconds, **score(model, tok, dev)}),
                flush=True,
            )
            scoring += time.perf_counter() - tic

    out = train_unsynced(model, examples, hp, tok.pad_token_id, on_step)
    print(
        json.dumps(
            {"examples": out.examples, "train_s": round(out.seconds - scoring), **score(model, tok, dev)}
        )
    )
    if args.save:
        model.save_pretrained(args.save)


if __name__ == "__main__":
    main()
