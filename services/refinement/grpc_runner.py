"""Starts the gRPC server for the service runner and stops it gracefully when the process stops."""

from __future__ import annotations

import asyncio
import logging

from selfimprove.core import grpcserve
from selfimprove.core.guard import Guard
from selfimprove.core.runner import Context, Runnable
from selfimprove.core.settings import PREFIX
from selfimprove.refinement.limits import Limits
from selfimprove.refinement.metrics import RefinementMetrics
from selfimprove.refinement.served import ServedModel
from selfimprove.refinement.server import RefinementServicer, start_server
from selfimprove.refinement.settings import RefinementSettings
from selfimprove.runtime import strategies

log = logging.getLogger(__name__)


def read_tls(s: RefinementSettings) -> tuple[bytes, bytes] | None:
    """``(key, cert)`` PEM bytes when TLS is configured."""
    return grpcserve.read_tls(s.tls_cert_file, s.tls_key_file, PREFIX + "REFINEMENT_")


async def grpc_runnable(
    ctx: Context,
    s: RefinementSettings,
    model: ServedModel,
    metrics: RefinementMetrics,
    bucket: grpcserve.TokenBucket | None = None,
    guard: Guard | None = None,
) -> Runnable:
    """Start the server now (so the port is known before ready) and return what waits for stop;
    ``bucket`` is the rate limit it shares with the HTTP API (its own when None), ``guard`` the
    credential check (none: every call open)."""
    limits = Limits(s.max_prompt_chars, s.max_prompt_tokens, s.max_new_tokens, s.max_n)
    sampling = strategies.Settings(s.temperature, s.top_p, s.default_max_new_tokens, None)
    servicer = RefinementServicer(model, limits, sampling, metrics)
    tls = read_tls(s)

    def refused(method: str) -> None:  # the request is not decoded: its strategy is unknown
        metrics.request(method.rsplit("/", 1)[-1], "", "RESOURCE_EXHAUSTED", 0.0)

    served = await start_server(
        servicer,
        s.grpc_host,
        s.grpc_port,
        s.max_request_bytes,
        tls,
        rate_limit=bucket or grpcserve.TokenBucket(s.rate_per_second, s.rate_burst),
        on_rate_limited=refused,
        client_ca=grpcserve.read_client_ca(s.tls_client_ca_file, PREFIX + "REFINEMENT_"),
        guard=guard,
    )
    port = served.port
    ctx.metrics.details["grpc_port"] = port
    ctx.metrics.details["grpc_tls"] = tls is not None
    ctx.metrics.details["auth"] = guard is not None
    mode = "mutual TLS" if s.tls_client_ca_file else "TLS" if tls else "plaintext"
    log.info("gRPC on %s:%d (%s, %s)", s.grpc_host, port, mode, "credentials required" if guard else "open")

    async def run(stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await served.stop(grace=5)

    return run
