"""Starts the gRPC server for the service runner and stops it gracefully when the process stops."""

from __future__ import annotations

import asyncio
import logging

from selfimprove.core.runner import Context, Runnable
from selfimprove.refinement.limits import Limits, TokenBucket
from selfimprove.refinement.metrics import RefinementMetrics
from selfimprove.refinement.served import ServedModel
from selfimprove.refinement.server import RefinementServicer, start_server
from selfimprove.refinement.settings import RefinementSettings
from selfimprove.runtime import strategies

log = logging.getLogger(__name__)


def read_tls(s: RefinementSettings) -> tuple[bytes, bytes] | None:
    """``(key, cert)`` PEM bytes when TLS is configured."""
    if s.tls_cert_file is None or s.tls_key_file is None:
        return None
    return s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes()


async def grpc_runnable(
    ctx: Context, s: RefinementSettings, model: ServedModel, metrics: RefinementMetrics
) -> Runnable:
    """Start the server now (so the port is known before ready) and return what waits for stop."""
    limits = Limits(s.max_prompt_chars, s.max_prompt_tokens, s.max_new_tokens, s.max_n)
    sampling = strategies.Settings(s.temperature, s.top_p, s.default_max_new_tokens, None)
    servicer = RefinementServicer(
        model, limits, TokenBucket(s.rate_per_second, s.rate_burst), sampling, metrics
    )
    tls = read_tls(s)
    server, port, checker = await start_server(servicer, s.grpc_host, s.grpc_port, s.max_request_bytes, tls)
    ctx.metrics.details["grpc_port"] = port
    ctx.metrics.details["grpc_tls"] = tls is not None
    log.info("gRPC on %s:%d (%s)", s.grpc_host, port, "TLS" if tls else "plaintext")

    async def run(stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await checker.enter_graceful_shutdown()
            await server.stop(grace=5)

    return run
