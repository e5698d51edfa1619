"""The gRPC server core both servers share (refinement, the evaluator's control plane).

``serve`` starts a ``grpc.aio`` server with the given servicers and the standard health service
(each named service ``SERVING``), a request size cap (``grpc.max_receive_message_length``: a larger
request is refused with ``RESOURCE_EXHAUSTED`` before any handler runs), optional TLS (with client
certificates required when a client CA is given), an optional credential check by
:class:`AuthInterceptor` (``core.guard``: ``UNAUTHENTICATED`` / ``PERMISSION_DENIED``) and an optional
:class:`TokenBucket` rate limit applied by :class:`RateLimitInterceptor`. Health is never checked or
limited; the credential check comes first, so refused callers take nothing from the rate limit.

>>> bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
>>> [bucket.take(now=0.0) for _ in range(3)], bucket.take(now=1.0)
([True, True, False], True)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from selfimprove.core import auth
from selfimprove.core.guard import Guard
from selfimprove.core.settings import SettingsError

HEALTH_PREFIX = "/grpc.health.v1.Health/"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# (add_XServicer_to_server, servicer) as grpc's generated modules define them.
Registration = tuple[Callable[[Any, grpc.aio.Server], None], object]


class TokenBucket:
    """Admits ``rate`` requests per second on average and ``burst`` at once; thread-safe."""

    def __init__(self, rate: float, burst: int, now: float | None = None) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic() if now is None else now
        self._lock = threading.Lock()

    def take(self, now: float | None = None) -> bool:
        with self._lock:
            now = time.monotonic() if now is None else now
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call with ``RESOURCE_EXHAUSTED`` ("rate limit: ...") when the bucket is empty.

    Methods whose full name starts with one of ``exempt`` (the health service by default) are
    neither limited nor counted. ``on_refused(method)`` is called for each refusal (metrics).
    """

    def __init__(
        self,
        bucket: TokenBucket,
        exempt: Sequence[str] = (HEALTH_PREFIX,),
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.bucket = bucket
        self.exempt = tuple(exempt)
        self.on_refused = on_refused

    async def intercept_service(self, continuation, handler_call_details):
        return self.limit(handler_call_details.method, await continuation(handler_call_details))

    def limit(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        """``handler`` when the bucket admits the call (or it is exempt), else a refusal."""
        if handler is None or method.startswith(self.exempt) or self.bucket.take():
            return handler
        if self.on_refused is not None:
            self.on_refused(method)
        return _refusal(handler)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call without the credential its method needs (``core.auth.PERMISSIONS``): no or an
    invalid bearer token ``UNAUTHENTICATED``, a credential without the permission ``PERMISSION_DENIED``.

    The token comes from the ``authorization: Bearer <token>`` metadata. With client certificates the
    check runs inside the call, where the verified certificate's subject is known. ``limiter`` (the
    rate limit) applies after the token check, so a refused caller takes nothing from the bucket.
    """

    def __init__(self, guard: Guard, limiter: RateLimitInterceptor | None = None) -> None:
        self.guard, self.limiter = guard, limiter

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or auth.needed(method) is None:
            return handler if self.limiter is None else self.limiter.limit(method, handler)
        header = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode(errors="replace")
        if not self.guard.client_certs:
            refusal = self.guard.check(method, header, None)
            if refusal is not None:
                return _refusal(handler, *_status(refusal))
        else:
            handler = _checked(
                handler, lambda context: self.guard.check(method, header, _cert_units(context))
            )
        return handler if self.limiter is None else self.limiter.limit(method, handler)


def _status(refusal: auth.Refusal) -> tuple[grpc.StatusCode, str]:
    if refusal.status == "unauthenticated":
        return grpc.StatusCode.UNAUTHENTICATED, refusal.message
    return grpc.StatusCode.PERMISSION_DENIED, refusal.message


def _cert_units(context) -> list[str]:
    """The OUs of the call's verified client certificate (gRPC's ``x509_subject``)."""
    subjects = context.auth_context().get("x509_subject") or [b""]
    return auth.units_of_subject(subjects[0].decode(errors="replace"))


def _checked(
    handler: grpc.RpcMethodHandler, check: Callable[[Any], auth.Refusal | None]
) -> grpc.RpcMethodHandler:
    """``handler`` with ``check(context)`` run before it (the request methods have no streamed input)."""
    if handler.request_streaming:
        raise ValueError("client-certificate roles do not cover request-streaming methods")
    deserialize, serialize = handler.request_deserializer, handler.response_serializer

    async def refuse_or_go(context) -> None:
        refusal = check(context)
        if refusal is not None:
            await context.abort(*_status(refusal))

    if handler.response_streaming:
        inner = handler.unary_stream

        async def stream(request, context):
            await refuse_or_go(context)
            async for item in inner(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(stream, deserialize, serialize)
    unary = handler.unary_unary

    async def call(request, context):
        await refuse_or_go(context)
        return await unary(request, context)

    return grpc.unary_unary_rpc_method_handler(call, deserialize, serialize)


def _refusal(
    handler: grpc.RpcMethodHandler,
    code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED,
    message: str = "rate limit: too many requests, retry later",
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that aborts without reading the request."""

    async def refuse(request_or_iterator, context) -> None:
        await context.abort(code, message)

    serialize = handler.response_serializer
    # No request deserializer: the refused request is never decoded.
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, None, serialize)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, None, serialize)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, None, serialize)
    return grpc.unary_unary_rpc_method_handler(refuse, None, serialize)


def read_tls(
    cert_file: Path | None, key_file: Path | None, env_prefix: str = ""
) -> tuple[bytes, bytes] | None:
    """``(key, cert)`` PEM bytes when both files are set, else None; an unreadable file is a
    ``SettingsError`` naming ``<env_prefix>TLS_CERT_FILE`` or ``..._TLS_KEY_FILE``."""
    if cert_file is None or key_file is None:
        return None
    out = []
    for name, path in (("TLS_KEY_FILE", key_file), ("TLS_CERT_FILE", cert_file)):
        try:
            out.append(Path(path).read_bytes())
        except OSError as exc:
            raise SettingsError(f"{env_prefix}{name}: cannot read {path}: {exc.strerror}") from None
    return out[0], out[1]


def read_client_ca(ca_file: Path | None, env_prefix: str = "") -> bytes | None:
    """The client CA's PEM bytes when set; an unreadable file names ``<env_prefix>TLS_CLIENT_CA_FILE``."""
    if ca_file is None:
        return None
    try:
        return Path(ca_file).read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"{env_prefix}TLS_CLIENT_CA_FILE: cannot read {ca_file}: {exc.strerror}"
        ) from None


def check_tls_pair(cert_file: Path | None, key_file: Path | None, client_ca_file: Path | None = None) -> None:
    """Settings validators: TLS needs both files or neither; client certificates need TLS."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("set both tls_cert_file and tls_key_file, or neither")
    if client_ca_file is not None and cert_file is None:
        raise ValueError("tls_client_ca_file needs TLS: set tls_cert_file and tls_key_file too")


def empty_is_none(value: object) -> object:
    """Settings validators (mode="before"): an empty path setting is unset (compose's ``${VAR:-}``)."""
    return None if isinstance(value, str) and not value.strip() else value


@dataclass
class RunningServer:
    """A started server: the server, its bound port and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def stop(self, grace: float) -> None:
        """Health answers NOT_SERVING, in-flight calls get ``grace`` seconds, then the server stops."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace=grace)


async def serve(
    registrations: Sequence[Registration],
    host: str,
    port: int,
    *,
    health_names: Sequence[str] = (),
    max_request_bytes: int,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    tls: tuple[bytes, bytes] | None = None,
    rate_limit: TokenBucket | None = None,
    on_rate_limited: Callable[[str], None] | None = None,
    client_ca: bytes | None = None,
    guard: Guard | None = None,
) -> RunningServer:
    """Start a ``grpc.aio`` server on ``host:port`` (0 picks a free port) with ``registrations``
    and the health service; ``""`` and each of ``health_names`` answer ``SERVING``.

    ``tls`` is a ``(key, cert)`` PEM pair; ``client_ca`` (with ``tls``) requires client certificates
    it signed; ``guard`` checks every call but health; ``rate_limit`` a bucket every call but health
    takes from. Raises ``OSError`` when the address cannot be bound.
    """
    if client_ca is not None and tls is None:
        raise ValueError("client certificates need TLS: give tls with client_ca")
    limiter = None if rate_limit is None else RateLimitInterceptor(rate_limit, on_refused=on_rate_limited)
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if guard is not None:
        interceptors.append(AuthInterceptor(guard, limiter))
    elif limiter is not None:
        interceptors.append(limiter)
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", max_response_bytes),
            ("grpc.so_reuseport", 0),  # a second server on a taken port fails instead of sharing it
        ],
    )
    for add, servicer in registrations:
        add(servicer, server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    address = f"{host}:{port}"
    try:
        if tls is not None:
            creds = grpc.ssl_server_credentials(
                [tls], root_certificates=client_ca, require_client_auth=client_ca is not None
            )
            bound = server.add_secure_port(address, creds)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises instead of returning 0 in recent versions
        raise OSError(f"cannot bind a gRPC server to {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot bind a gRPC server to {address}")
    await server.start()
    for name in ("", *health_names):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, bound, checker)
