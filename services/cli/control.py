"""The CLI's connection to the evaluator's control plane.

The address is ``--address``, else ``SELFIMPROVE_EVALUATOR_ADDRESS``, else the control plane of the
local loop running from the stack folder (``.stack/addresses.json``, see ``core.addresses``; the
store settings it records apply too), else ``127.0.0.1:50052``. The serving endpoint is found the
same way (``--address``, ``SELFIMPROVE_REFINEMENT_ADDRESS``, the local loop, ``127.0.0.1:50051``). When
``SELFIMPROVE_EVALUATOR_TLS_CA`` names a PEM file (the CA, or the server's own self-signed
certificate) the channel uses TLS and checks the server's certificate against it;
``SELFIMPROVE_EVALUATOR_TLS_CLIENT_CERT`` and ``..._TLS_CLIENT_KEY`` add a client certificate (mutual
TLS). When ``selfimprove --token-file PATH`` or ``SELFIMPROVE_TOKEN_FILE`` names a file holding a
bearer token, every call (control plane and serving) sends ``authorization: Bearer <token>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

T = TypeVar("T")
# The ``--address`` option of every command that talks to the control plane.
Address = Annotated[
    str | None, typer.Option(help="Control plane host:port (env SELFIMPROVE_EVALUATOR_ADDRESS).")
]

DEFAULT_ADDRESS = "127.0.0.1:50052"
ADDRESS_ENV = "SELFIMPROVE_EVALUATOR_ADDRESS"
DEFAULT_SERVING_ADDRESS = "127.0.0.1:50051"
SERVING_ADDRESS_ENV = "SELFIMPROVE_REFINEMENT_ADDRESS"
TLS_CA_ENV = "SELFIMPROVE_EVALUATOR_TLS_CA"
TLS_CLIENT_ENV = ("SELFIMPROVE_EVALUATOR_TLS_CLIENT_CERT", "SELFIMPROVE_EVALUATOR_TLS_CLIENT_KEY")
TOKEN_FILE_ENV = "SELFIMPROVE_TOKEN_FILE"


def control_target(address: str | None = None) -> str:
    """``host:port`` of the control plane.

    >>> control_target("evaluator:50052")
    'evaluator:50052'
    """
    if address or os.environ.get(ADDRESS_ENV):
        return address or os.environ[ADDRESS_ENV]
    local = local_loop()
    return local.evaluator if local is not None else DEFAULT_ADDRESS


def serving_target(address: str | None = None) -> str:
    """``host:port`` of the refinement service's gRPC endpoint."""
    if address or os.environ.get(SERVING_ADDRESS_ENV):
        return address or os.environ[SERVING_ADDRESS_ENV]
    local = local_loop()
    if local is not None and local.refinement:
        return local.refinement
    return DEFAULT_SERVING_ADDRESS


def local_loop() -> Any:
    """The local loop running from the stack folder (``core.addresses.discover``), or None; its
    store and broker settings become this process's defaults (a run's adapter is fetched from that
    stack). A stale addresses file ends the command with an error that says so."""
    from selfimprove.core.addresses import StaleAddressesError, discover

    try:
        found = discover()
    except (StaleAddressesError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--address") from None
    if found is not None:
        for key, value in found.env.items():
            os.environ.setdefault(key, value)
    return found


def tls_ca() -> bytes | None:
    """The PEM bytes ``SELFIMPROVE_EVALUATOR_TLS_CA`` names, or None (plaintext) when it is unset."""
    path = os.environ.get(TLS_CA_ENV, "").strip()
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=TLS_CA_ENV) from None


def read_pem(path: str | Path, hint: str) -> bytes:
    """A PEM file's bytes; an unreadable one ends the command naming ``hint`` (a flag or variable)."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=hint) from None


def client_cert() -> tuple[bytes, bytes] | None:
    """``(cert, key)`` PEM bytes of the client certificate the TLS client variables name, or None."""
    cert, key = (os.environ.get(name, "").strip() for name in TLS_CLIENT_ENV)
    if not cert and not key:
        return None
    if not (cert and key):
        raise typer.BadParameter("set both or neither", param_hint=" and ".join(TLS_CLIENT_ENV))
    return read_pem(cert, TLS_CLIENT_ENV[0]), read_pem(key, TLS_CLIENT_ENV[1])


def bearer_token() -> str | None:
    """The token of the file ``SELFIMPROVE_TOKEN_FILE`` (or ``--token-file``) names, or None."""
    path = os.environ.get(TOKEN_FILE_ENV, "").strip()
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--token-file") from None
    if not token or len(token.split()) != 1:
        raise typer.BadParameter(f"{path} must hold just the token", param_hint="--token-file")
    return token


def channel(target: str, ca: bytes | None, client: tuple[bytes, bytes] | None = None) -> Any:
    """A blocking gRPC channel to ``target``: TLS checked against the ``ca`` PEM (with the
    ``(cert, key)`` client certificate when given), or plaintext; it sends the bearer token, if any."""
    import grpc

    if ca is None:
        if client is not None:
            raise typer.BadParameter("a client certificate needs TLS: give the CA too", param_hint=TLS_CA_ENV)
        opened = grpc.insecure_channel(target)
    else:
        cert, key = client or (None, None)
        creds = grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=cert)
        opened = grpc.secure_channel(target, creds)
    token = bearer_token()
    return opened if token is None else grpc.intercept_channel(opened, _bearer(token))


def _bearer(token: str) -> Any:
    """A client interceptor adding ``authorization: Bearer <token>`` to every unary and streaming call."""
    import collections

    import grpc

    fields = ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")

    class Details(collections.namedtuple("Details", fields), grpc.ClientCallDetails):  # type: ignore[misc]
        pass

    class Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def _with(self, details: Any) -> Any:
            metadata = [*(details.metadata or ()), ("authorization", f"Bearer {token}")]
            return Details(  # type: ignore[call-arg]
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
                details.compression,
            )

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(self._with(details), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(self._with(details), request)

    return Bearer()


def control_stub(address: str | None = None) -> tuple[Any, str]:
    """A blocking ``ControlPlaneServiceStub`` and the target it talks to."""
    from selfimprove.v2 import control_pb2_grpc

    target = control_target(address)
    return control_pb2_grpc.ControlPlaneServiceStub(channel(target, tls_ca(), client_cert())), target


def call(what: str, rpc: Callable[[], T]) -> T:
    """``rpc()``; a gRPC error ends the command (exit 1) with ``what`` and the status."""
    import grpc

    try:
        return rpc()
    except grpc.RpcError as exc:
        typer.echo(f"{what}: {exc.code().name}: {exc.details()}", err=True)
        raise typer.Exit(1) from None
