"""The credential check of the OpenAI-compatible HTTP API: an ASGI middleware over ``core.guard``.

Every route but ``/health`` needs the ``read`` role (``core.auth.PERMISSIONS``): no or an invalid
``Authorization: Bearer <token>`` is a 401 with ``WWW-Authenticate: Bearer``, a credential without the
permission a 403, both in OpenAI's error shape. With mutual TLS, uvicorn's connection protocol is
:func:`peer_cert_protocol`, which puts the verified client certificate's OUs in the request's state.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from selfimprove.core import auth
from selfimprove.core.guard import Guard
from selfimprove.refinement.openai_api import ApiError

PEER_UNITS = "selfimprove_peer_units"  # the request state key of the client certificate's OUs


class AuthMiddleware:
    """Refuses an HTTP request without the credential its path needs; lets the rest through."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        units = scope.get("state", {}).get(PEER_UNITS, []) if self.guard.client_certs else None
        refusal = self.guard.check(scope["path"], Headers(scope=scope).get("authorization"), units)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if refusal.status == "unauthenticated":
            code = "invalid_api_key" if refusal.reason == "invalid" else "missing_api_key"
            error = ApiError(401, refusal.message, None, code, "authentication_error")
            headers = {"www-authenticate": "Bearer"}
        else:
            error = ApiError(403, refusal.message, None, "permission_denied", "permission_error")
            headers = {}
        await JSONResponse(error.body(), status_code=error.status, headers=headers)(scope, receive, send)


def peer_cert_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol, recording each connection's verified client certificate OUs in the
    state every request of that connection gets (``scope["state"][PEER_UNITS]``)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class PeerCertProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        app_state: dict[str, Any]

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            units = auth.units_of_peercert(transport.get_extra_info("peercert"))
            self.app_state = {**self.app_state, PEER_UNITS: units}  # this connection's own copy

    return PeerCertProtocol
