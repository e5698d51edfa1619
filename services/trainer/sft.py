"""The SFT loop (LoRA or full): length-grouped micro-batches, gradient accumulation, resumable.

The whole schedule (which micro-batches form which optimizer step) is fixed up front from the seed,
so a run resumed at step N continues with exactly the batches a run that never stopped would see.
Every ``checkpoint_every`` steps the trainable weights, optimizer, scheduler, RNG state and loss
curve are saved to a local folder and pushed to the store (:class:`CheckpointSync`).
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from selfimprove.contracts.params import Hparams
from selfimprove.trainer.batches import Encoded, collate, length_grouped
from selfimprove.trainer.checkpoints import CheckpointSync
from selfimprove.trainer.losses import response_loss

log = logging.getLogger(__name__)
STATE = "state.pt"
OnStep = Callable[[dict], None]


@dataclass
class Outcome:
    """What a run did: its loss curve (one point per optimizer step) and summary numbers."""

    curve: list[dict] = field(default_factory=list)
    steps: int = 0
    resumed_from: int = 0
    seconds: float = 0.0  # training time of this process
    tokens_run: int = 0  # tokens processed by this process
    examples: int = 0
    extra: dict = field(default_factory=dict)  # numbers measured before training (kept across resumes)

    @property
    def steps_run(self) -> int:
        return self.steps - self.resumed_from


def schedule(examples: Sequence[Encoded], hp: Hparams, seed: int) -> list[list[list[int]]]:
    """Optimizer steps as lists of micro-batches (lists of example indices), over every epoch."""
    micro: list[list[int]] = []
    for epoch in range(hp.epochs):
        micro.extend(length_grouped(examples, hp.batch_size, hp.bucket_size, seed * 1009 + epoch))
    steps = [micro[i : i + hp.grad_accum] for i in range(0, len(micro), hp.grad_accum)]
    return steps[: hp.max_steps] if hp.max_steps else steps


def _scheduler(optimizer, total: int, warmup_ratio: float):
    warmup = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_sft(
    model,
    examples: Sequence[Encoded],
    hp: Hparams,
    *,
    seed: int,
    lr: float,
    pad_id: int,
    work: Path,
    sync: CheckpointSync | None,
    checkpoint_every: int,
    on_step: OnStep = lambda point: None,
    before: Callable[[], dict] = dict,
) -> Outcome:
    """Train ``model`` in place on ``examples`` (response-token loss); resume from ``sync`` if it has state."""
    random.seed(seed)
    torch.manual_seed(seed)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=lr, weight_decay=hp.weight_decay)
    plan = schedule(examples, hp, seed)
    scheduler = _scheduler(optimizer, len(plan), hp.warmup_ratio)
    out = Outcome()
    pulled = sync.pull(work / "resume") if sync else None
    if pulled:
        state = torch.load(pulled[1] / STATE, weights_only=True)  # data only: never unpickle code
        unexpected = model.load_state_dict(state["params"], strict=False).unexpected_keys
        if unexpected or set(state["params"]) != set(params):
            raise RuntimeError(f"checkpoint of step {pulled[0]} does not fit this model: {unexpected[:3]}")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        out.curve, out.steps, out.examples = state["curve"], state["step"], state["examples"]
        out.resumed_from, out.extra = out.steps, state["extra"]
    else:
        out.extra = before()
    model.train()
    start = time.perf_counter()
    for index in range(out.steps, len(plan)):
        tic, cpu_tic = time.perf_counter(), time.process_time()
        micro = [[examples[i] for i in batch] for batch in plan[index]]
        n_labels = sum(e.response_tokens for batch in micro for e in batch) or 1
        optimizer.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        for batch in micro:
            ids, mask, labels = collate(batch, pad_id)
            loss, _ = response_loss(model, ids, mask, labels, hp.share_prefix)
            (loss / n_labels).backward()
            total += loss.item()
            tokens += int(mask.sum())
        torch.nn.utils.clip_grad_norm_(params.values(), hp.max_grad_norm)
        optimizer.step()
        scheduler.step()
        out.steps = index + 1
        out.examples += sum(len(b) for b in micro)
        out.tokens_run += tokens
        point = {
            "step": out.steps,
            "loss": total / n_labels,
            "tokens": tokens,
            "seconds": round(time.perf_counter() - tic, 4),
            # CPU seconds of every thread of this process in the step: about seconds x threads when
            # the step has the cores to itself, less when something else runs beside it
            "cpu_seconds": round(time.process_time() - cpu_tic, 4),
            "lr": scheduler.get_last_lr()[0],
            "examples": out.examples,
            "batch_examples": sum(len(b) for b in micro),
        }
        out.curve.append(point)
        on_step({**point, "steps_total": len(plan)})  # the total for progress displays, not the curve
        if not math.isfinite(point["loss"]):
            log.error("loss is %s at step %d: stopping", point["loss"], out.steps)
            break
        if sync and out.steps % checkpoint_every == 0 and out.steps < len(plan):
            _checkpoint(model, params, optimizer, scheduler, out, work, sync)
    out.seconds = time.perf_counter() - start
    return out


def _checkpoint(model, params, optimizer, scheduler, out: Outcome, work: Path, sync: CheckpointSync) -> None:
    folder = work / "checkpoint"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    state = {
        "params": {n: p.detach().clone() for n, p in params.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "step": out.steps,
        "examples": out.examples,
        "curve": out.curve,
        "extra": out.extra,
    }
    torch.save(state, folder / STATE)
    sync.push(out.steps, folder)


def train_unsynced(
    model, examples: Sequence[Encoded], hp: Hparams, pad_id: int, on_step: OnStep = lambda p: None
) -> Outcome:
    """:func:`train_sft` with seed 0 and ``hp.lr`` in a temporary folder, no checkpoints (benchmarks)."""
    with tempfile.TemporaryDirectory() as work:
        return train_sft(
            model,
            examples,
            hp,
            seed=0,
            lr=hp.lr,
            pad_id=pad_id,
            work=Path(work),
            sync=None,
            checkpoint_every=10**9,
            on_step=on_step,
        )
