"""DPO with TRL's ``DPOTrainer`` on the policy's LoRA, resumable through the store.

TRL builds the reference model from the PEFT model itself (a frozen copy of the adapter being
trained, or the base when the adapter is new). Checkpoints are the Hugging Face Trainer's own
``checkpoint-<N>`` folders; a callback pushes each one to the store and a restarted trainer pulls
the newest back and passes it as ``resume_from_checkpoint``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from selfimprove.contracts.params import Hparams
from selfimprove.trainer.checkpoints import CheckpointSync
from selfimprove.trainer.sft import OnStep, Outcome


def _callback(sync: CheckpointSync | None, on_step: OnStep, out: Outcome, tokens_per_step: float):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.tic = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                point = {
                    "step": state.global_step,
                    "loss": float(logs["loss"]),
                    "tokens": tokens_per_step,
                    "seconds": round(time.perf_counter() - getattr(self, "tic", time.perf_counter()), 4),
                    "margin": float(logs.get("rewards/margins", float("nan"))),
                    "batch_examples": args.per_device_train_batch_size * args.gradient_accumulation_steps,
                    "examples": state.global_step
                    * args.per_device_train_batch_size
                    * args.gradient_accumulation_steps,
                }
                out.curve.append(point)
                on_step({**point, "steps_total": state.max_steps})  # for progress displays, not the curve

        def on_save(self, args, state, control, **kw):
            if sync is not None:
                sync.push(state.global_step, Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return Progress()


def train_dpo(
    model,
    tokenizer,
    pairs: Sequence[dict[str, str]],
    hp: Hparams,
    *,
    seed: int,
    work: Path,
    sync: CheckpointSync | None,
    checkpoint_every: int,
    total_tokens: int,
    on_step: OnStep = lambda point: None,
) -> Outcome:
    """Train ``model`` (a PEFT model) in place with DPO on ``pairs``; returns its loss curve."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": p["prompt"]}],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
        }
        for p in pairs
    ]
    args = DPOConfig(
        output_dir=str(work / "hf"),
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.grad_accum,
        learning_rate=hp.dpo_lr,
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps or -1,
        lr_scheduler_type="cosine",
        warmup_steps=hp.warmup_ratio,
        max_grad_norm=hp.max_grad_norm,
        beta=hp.dpo_beta,
        max_length=hp.max_length,
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="steps",
        save_steps=checkpoint_every,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    tokenizer.padding_side = "right"
    out = Outcome()
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    steps_total = max(1, trainer.get_train_dataloader().__len__() // hp.grad_accum * hp.epochs)
    trainer.add_callback(_callback(sync, on_step, out, total_tokens / max(1, hp.max_steps or steps_total)))
    pulled = sync.pull(work / "resume") if sync else None
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(pulled[1]) if pulled else None)
    out.seconds = time.perf_counter() - start
    out.steps = trainer.state.global_step
    out.resumed_from = pulled[0] if pulled else 0
    out.examples = out.steps * hp.batch_size * hp.grad_accum
    out.tokens_run = int(total_tokens * out.steps_run / max(1, hp.max_steps or steps_total))
    history = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
    if pulled:  # the curve before the resume comes from the restored trainer state
        seen = {p["step"] for p in out.curve}
        out.curve = [
            {"step": h["step"], "loss": h["loss"], "tokens": 0, "seconds": 0.0}
            for h in history
            if h["step"] not in seen
        ] + out.curve
    return out
