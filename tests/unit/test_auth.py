"""Authentication and authorization without a broker: the token file (every bad-line kind names the
file and line, never the token; re-read on change), the permission table (every gRPC method and HTTP
route listed), the decision, and the gRPC interceptor (bearer tokens and client-certificate roles) and
HTTP middleware in this process."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from selfimprove.core import auth, guard
from selfimprove.core.grpcserve import TokenBucket
from selfimprove.core.settings import SettingsError
from selfimprove.evaluator.control_plane import start_server
from selfimprove.refinement.http_api import HttpApi, make_app
from selfimprove.v2 import control_pb2, control_pb2_grpc, refinement_pb2
from tests.support.tlskit import ca_and_clients, self_signed

pytestmark = pytest.mark.unit

READER, ADMIN = "reader-token-0123456789abcdef", "admin-token-0123456789abcdef"
TOKENS = f"# who may call\nread {READER}\n\ncontrol {ADMIN}\n"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (f"admin {ADMIN}", "the first word is not a role"),
        (f"{ADMIN} control", "the first word is not a role"),
        ("read", "no token after the role"),
        (f"read {ADMIN} extra", "more than a role and a token"),
        ("read short-token", "shorter than 16 characters"),
        (f"read {ADMIN}\ncontrol {ADMIN}", "the same token as line 1"),
        ("# nothing\n\n", "no tokens"),
    ],
)
def test_bad_token_lines_name_the_file_and_line_never_the_token(text, words):
    with pytest.raises(SettingsError) as err:
        auth.parse_tokens(text, "/run/secrets/tokens")
    message = str(err.value)
    assert words in message and message.startswith("/run/secrets/tokens"), message
    assert ADMIN not in message and "short-token" not in message and "extra" not in message
    if "no tokens" not in words:
        assert ":1:" in message or ":2:" in message, message


def test_roles_and_permissions():
    tokens = auth.parse_tokens(TOKENS)
    assert tokens.role_of(READER) == "read" and tokens.role_of(ADMIN) == "control"
    assert tokens.role_of(READER[:-1]) is None and tokens.role_of("") is None
    grid = {
        (need, header): getattr(auth.authorize(need, header, tokens, None), "reason", "ok")
        for need in (auth.READ, auth.CONTROL)
        for header in (None, f"Bearer {READER}", f"Bearer {ADMIN}", "Bearer wrong", f"Basic {ADMIN}")
    }
    assert grid == {
        ("read", None): "missing",
        ("read", f"Bearer {READER}"): "ok",
        ("read", f"Bearer {ADMIN}"): "ok",
        ("read", "Bearer wrong"): "invalid",
        ("read", f"Basic {ADMIN}"): "invalid",
        ("control", None): "missing",
        ("control", f"Bearer {READER}"): "forbidden",
        ("control", f"Bearer {ADMIN}"): "ok",
        ("control", "Bearer wrong"): "invalid",
        ("control", f"Basic {ADMIN}"): "invalid",
    }
    # A certificate's role; a token sent beside it must still be valid.
    assert auth.authorize(auth.CONTROL, f"Bearer {ADMIN}", tokens, ["read"]) is None
    assert auth.authorize(auth.READ, "Bearer wrong", tokens, ["control"]).reason == "invalid"
    assert auth.authorize(auth.READ, None, None, []).status == "forbidden"


def test_every_method_and_route_is_in_the_permission_table():
    from selfimprove.v2 import control_pb2 as cp

    for module in (cp, refinement_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert f"/{service.full_name}/{method.name}" in auth.PERMISSIONS, method.full_name
    api = HttpApi(None, None, None, 1024, lambda: True)  # type: ignore[arg-type]
    paths = {route.path for route in make_app(api).routes}
    assert paths - {"/health"} <= set(auth.PERMISSIONS) and auth.needed("/health") is None
    assert auth.needed("/grpc.health.v1.Health/Watch") is None
    assert auth.PERMISSIONS["/selfimprove.v2.ControlPlaneService/StartRun"] == auth.CONTROL
    assert auth.PERMISSIONS["/selfimprove.v2.ControlPlaneService/StopRun"] == auth.CONTROL


def test_token_file_is_read_at_start_and_again_when_it_changes(tmp_path, caplog, monkeypatch):
    path = tmp_path / "tokens"
    path.write_text(f"read {ADMIN[:8]}")
    with pytest.raises(
        SettingsError, match=r"SELFIMPROVE_X_AUTH_TOKENS_FILE: .*tokens:1: the token is shorter"
    ):
        guard.TokenFile(path, "SELFIMPROVE_X_AUTH_TOKENS_FILE")
    with pytest.raises(SettingsError, match="cannot read"):
        guard.TokenFile(tmp_path / "missing")
    path.write_text(TOKENS)
    tokens = guard.TokenFile(path)
    monkeypatch.setattr(guard, "RECHECK_S", 0.0)
    assert tokens.current().role_of(ADMIN) == "control"
    path.write_text(f"read {ADMIN}\n")  # rotated: the admin token is now read-only, the reader gone
    os.utime(path, ns=(1, 1))
    assert tokens.current().role_of(ADMIN) == "read" and tokens.current().role_of(READER) is None
    path.write_text(f"boss {READER}\n")  # a bad rotation: the previous tokens stay
    os.utime(path, ns=(2, 2))
    with caplog.at_level("DEBUG"):
        assert tokens.current().role_of(ADMIN) == "read"
    assert "keeping the previous tokens" in caplog.text and READER not in caplog.text


def _guard(tmp_path, client_certs=False):
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    refused: list[tuple[str, str]] = []
    made = guard.make_guard(
        "control_plane",
        path,
        tmp_path / "ca.pem" if client_certs else None,
        lambda *key: refused.append(key),
    )
    return made, refused


async def test_grpc_tokens_unauthenticated_denied_or_allowed(tmp_path, caplog):
    checker, refused = _guard(tmp_path)
    served = await start_server(
        SimpleNamespace(runs={}), "127.0.0.1", 0, guard=checker, rate_limit=TokenBucket(0.001, 100)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = control_pb2_grpc.ControlPlaneServiceStub(channel)

            async def code(call, request, token=None):
                metadata = (("authorization", f"Bearer {token}"),) if token else None
                try:
                    await call(request, timeout=10, metadata=metadata)
                    return "OK"
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name

            stop = control_pb2.StopRunRequest(run_id="nope")
            with caplog.at_level("DEBUG"):
                got = [
                    await code(stub.ListRuns, control_pb2.ListRunsRequest()),
                    await code(stub.ListRuns, control_pb2.ListRunsRequest(), "not-a-token"),
                    await code(stub.ListRuns, control_pb2.ListRunsRequest(), READER),
                    await code(stub.StopRun, stop, READER),
                    await code(stub.StopRun, stop, ADMIN),  # authorized: the run is unknown
                ]
            assert got == ["UNAUTHENTICATED", "UNAUTHENTICATED", "OK", "PERMISSION_DENIED", "NOT_FOUND"]
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING  # health needs no token
        assert refused == [("control_plane", r) for r in ("missing", "invalid", "forbidden")]
        assert READER not in caplog.text and ADMIN not in caplog.text
    finally:
        await served.stop(grace=0)


async def test_grpc_client_certificate_roles(tmp_path):
    key, cert = self_signed(tmp_path)
    ca, clients = ca_and_clients(tmp_path)
    checker, refused = _guard(tmp_path, client_certs=True)
    served = await start_server(
        SimpleNamespace(runs={}),
        "127.0.0.1",
        0,
        tls=(key.read_bytes(), cert.read_bytes()),
        client_ca=ca.read_bytes(),
        guard=checker,
    )
    try:

        async def codes(unit: str | None, token: str | None = None) -> list[str]:
            client = clients[unit] if unit else (None, None)
            creds = grpc.ssl_channel_credentials(
                cert.read_bytes(),
                private_key=client[0].read_bytes() if unit else None,
                certificate_chain=client[1].read_bytes() if unit else None,
            )
            metadata = (("authorization", f"Bearer {token}"),) if token else None
            out = []
            async with grpc.aio.secure_channel(f"127.0.0.1:{served.port}", creds) as channel:
                stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
                for call, request in (
                    (stub.ListRuns, control_pb2.ListRunsRequest()),
                    (stub.StopRun, control_pb2.StopRunRequest(run_id="nope")),
                ):
                    try:
                        await call(request, timeout=10, metadata=metadata)
                        out.append("OK")
                    except grpc.aio.AioRpcError as exc:
                        out.append(exc.code().name)
            return out

        assert await codes("read") == ["OK", "PERMISSION_DENIED"]
        assert await codes("control") == ["OK", "NOT_FOUND"]
        assert await codes("none") == ["PERMISSION_DENIED", "PERMISSION_DENIED"]
        assert await codes("none", ADMIN) == ["OK", "NOT_FOUND"]  # a token adds its role
        assert await codes(None) == ["UNAVAILABLE", "UNAVAILABLE"]  # no certificate: no connection
        assert ("control_plane", "forbidden") in refused
    finally:
        await served.stop(grace=0)


async def _asgi(app, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict, dict]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "root_path": "",
    }
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(body or b"{}")


async def test_http_401_403_and_open_health(tmp_path):
    checker, refused = _guard(tmp_path)
    served = SimpleNamespace(strategy="greedy", version="base")
    model = SimpleNamespace(current=lambda: served)
    limits = SimpleNamespace(max_n=4)
    app = make_app(HttpApi(model, limits, None, 1024, lambda: True, guard=checker))  # type: ignore[arg-type]
    status, headers, body = await _asgi(app, "GET", "/v1/models", {})
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert body["error"]["type"] == "authentication_error" and body["error"]["code"] == "missing_api_key"
    status, _, body = await _asgi(app, "GET", "/v1/models", {"authorization": "Bearer wrong"})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, _, body = await _asgi(app, "GET", "/v1/models", {"authorization": f"Bearer {READER}"})
    assert status == 200 and body["object"] == "list"
    status, _, body = await _asgi(app, "POST", "/v1/admin", {"authorization": f"Bearer {READER}"})
    assert status == 403 and body["error"]["type"] == "permission_error"  # unlisted: control only
    assert (await _asgi(app, "GET", "/health", {}))[0] == 200
    assert refused == [("control_plane", r) for r in ("missing", "invalid", "forbidden")]
