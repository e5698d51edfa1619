"""The shared gRPC server core in one process: the rate-limit interceptor (health exempt, every kind
of call refused), the request size cap and TLS, on the control plane with a controller that only
knows its (empty) runs."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from selfimprove.core.grpcserve import TokenBucket, read_tls, serve
from selfimprove.core.settings import SettingsError
from selfimprove.evaluator.control_plane import SERVICE, start_server
from selfimprove.v2 import control_pb2, control_pb2_grpc
from tests.support.tlskit import self_signed

pytestmark = pytest.mark.unit

ADDRESS = "127.0.0.1:{}"


async def health_status(channel, service: str = SERVICE) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return reply.status


async def test_rate_limit_refuses_beyond_the_burst_but_never_health():
    refused = []
    served = await start_server(
        SimpleNamespace(runs={}),
        "127.0.0.1",
        0,
        rate_limit=TokenBucket(rate=0.001, burst=3),
        on_rate_limited=refused.append,
    )
    try:
        async with grpc.aio.insecure_channel(ADDRESS.format(served.port)) as channel:
            stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
            for _ in range(3):
                assert not (await stub.ListRuns(control_pb2.ListRunsRequest(), timeout=10)).runs
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ListRuns(control_pb2.ListRunsRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.value.details().startswith("rate limit:")
            for name in ("", SERVICE):  # health answers however often it is asked
                for _ in range(5):
                    assert await health_status(channel, name) == health_pb2.HealthCheckResponse.SERVING
        assert refused == ["/selfimprove.v2.ControlPlaneService/ListRuns"]
    finally:
        await served.stop(grace=0)


async def test_streaming_calls_are_refused_too():
    async def count(request, context):
        for i in range(3):
            yield bytes([i])

    def add(_servicer, server):
        handler = grpc.unary_stream_rpc_method_handler(count)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Counter", {"Count": handler}),)
        )

    served = await serve(
        [(add, None)], "127.0.0.1", 0, max_request_bytes=1024, rate_limit=TokenBucket(0.001, 1)
    )
    try:
        async with grpc.aio.insecure_channel(ADDRESS.format(served.port)) as channel:
            call = channel.unary_stream("/test.Counter/Count")
            assert [m async for m in call(b"", timeout=10)] == [b"\x00", b"\x01", b"\x02"]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                [m async for m in call(b"", timeout=10)]
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await health_status(channel, "") == health_pb2.HealthCheckResponse.SERVING
    finally:
        await served.stop(grace=0)


async def test_requests_over_the_size_cap_are_refused():
    served = await start_server(SimpleNamespace(runs={}), "127.0.0.1", 0, max_request_bytes=64 * 1024)
    try:
        async with grpc.aio.insecure_channel(ADDRESS.format(served.port)) as channel:
            stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:  # under the cap: the config is read
                await stub.StartRun(control_pb2.StartRunRequest(config_yaml="bogus_field: 1"), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            big = "# padding\n" * 10_000  # 100 KB
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.StartRun(control_pb2.StartRunRequest(config_yaml=big), timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await served.stop(grace=0)


async def test_tls_answers_tls_clients_only(tmp_path):
    key, cert = self_signed(tmp_path)
    tls = read_tls(cert, key)
    assert tls == (key.read_bytes(), cert.read_bytes())
    served = await start_server(SimpleNamespace(runs={}), "127.0.0.1", 0, tls=tls)
    target = ADDRESS.format(served.port)
    try:
        creds = grpc.ssl_channel_credentials(cert.read_bytes())
        async with grpc.aio.secure_channel(target, creds) as channel:
            stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
            assert not (await stub.ListRuns(control_pb2.ListRunsRequest(), timeout=10)).runs
            assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await control_pb2_grpc.ControlPlaneServiceStub(channel).ListRuns(
                    control_pb2.ListRunsRequest(), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await served.stop(grace=0)


def test_tls_files_are_both_or_neither_and_readable(monkeypatch, tmp_path):
    from selfimprove.core.settings import load
    from selfimprove.evaluator.settings import EvaluatorSettings

    assert read_tls(None, None) is None
    monkeypatch.setenv("SELFIMPROVE_EVALUATOR_TLS_CERT_FILE", str(tmp_path / "cert.pem"))
    with pytest.raises(SettingsError, match="set both tls_cert_file and tls_key_file"):
        load(EvaluatorSettings)
    monkeypatch.setenv("SELFIMPROVE_EVALUATOR_TLS_KEY_FILE", str(tmp_path / "key.pem"))
    s = load(EvaluatorSettings)
    assert (s.max_request_bytes, s.rate_per_s, s.burst) == (1024 * 1024, 50.0, 100)
    with pytest.raises(SettingsError, match=r"SELFIMPROVE_EVALUATOR_TLS_KEY_FILE: cannot read .*key\.pem"):
        read_tls(s.tls_cert_file, s.tls_key_file, "SELFIMPROVE_EVALUATOR_")


async def test_a_taken_port_is_an_os_error():
    served = await serve([], "127.0.0.1", 0, max_request_bytes=1024)
    try:
        with pytest.raises(OSError, match="cannot bind"):
            await serve([], "127.0.0.1", served.port, max_request_bytes=1024)
    finally:
        await served.stop(grace=0)
