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
from selfimprove.core.runner import Context, Runnable
from selfimprove.core.settings import load
from selfimprove.core.stage import StageInputError
from selfimprove.trainer.job import JobOptions, run_job
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
    m = ctx.metrics
    step_g = m.gauge("training_step", "Optimizer step of the run in progress")
    loss_g = m.gauge("training_loss", "Training loss at the last step")
    tps_g = m.gauge("training_tokens_per_second", "Training tokens per second at the last step")
    examples_c = m.counter("training_examples_total", "Training examples seen", ["method"])
    steps_c = m.counter("training_steps_total", "Optimizer steps run by this process", ["method"])
    runs_c = m.counter("training_runs_total", "Train commands finished", ["outcome"])

    def on_step(point: dict) -> None:
        step_g.set(point["step"])
        loss_g.set(point["loss"])
        if point.get("seconds"):
            tps_g.set(point["tokens"] / point["seconds"])
        examples_c.labels(point["method"]).inc(point.get("batch_examples", 0))
        steps_c.labels(point["method"]).inc()

    async def handle(env: Envelope):
        if env.WhichOneof("payload") != "train_command":
            raise ValueError(f"trainer takes train_command, got {env.WhichOneof('payload')}")
        topics = ctx.bus.topics
        start = time.perf_counter()
        try:
            ref, meta = await stage.run_once(ctx.store, env, lambda: run_job(ctx.store, env, opts, on_step))
        except StageInputError as exc:
            log.warning("refused train command %s: %s", env.event_id, exc)
            runs_c.labels("refused").inc()
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
        runs_c.labels("done").inc()
        result = TrainResult(candidate=candidate, stats=stats, loss_curve=curve)
        return [stage.result(topics, env, PRODUCER, train_result=result)]

    consumer = ctx.consumer(
        [ctx.bus.topics.command(Stage.STAGE_TRAIN)], handle, max_handler_seconds=settings.max_handler_seconds
    )
    return [consumer.run]
