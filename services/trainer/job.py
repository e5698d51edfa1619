"""One train command from data to the files of the candidate adapter (no bus here; called in a thread).

``run_job`` reads the datasets, loads the policy, trains with the command's method, and returns the
files of the output artifact (a PEFT folder plus ``training_config.json``, ``loss_curve.json`` and
``data_refs.json``) and the statistics that go into its manifest and the result event.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from selfimprove.core.stage import StageInputError, prefix_for, stats_dict
from selfimprove.core.store import ArtifactStore
from selfimprove.runtime.models import stop_token_ids
from selfimprove.trainer import data, precision
from selfimprove.trainer import model as models
from selfimprove.trainer.batches import encode, split_heldout
from selfimprove.trainer.checkpoints import CheckpointSync
from selfimprove.trainer.hparams import parse_hparams
from selfimprove.trainer.sft import OnStep, Outcome
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import TrainMethod, TrainStats

log = logging.getLogger(__name__)
METHODS = {
    TrainMethod.TRAIN_METHOD_UNSPECIFIED: "sft",
    TrainMethod.TRAIN_METHOD_SFT: "sft",
    TrainMethod.TRAIN_METHOD_DPO: "dpo",
    TrainMethod.TRAIN_METHOD_FULL_SFT: "full_sft",
}


@dataclass
class JobOptions:
    work_dir: Path
    cache_dir: Path | None = None
    checkpoint_every: int = 20
    keep_checkpoints: int = 2


def summarize(curve: list[dict]) -> TrainStats:
    """Initial and final loss (means over a short window at each end), and health flags.

    >>> s = summarize([{"loss": x} for x in (4.0, 3.0, 2.0, 1.0, 1.0)])
    >>> s.initial_loss, s.final_loss, s.loss_decreased, s.nan_loss
    (4.0, 1.0, True, False)
    >>> summarize([]).HasField("final_loss")
    False
    """
    losses = [p["loss"] for p in curve]
    if not losses:
        return TrainStats()
    k = max(1, min(5, len(losses) // 5))
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return TrainStats(
        initial_loss=first,
        final_loss=last,
        loss_decreased=last < first,
        nan_loss=not all(math.isfinite(x) for x in losses),
    )


def run_job(store: ArtifactStore, env: Envelope, opts: JobOptions, on_step: OnStep) -> tuple[dict, dict]:
    """Train for command ``env``; return ``(files, meta)`` for ``run_once``."""
    import torch

    started = time.perf_counter()
    cmd = env.train_command
    method = METHODS.get(cmd.method)
    if method is None:
        raise StageInputError(f"unknown train method {cmd.method}")
    hp = parse_hparams(cmd.hparams_json)
    file = data.PAIRS_FILE if method == "dpo" else data.SFT_FILE
    rows = data.read_rows(store, cmd.datasets, file)
    prefix = prefix_for(env)
    work = opts.work_dir / prefix.strip("/").replace("/", "_")
    work.mkdir(parents=True, exist_ok=True)
    base, base_sha = models.resolve_policy_base(cmd.policy, opts.cache_dir)
    adapter = models.fetch_adapter(store, cmd.policy, base_sha, work / "policy-adapter")
    model, tokenizer = models.trainable_model(base, adapter, hp, cmd.seed, full=method == "full_sft")
    sync = CheckpointSync(store, prefix, opts.keep_checkpoints)
    every = hp.checkpoint_every or opts.checkpoint_every
    user_on_step = on_step

    def on_step(point: dict) -> None:
        user_on_step({**point, "method": method})

    bf16 = precision.wants_bf16(hp.frozen_dtype)
    with precision.frozen_in_bf16(model) if bf16 else nullcontext([]) as frozen_bf16:
        if method == "dpo":
            outcome, extra = _dpo(model, tokenizer, rows, hp, cmd.seed, work, sync, every, on_step)
        else:
            outcome, extra = _sft(model, tokenizer, rows, hp, cmd.seed, work, sync, every, on_step, method)
    out = work / "output"
    model.save_pretrained(out, **({} if method == "full_sft" else {"selected_adapters": ["default"]}))
    if method == "full_sft":
        tokenizer.save_pretrained(out)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stats = summarize(outcome.curve)
    stats.MergeFrom(
        TrainStats(
            steps=outcome.steps,
            steps_run=outcome.steps_run,
            resumed_from_step=outcome.resumed_from,
            examples=outcome.examples,
            dataset_rows=len(rows),
            tokens=round(sum(p.get("tokens", 0) for p in outcome.curve)),  # DPO logs a mean per step
            tokens_per_second=outcome.tokens_run / outcome.seconds if outcome.seconds else 0.0,
            train_seconds=outcome.seconds,
            duration_seconds=time.perf_counter() - started,
            trainable_parameters=trainable,
            frozen_bf16_layers=len(frozen_bf16),
            **{k: v for k, v in extra.items() if v is not None},
        )
    )
    config = {
        "method": method,
        "base": cmd.policy.base or models.DEFAULT_BASE,
        "base_sha256": base_sha,
        "parent_adapter": {"uri": cmd.policy.adapter.uri, "sha256": cmd.policy.adapter.sha256}
        if adapter
        else None,
        "seed": cmd.seed,
        "hparams": hp.model_dump(),
        "torch_threads": torch.get_num_threads(),
    }
    files = {
        **{str(p.relative_to(out)): p for p in sorted(out.rglob("*")) if p.is_file()},
        models.TRAINING_CONFIG: json.dumps(config, indent=1).encode(),
        "loss_curve.json": json.dumps(outcome.curve).encode(),
        "data_refs.json": json.dumps(data.data_refs(cmd.datasets, file, len(rows)), indent=1).encode(),
    }
    meta = {"method": method, "base": config["base"], "base_sha256": base_sha, "stats": stats_dict(stats)}
    return files, meta


def _sft(model, tokenizer, rows, hp, seed, work, sync, every, on_step, method) -> tuple[Outcome, dict]:
    from selfimprove.trainer.losses import mean_loss
    from selfimprove.trainer.sft import train_sft

    ends = stop_token_ids(model, tokenizer)
    encoded = [encode(tokenizer, r["prompt"], r["response"], hp.max_length, ends) for r in rows]
    train_idx, held_idx = split_heldout(len(encoded), hp.heldout_fraction, hp.heldout_max, seed)
    train, held = [encoded[i] for i in train_idx], [encoded[i] for i in held_idx]
    pad = tokenizer.pad_token_id
    lr = hp.full_lr if method == "full_sft" else hp.lr
    outcome = train_sft(
        model,
        train,
        hp,
        seed=seed,
        lr=lr,
        pad_id=pad,
        work=work,
        sync=sync,
        checkpoint_every=every,
        on_step=on_step,
        before=lambda: {"heldout_loss_before": mean_loss(model, held, pad)},
    )
    extra = dict(outcome.extra, heldout_loss_after=mean_loss(model, held, pad), heldout_examples=len(held))
    return outcome, extra


def _dpo(model, tokenizer, rows, hp, seed, work, sync, every, on_step) -> tuple[Outcome, dict]:
    from selfimprove.trainer.dpo import train_dpo
    from selfimprove.trainer.losses import preference_margin

    train_idx, held_idx = split_heldout(len(rows), hp.heldout_fraction, hp.heldout_max, seed)
    held = [rows[i] for i in held_idx]
    ends = stop_token_ids(model, tokenizer)
    chosen = [encode(tokenizer, r["prompt"], r["chosen"], hp.max_length, ends) for r in held]
    rejected = [encode(tokenizer, r["prompt"], r["rejected"], hp.max_length, ends) for r in held]
    pad = tokenizer.pad_token_id
    before = preference_margin(model, chosen, rejected, pad) if held else None
    train = [rows[i] for i in train_idx]
    tokens = (
        sum(
            len(encode(tokenizer, r["prompt"], r[k], hp.max_length, ends).ids)
            for r in train
            for k in ("chosen", "rejected")
        )
        * hp.epochs
    )
    outcome = train_dpo(
        model,
        tokenizer,
        train,
        hp,
        seed=seed,
        work=work,
        sync=sync,
        checkpoint_every=every,
        total_tokens=tokens,
        on_step=on_step,
    )
    after = preference_margin(model, chosen, rejected, pad) if held else None
    return outcome, {
        "heldout_margin_before": before,
        "heldout_margin_after": after,
        "heldout_pairs": len(held),
    }
