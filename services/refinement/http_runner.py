"""Starts the OpenAI-compatible HTTP API (uvicorn) inside the service's event loop and stops it with
the process.

The socket is bound here, before the service declares itself ready, so the port (``http_port`` in
``/health``; 0 picks a free one) is known at once and a taken port fails the start with a message.
uvicorn's own signal handlers stay off: the service runner owns SIGTERM and stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from selfimprove.core.grpcserve import TokenBucket
from selfimprove.core.guard import Guard
from selfimprove.core.runner import Context, Runnable
from selfimprove.refinement.http_api import HttpApi, make_app
from selfimprove.refinement.http_auth import peer_cert_protocol
from selfimprove.refinement.limits import Limits
from selfimprove.refinement.metrics import RefinementMetrics
from selfimprove.refinement.served import ServedModel
from selfimprove.refinement.settings import RefinementSettings
from selfimprove.runtime import strategies

log = logging.getLogger(__name__)
GRACE_S = 5


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port``; ``OSError`` naming the address when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind the HTTP API to {host}:{port}: {exc.strerror}") from None
    return sock


async def http_runnable(
    ctx: Context,
    s: RefinementSettings,
    model: ServedModel,
    metrics: RefinementMetrics | None,
    bucket: TokenBucket | None,
    guard: Guard | None = None,
) -> Runnable:
    """Start serving now (the port is known before ready) and return what stops it on ``stop``."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    limits = Limits(s.max_prompt_chars, s.max_prompt_tokens, s.max_new_tokens, s.max_n)
    sampling = strategies.Settings(s.temperature, s.top_p, s.default_max_new_tokens, None)
    api = HttpApi(
        model, limits, sampling, s.max_request_bytes, lambda: ctx.metrics.ready, bucket, metrics, guard
    )
    tls = s.tls_cert_file is not None and s.tls_key_file is not None
    mutual = tls and s.tls_client_ca_file is not None
    # Mutual TLS: the handshake refuses a client without a certificate the CA signed; the protocol
    # hands the verified certificate's OUs (its role) to the credential check.
    peer: dict[str, Any] = (
        {
            "ssl_ca_certs": str(s.tls_client_ca_file),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "http": peer_cert_protocol(),
        }
        if mutual
        else {}
    )
    config = uvicorn.Config(
        make_app(api),
        host=s.http_host,
        port=s.http_port,
        ssl_certfile=s.tls_cert_file if tls else None,
        ssl_keyfile=s.tls_key_file if tls else None,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACE_S,
        **peer,
    )
    config.load()  # a bad certificate fails the start, not the first request
    sock = bind(s.http_host, s.http_port)
    port = sock.getsockname()[1]
    server = Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="refinement-http")
    ctx.metrics.details["http_port"] = port
    ctx.metrics.details["http_tls"] = tls
    mode = "mutual TLS" if mutual else "TLS" if tls else "plaintext"
    log.info(
        "OpenAI-compatible HTTP API on %s:%d (%s, %s)",
        s.http_host,
        port,
        mode,
        "credentials required" if guard else "open",
    )

    async def run(stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                serving.result()  # a crash of the server crashes the service
                raise RuntimeError("the HTTP server stopped on its own")
        finally:
            stopping.cancel()
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await serving

    return run
