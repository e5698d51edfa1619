"""The evaluator's control plane as its own process, configured through its settings: TLS (a TLS
client and the CLI with ``SELFIMPROVE_EVALUATOR_TLS_CA`` get answers, a plaintext client does not),
the request size cap and the rate limit (``RESOURCE_EXHAUSTED``), with health always answering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from selfimprove.v2 import control_pb2, control_pb2_grpc
from tests.support.buskit import free_port
from tests.support.evaluator_kit import metric, start_evaluator
from tests.support.tlskit import self_signed

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]
BURST = 6


def cli_status(port: int, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "selfimprove.cli.main", "status", "no-such-run"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SELFIMPROVE_EVALUATOR_ADDRESS": f"127.0.0.1:{port}", **env},
    )


async def test_tls_size_cap_and_rate_limit(stack, unique_name, tmp_path):
    key, cert = self_signed(tmp_path)
    port = free_port()
    evaluator = start_evaluator(
        stack,
        unique_name,
        tmp_path,
        port,
        SELFIMPROVE_EVALUATOR_GRPC_HOST="127.0.0.1",
        SELFIMPROVE_EVALUATOR_TLS_CERT_FILE=str(cert),
        SELFIMPROVE_EVALUATOR_TLS_KEY_FILE=str(key),
        SELFIMPROVE_EVALUATOR_MAX_REQUEST_BYTES=str(64 * 1024),
        SELFIMPROVE_EVALUATOR_RATE_PER_S="0.01",
        SELFIMPROVE_EVALUATOR_BURST=str(BURST),
    )
    target = f"127.0.0.1:{port}"
    try:
        evaluator.wait_ready(120)
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{evaluator.port}/health").read())
        assert health["grpc_tls"] is True and health["grpc_port"] == port
        creds = grpc.ssl_channel_credentials(cert.read_bytes())
        async with grpc.aio.secure_channel(target, creds) as channel:
            stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
            assert not (await stub.ListRuns(control_pb2.ListRunsRequest(), timeout=30)).runs  # token 1
            async with grpc.aio.insecure_channel(target) as plain:
                with pytest.raises(grpc.aio.AioRpcError) as err:  # never reaches a handler: no token
                    await control_pb2_grpc.ControlPlaneServiceStub(plain).ListRuns(
                        control_pb2.ListRunsRequest(), timeout=30
                    )
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE

            # The CLI: with the CA it gets the server's answer (token 2); without, no connection.
            done = cli_status(port, SELFIMPROVE_EVALUATOR_TLS_CA=str(cert))
            assert done.returncode == 1 and "NOT_FOUND: no run 'no-such-run'" in done.stderr, done.stderr
            done = cli_status(port)
            assert done.returncode == 1 and "UNAVAILABLE" in done.stderr, done.stderr

            big = "# padding\n" * 10_000  # 100 KB against a 64 KiB cap
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.StartRun(control_pb2.StartRunRequest(config_yaml=big), timeout=30)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "rate limit" not in err.value.details(), err.value.details()

            # The rest of the burst, then refusals; at 0.01/s no token comes back meanwhile.
            answered = refused = 0
            for _ in range(BURST + 2):
                try:
                    await stub.ListRuns(control_pb2.ListRunsRequest(), timeout=30)
                    answered += 1
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                    assert exc.details().startswith("rate limit:"), exc.details()
                    refused += 1
            assert answered <= BURST - 2 and refused >= 2, (answered, refused)
            checker = health_pb2_grpc.HealthStub(channel)
            for name in ("", "selfimprove.v2.ControlPlaneService", "", ""):
                reply = await checker.Check(health_pb2.HealthCheckRequest(service=name), timeout=30)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert metric(evaluator, "selfimprove_control_plane_rate_limited_total", method="ListRuns") == refused
    finally:
        assert evaluator.stop() == 0
