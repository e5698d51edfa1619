"""The trainer's bus adapter: ``train_command`` in, ``train_result`` (or ``stage_failure``) out.

The handler is idempotent per attempt (``run_once``): a redelivered command whose adapter is
already published re-announces it; one whose earlier delivery died mid-run resumes from the
attempt's newest checkpoint. Training runs in a worker thread so the consumer keeps heartbeating.
"""

from __future__ import annotations

import asyncio
import logging
import time

from selfimprove.core import stage
from selfimprove.core.progress import StageReporter
from selfimprove.core.runner import Context, Runnable
from selfimprove.core.settings import load
from selfimprove.core.stage import StageInputError
from selfimprove.trainer.job import JobOptions, run_job
from selfimprove.trainer.metrics import TrainerMetrics
from selfimprove.trainer.settings import TrainerSettings
from selfimprove.v2.common_pb2 import ArtifactRef, ModelRef, Stage
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import TrainResult, TrainStats

log = logging.getLogger(__name__)
PRODUCER = "trainer"


def file_ref(manifest_ref: ArtifactRef, entry) -> ArtifactRef:
    """The reference of one file of a folder artifact, from its manifest entry."""
    base = manifest_ref.uri.rsplit("/", 1)[0]
    return ArtifactRef(
        uri=f"{base}/{entry.path}", sha256=entry.sha256, bytes=entry.bytes, media_type=entry.media_type
    )


async def setup(ctx: Context) -> list[Runnable]:
    import torch

    torch.set_num_threads(ctx.settings.threads)
    settings = load(TrainerSettings)
    opts = JobOptions(
        work_dir=settings.work_dir,
        cache_dir=ctx.settings.cache_dir,
        checkpoint_every=settings.checkpoint_every,
        keep_checkpoints=settings.keep_checkpoints,
    )
    metrics = TrainerMetrics(ctx.metrics)

    async def handle(env: Envelope):
        if env.WhichOneof("payload") != "train_command":
            raise ValueError(f"trainer takes train_command, got {env.WhichOneof('payload')}")
        topics = ctx.bus.topics
        start = time.perf_counter()

        report = StageReporter(ctx.bus, env, PRODUCER, unit="steps")

        def on_step(point: dict) -> None:
            metrics.on_step(env.run_id, point)
            report.update(int(point["step"]), point.get("steps_total"))

        try:
            ref, meta = await stage.run_once(ctx.store, env, lambda: run_job(ctx.store, env, opts, on_step))
        except StageInputError as exc:
            log.warning("refused train command %s: %s", env.event_id, exc)
            metrics.finished(env.run_id, "refused")
            return [stage.failure(topics, env, PRODUCER, exc)]
        manifest = await asyncio.to_thread(ctx.store.manifest, ref)
        curve = file_ref(ref, manifest.entry("loss_curve.json"))
        cmd = env.train_command
        candidate = ModelRef(
            base=cmd.policy.base or meta["base"],
            base_sha256=meta["base_sha256"],
            adapter=ref,
            version=f"{env.run_id}/iter-{env.iteration:03d}",
        )
        stats = stage.parse_stats(meta["stats"], TrainStats(handler_seconds=time.perf_counter() - start))
        metrics.finished(env.run_id, "done")
        result = TrainResult(candidate=candidate, stats=stats, loss_curve=curve)
        return [stage.result(topics, env, PRODUCER, train_result=result)]

    consumer = ctx.consumer(
        [ctx.bus.topics.command(Stage.STAGE_TRAIN)], handle, max_handler_seconds=settings.max_handler_seconds
    )
    return [consumer.run]
