"""The controller service: consumes every stage result topic and the control topic, serves the
control plane, and runs the timer that re-commands late stages. No model, no torch."""

from __future__ import annotations

import asyncio
import logging

from selfimprove.core.grpcserve import TokenBucket, read_client_ca, read_tls
from selfimprove.core.guard import make_guard, refusal_counter
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
    env = "SELFIMPROVE_EVALUATOR_"
    tls = read_tls(settings.tls_cert_file, settings.tls_key_file, env)
    client_ca = read_client_ca(settings.tls_client_ca_file, env)
    guard = make_guard(  # read before anything starts: a bad token file fails fast
        "control_plane",
        settings.auth_tokens_file,
        settings.tls_client_ca_file,
        refusal_counter(ctx.metrics),
        env,
    )
    topics = ctx.bus.topics
    controller = Controller(
        ctx.bus,
        ctx.store,
        LoopMetrics(ctx.metrics),
        await asyncio.to_thread(environment),
        CrashHooks(settings.crash_at),
    )
    await controller.load()
    refused = ctx.metrics.counter(
        "control_plane_rate_limited_total", "Control-plane calls refused by the rate limit", ["method"]
    )
    served = await start_server(
        controller,
        settings.grpc_host,
        settings.grpc_port,
        max_request_bytes=settings.max_request_bytes,
        tls=tls,
        rate_limit=TokenBucket(settings.rate_per_s, settings.burst),
        on_rate_limited=lambda method: refused.labels(method.rsplit("/", 1)[-1]).inc(),
        client_ca=client_ca,
        guard=guard,
    )
    port = served.port
    ctx.metrics.details["grpc_port"] = port
    ctx.metrics.details["grpc_tls"] = tls is not None
    ctx.metrics.details["grpc_auth"] = guard is not None
    log.info(
        "control plane on %s:%d (%s, %s)",
        settings.grpc_host,
        port,
        "mutual TLS" if client_ca else "TLS" if tls else "plaintext",
        "credentials required" if guard else "no credentials required",
    )
    print(f"evaluator control plane listening on port {port}", flush=True)
    consumer = ctx.consumer(
        [topics.result(s) for s in STAGES] + [topics.control], controller.handle, max_handler_seconds=120
    )

    async def serve_grpc(stop: asyncio.Event) -> None:
        await stop.wait()
        await served.stop(grace=2)

    async def timer(stop: asyncio.Event) -> None:
        await controller.tick_loop(stop, settings.tick_s, settings.startup_grace_s)

    return [consumer.run, serve_grpc, timer]
