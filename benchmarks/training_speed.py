"""Training throughput: our LoRA SFT loop next to TRL's ``SFTTrainer`` (or, with ``--against
full-rows``, next to itself running every row in full instead of the batch's shared prefix once),
same model, LoRA and data.

Both train one epoch over the same chat examples (loss on the assistant turn only), batch size 8,
LoRA r=16, alpha=32, dropout 0.05 on every linear projection, AdamW, on CPU with the same torch
threads. Tokens are the examples' non-padding tokens, identical for both; tokens/s = tokens /
seconds in ``train``. Examples are arithmetic questions with template answers (speed only: the
text does not matter here, and no model quality is claimed from it).

With ``--against full-rows`` both runs also start from the same LoRA weights and seed, so their loss
curves should match (up to float rounding and LoRA dropout on the shared positions); the mean
absolute difference of the per-step losses is printed. With ``--against dropout`` our loop runs twice
from the same LoRA weights and seed, with LoRA dropout 0.05 (the trainer's old default) and 0 (its
default since run ``demo-ra``), and each model's loss on 64 held-out problems is printed after its
epoch; ``--against bf16-base`` does the same with dropout 0, fp32 against the frozen base projections
run in bfloat16 (the LoRA path and the held-out loss stay fp32); ``--against bf16-head`` runs fp32,
the base projections in bfloat16 (the trainer's ``frozen_dtype``) and those plus the frozen output
layer, all three side by side; ``--against denormal`` keeps subnormal floats against flushing them
to zero (``torch.set_flush_denormal``); ``--against second-team`` trains with this thread's OpenMP
team alone against with a second, idle thread that once ran a parallel torch op (as a second thread
of asyncio's default executor did in the trainer; ``selfimprove.core.compute``) alive beside it
(``--frozen-bf16``: the base projections in bfloat16 in both runs of these two).
``--adapter DIR`` continues a trained adapter instead of a new LoRA, as the loop's later iterations
do. Every variant run follows an untimed warm-up of four batches. ``--reply`` sets the answer text;
``--reply worked`` trains 2-digit sums and differences with the loop's worked replies ("61 - 20 =
41, 41 - 3 = 38, so the answer is 38.").

Run: ``.venv/bin/python benchmarks/training_speed.py [--examples 160] [--threads 2] [--base PATH]
[--against trl|full-rows|dropout|bf16-base|bf16-head|denormal|second-team] [--reply "The answer is {answer}."|worked]
[--adapter DIR] [--frozen-bf16]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import torch


def rows(n: int, reply: str, split: str = "train", seed: int = 3) -> list[dict]:
    from selfimprove.runtime.tasks import load_task
    from selfimprove.runtime.tasks.worked import plan

    if reply == "worked":
        task = load_task("arithmetic", {"categories": ["add2", "sub2"]})
        return [
            {"prompt": i.prompt, "response": plan(i.meta).solved()} for i in task.items(split, n, seed=seed)
        ]
    items = load_task("arithmetic").items(split, n, seed=seed)
    return [{"prompt": i.prompt, "response": reply.format(answer=i.answer)} for i in items]


def lora(dropout: float = 0.05):
    from peft import LoraConfig

    return LoraConfig(
        r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def ours(
    base: str,
    data: list[dict],
    batch: int,
    share_prefix: bool = True,
    dropout: float = 0.05,
    heldout: Sequence[dict] = (),
    bf16: str = "",
    adapter: str = "",
    flush_denormal: bool = False,
    second_team: bool = False,
):
    """Seconds, tokens and per-step losses of one epoch of our loop, and the loss on ``heldout`` after it
    (``adapter``: that trained adapter continued instead of a new LoRA)."""
    from peft import PeftModel, get_peft_model

    from selfimprove.contracts.params import Hparams
    from selfimprove.runtime.models import load_model
    from selfimprove.trainer.batches import encode
    from selfimprove.trainer.losses import mean_loss
    from selfimprove.trainer.precision import frozen_in_bf16
    from selfimprove.trainer.sft import train_unsynced

    model, tok = load_model(base, merge=False)
    torch.manual_seed(0)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    else:
        model = get_peft_model(model, lora(dropout))
    hp = Hparams(epochs=1, batch_size=batch, grad_accum=1, share_prefix=share_prefix)
    examples = [encode(tok, r["prompt"], r["response"], hp.max_length) for r in data]
    torch.set_flush_denormal(flush_denormal)
    with ThreadPoolExecutor(1) if second_team else nullcontext() as other:
        if other is not None:  # the other thread gets an OpenMP team of its own and keeps it, idle
            other.submit(lambda: torch.ones(1 << 22).mul_(2)).result()
        with frozen_in_bf16(model, head=bf16 == "head") if bf16 else nullcontext():
            out = train_unsynced(model, examples, hp, tok.pad_token_id)
    torch.set_flush_denormal(False)
    held = [encode(tok, r["prompt"], r["response"], hp.max_length) for r in heldout]
    # the held-out loss in fp32, whatever the training ran in
    return (
        out.seconds,
        out.tokens_run,
        [p["loss"] for p in out.curve],
        mean_loss(model, held, tok.pad_token_id),
    )


def trl(base: str, data: list[dict], batch: int) -> tuple[float, int]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from selfimprove.runtime.models import load_model

    model, tok = load_model(base, merge=False)
    tok.padding_side = "right"
    ds = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["response"]}],
            }
            for r in data
        ]
    )
    with tempfile.TemporaryDirectory() as work:
        args = SFTConfig(
            output_dir=work,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            num_train_epochs=1,
            learning_rate=2e-4,
            lr_scheduler_type="cosine",
            logging_steps=5,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=0,
            dataloader_num_workers=0,
            disable_tqdm=True,
            packing=False,
            max_length=512,
        )
        torch.manual_seed(0)
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora()
        )
        tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
        start = time.perf_counter()
        trainer.train()
        return time.perf_counter() - start, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", default="smollm2-135m-instruct")
    variants = ["trl", "full-rows", "dropout", "bf16-base", "bf16-head", "denormal", "second-team"]
    ap.add_argument("--against", choices=variants, default="trl")
    ap.add_argument("--adapter", default="", help="continue this trained PEFT adapter (variants only)")
    ap.add_argument("--frozen-bf16", action="store_true", help="denormal, second-team: base in bfloat16")
    ap.add_argument("--reply", default="Let me compute it. The result is {answer}.")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(a.threads)
    data = rows(a.examples, a.reply)
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"{a.threads} threads, load average {os.getloadavg()[0]:.2f} (shared machine)"
    )
    if a.against == "full-rows":
        return against_full_rows(a, data)
    if a.against in ("dropout", "bf16-base", "bf16-head", "denormal", "second-team"):
        return against_variant(a, data)
    t_ours, n_ours, *_ = ours(a.base, data, a.batch)
    t_trl, n_trl = trl(a.base, data, a.batch)
    r_ours, r_trl = n_ours / t_ours, n_trl / t_trl
    print(f"model {a.base}, {a.examples} examples, batch {a.batch}, 1 epoch, LoRA r16 all-linear")
    print(f"ours          {n_ours:7d} tokens {t_ours:7.1f} s {r_ours:7.1f} tokens/s")
    print(f"trl SFTTrainer {n_trl:6d} tokens {t_trl:7.1f} s {r_trl:7.1f} tokens/s")
    print(f"ratio ours/trl: {r_ours / r_trl:.2f}x (goal >= 1.5x); load average now {os.getloadavg()[0]:.2f}")


def against_full_rows(a, data: list[dict]) -> None:
    t_full, n_full, loss_full, _ = ours(a.base, data, a.batch, share_prefix=False)
    t_once, n_once, loss_once, _ = ours(a.base, data, a.batch, share_prefix=True)
    gap = sum(abs(x - y) for x, y in zip(loss_full, loss_once, strict=True)) / len(loss_full)
    print(
        f"model {a.base}, {a.examples} examples ({a.reply!r}), batch {a.batch}, 1 epoch, LoRA r16 all-linear"
    )
    print(f"full rows      {n_full:6d} tokens {t_full:7.1f} s {a.examples / t_full:6.2f} examples/s")
    print(f"prefix once    {n_once:6d} tokens {t_once:7.1f} s {a.examples / t_once:6.2f} examples/s")
    print(f"speed-up: {t_full / t_once:.2f}x; per-step loss: mean |difference| {gap:.4f}, last step")
    print(f"{loss_full[-1]:.4f} vs {loss_once[-1]:.4f}; load average now {os.getloadavg()[0]:.2f}")


def against_variant(a, data: list[dict]) -> None:
    """Our loop on the same data, seed and starting weights, once per variant (dropout 0.05 against 0,
    or, with dropout 0, fp32 against bfloat16), after an untimed warm-up of four batches."""
    heldout = rows(64, a.reply, split="dev", seed=5)
    print(
        f"model {a.base}, {a.examples} examples ({a.reply!r}), batch {a.batch}, 1 epoch, LoRA r16 all-linear"
    )
    if a.against == "dropout":
        runs = {"dropout 0.05": {"dropout": 0.05}, "dropout 0": {"dropout": 0.0}}
    elif a.against == "denormal":
        bf16 = {"bf16": "base"} if a.frozen_bf16 else {}
        runs = {
            "denormals": {"dropout": 0.0, **bf16},
            "flushed": {"dropout": 0.0, "flush_denormal": True, **bf16},
        }
    elif a.against == "second-team":
        bf16 = {"bf16": "base"} if a.frozen_bf16 else {}
        runs = {
            "one team": {"dropout": 0.0, **bf16},
            "second team": {"dropout": 0.0, "second_team": True, **bf16},
        }
    elif a.against == "bf16-base":
        runs = {"fp32": {"dropout": 0.0}, "bf16 base": {"dropout": 0.0, "bf16": "base"}}
    else:
        runs = {
            "fp32": {"dropout": 0.0},
            "bf16 base": {"dropout": 0.0, "bf16": "base"},
            "bf16 all": {"dropout": 0.0, "bf16": "head"},
        }
    ours(a.base, data[: 4 * a.batch], a.batch, dropout=0.0)  # warm-up: the first run in a process is slower
    seconds = []
    for name, options in runs.items():
        t, n, losses, held = ours(a.base, data, a.batch, heldout=heldout, adapter=a.adapter, **options)
        seconds.append(t)
        print(
            f"{name:<12} {n:6d} tokens {t:7.1f} s {a.examples / t:6.2f} examples/s, "
            f"last step loss {losses[-1]:.4f}, held-out loss {held:.4f} (64 dev problems, fp32)"
        )
    ratios = ", ".join(
        f"{name} {seconds[0] / t:.2f}x" for name, t in zip(list(runs)[1:], seconds[1:], strict=True)
    )
    print(f"speed-up over the first: {ratios}; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
