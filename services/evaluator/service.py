"""The controller service: consumes every stage result topic and the control topic, serves the
control plane, and runs the timer that re-commands late stages. No model, no torch."""

from __future__ import annotations

import asyncio
import logging

from selfimprove.core.runner import Context, Runnable
from selfimprove.core.settings import load
from selfimprove.core.topics import STAGES
from selfimprove.evaluator.control_plane import start_server
from selfimprove.evaluator.controller import Controller
from selfimprove.evaluator.crash import CrashHooks
from selfimprove.evaluator.lineage import environment
from selfimprove.evaluator.loopmetrics import LoopMetrics
from selfimprove.evaluator.settings import EvaluatorSettings

log = logging.getLogger(__name__)


async def setup(ctx: Context) -> list[Runnable]:
    settings = load(EvaluatorSettings)
    topics = ctx.bus.topics
    controller = Controller(
        ctx.bus,
        ctx.store,
        LoopMetrics(ctx.metrics),
        await asyncio.to_thread(environment),
        CrashHooks(settings.crash_at),
    )
    await controller.load()
    server, port = await start_server(controller, settings.grpc_host, settings.grpc_port)
    ctx.metrics.details["grpc_port"] = port
    log.info("control plane on %s:%d", settings.grpc_host, port)
    print(f"evaluator control plane listening on port {port}", flush=True)
    consumer = ctx.consumer(
        [topics.result(s) for s in STAGES] + [topics.control], controller.handle, max_handler_seconds=120
    )

    async def serve_grpc(stop: asyncio.Event) -> None:
        await stop.wait()
        await server.stop(grace=2)

    async def timer(stop: asyncio.Event) -> None:
        await controller.tick_loop(stop, settings.tick_s, settings.startup_grace_s)

    return [consumer.run, serve_grpc, timer]
