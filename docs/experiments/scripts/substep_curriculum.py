"""Does one self-taught round on the sub-steps raise the yield of worked subtraction replies?

Starting from an adapter (for example a demo's final one), the model samples answers (2 each,
T = 0.7, top-p 0.95) to sub-step problems it is asked as plain prompts: 600 differences of a 2-digit
number and a multiple of ten ("What is 76 - 40?") and 600 of a 2-digit and a 1-digit number ("What is
36 - 8?"). Its shortest right answer to each is kept (the verifier is the problem's value), and the
adapter is trained one epoch on them with the demo's LoRA settings. Before and after, it prints
acquisition's ``work_out`` on 64 train subtractions (as ``worked_steps.py``) and greedy accuracy on
200 own dev subtractions (as ``data_volume.py``). The GPT-3 sets are not read.

    .venv/bin/python docs/experiments/scripts/substep_curriculum.py --adapter DIR [--save OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from data_volume import score
from worked_steps import measure

from selfimprove.contracts.params import Hparams
from selfimprove.runtime.engine import GenerationRequest, SamplingParams, make_engine
from selfimprove.runtime.extract import last_integer
from selfimprove.runtime.models import resolve_base
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask
from selfimprove.trainer.batches import encode
from selfimprove.trainer.model import trainable_model
from selfimprove.trainer.sft import train_unsynced


def substeps(n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` tens differences, then ``n`` differences with a one-digit number, as ``(a, b)``.

    >>> pairs = substeps(50, 0)
    >>> all(b % 10 == 0 and b <= a for a, b in pairs[:50]), all(b < 10 <= a for a, b in pairs[50:])
    (True, True)
    """
    rng = random.Random(seed)
    tens = [(a, rng.randint(1, a // 10) * 10) for a in (rng.randint(10, 99) for _ in range(n))]
    return tens + [(rng.randint(10, 99), rng.randint(0, 9)) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", type=Path, required=True, help="PEFT folder on the base to continue")
    ap.add_argument("--problems", type=int, default=600, help="sub-step problems of each kind")
    ap.add_argument("--save", type=Path, help="write the trained adapter to this folder")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = str(resolve_base("smollm2-135m-instruct", None))
    task = ArithmeticTask(categories=["sub2"])
    probe, dev = task.items("train", 64, seed=5), task.items("dev", 200, seed=1234)
    engine = make_engine("transformers", base, [args.adapter])
    print(json.dumps({"model": "before", **measure(engine, task, probe)["sub2"]}), flush=True)
    pairs = substeps(args.problems, seed=7)
    prompts = [f"What is {a} - {b}?" for a, b in pairs]
    tic = time.perf_counter()
    sampling = SamplingParams(n=2, temperature=0.7, top_p=0.95, max_new_tokens=48, seed=3)
    results = engine.generate(GenerationRequest(prompts, sampling))
    right = [
        [s.text for s in r.samples if last_integer(s.text) == a - b]
        for (a, b), r in zip(pairs, results, strict=True)
    ]
    kept = [(p, min(texts, key=len)) for p, texts in zip(prompts, right, strict=True) if texts]
    n = args.problems
    print(
        json.dumps(
            {
                "sampling_s": round(time.perf_counter() - tic),
                "tens_answered": f"{sum(map(bool, right[:n]))}/{n}",
                "ones_answered": f"{sum(map(bool, right[n:]))}/{n}",
                "kept": len(kept),
            }
        ),
        flush=True,
    )
    del engine
    hp = Hparams(epochs=1, lr=3e-4, lora_r=16, lora_alpha=32, batch_size=8, grad_accum=1)
    model, tok = trainable_model(Path(base), args.adapter, hp, 0)
    print(json.dumps({"dev_sub2_before": score(model, tok, dev)}), flush=True)
    out = train_unsynced(
        model, [encode(tok, p, t, hp.max_length) for p, t in kept], hp, tok.pad_token_id, lambda _: None
    )
    print(
        json.dumps(
            {"trained": out.examples, "train_s": round(out.seconds), "dev_sub2_after": score(model, tok, dev)}
        ),
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        saved = args.save or Path(tmp)
        model.save_pretrained(saved)
        print(
            json.dumps(
                {"model": "after", **measure(make_engine("transformers", base, [saved]), task, probe)["sub2"]}
            )
        )


if __name__ == "__main__":
    main()
