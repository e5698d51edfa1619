"""Authentication and authorization on the real servers, each its own process on the local broker and
object store: the evaluator's control plane (gRPC), the refinement service's gRPC endpoint and its
OpenAI-compatible HTTP API, with a token file: no token is UNAUTHENTICATED / 401, a read token on a
control call PERMISSION_DENIED, the right token works (the CLI's ``--token-file`` too), every refusal
is counted, and no token appears in a log or on the bus. Then the refinement service with mutual TLS,
where a client certificate's OU is its role."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import openai
import pytest

from selfimprove.v2 import control_pb2, control_pb2_grpc
from selfimprove.v2 import refinement_pb2 as pb
from selfimprove.v2 import refinement_pb2_grpc as pb_grpc
from tests.integration import test_refinement_service as refinement_kit
from tests.support.buskit import free_port, read_topic
from tests.support.evaluator_kit import metric, start_evaluator
from tests.support.tlskit import ca_and_clients, self_signed

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]
tiny_models = refinement_kit.tiny_models
READER, ADMIN = "read-4f1c2a9e7d3b5c8a0e6f", "ctrl-9b2d7e4a1c6f3b8d5a0e"
CONFIG = "budget: {iterations: 1}\ntask: {dev_size: 4}\n"


def token_files(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"read {READER}\ncontrol {ADMIN}\n")
    tokens.chmod(0o600)
    for name, token in (("reader", READER), ("admin", ADMIN)):
        (tmp_path / name).write_text(token + "\n")
    return tokens


def bearer(token: str | None):
    return (("authorization", f"Bearer {token}"),) if token else None


async def code_of(call, request, token=None) -> str:
    try:
        reply = call(request, timeout=60, metadata=bearer(token))
        if hasattr(reply, "__aiter__"):
            [_ async for _ in reply]
        else:
            await reply
        return "OK"
    except grpc.aio.AioRpcError as exc:
        return exc.code().name


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "selfimprove.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert READER not in text and ADMIN not in text


async def test_control_plane_tokens(stack, unique_name, tmp_path):
    tokens = token_files(tmp_path)
    port = free_port()
    evaluator = start_evaluator(
        stack,
        unique_name,
        tmp_path,
        port,
        SELFIMPROVE_EVALUATOR_GRPC_HOST="127.0.0.1",
        SELFIMPROVE_EVALUATOR_AUTH_TOKENS_FILE=str(tokens),
        SELFIMPROVE_LOG_LEVEL="DEBUG",
    )
    try:
        evaluator.wait_ready(120)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
            start = control_pb2.StartRunRequest(config_yaml=CONFIG, run_id=unique_name)
            listing = control_pb2.ListRunsRequest()
            assert await code_of(stub.ListRuns, listing) == "UNAUTHENTICATED"
            assert await code_of(stub.ListRuns, listing, "x" * 24) == "UNAUTHENTICATED"
            assert await code_of(stub.ListRuns, listing, READER) == "OK"
            assert await code_of(stub.StartRun, start) == "UNAUTHENTICATED"
            assert await code_of(stub.StartRun, start, READER) == "PERMISSION_DENIED"
            assert await code_of(stub.StartRun, start, ADMIN) == "OK"
            status = control_pb2.GetRunStatusRequest(run_id=unique_name)
            assert await code_of(stub.GetRunStatus, status, READER) == "OK"
            stop = control_pb2.StopRunRequest(run_id=unique_name, reason="test")
            assert await code_of(stub.StopRun, stop, READER) == "PERMISSION_DENIED"
            assert await code_of(stub.StopRun, stop, ADMIN) == "OK"

        address = {"SELFIMPROVE_EVALUATOR_ADDRESS": f"127.0.0.1:{port}"}
        done = cli("status", unique_name, **address)
        assert done.returncode == 1 and "UNAUTHENTICATED" in done.stderr, done.stderr
        done = cli("--token-file", str(tmp_path / "reader"), "status", unique_name, **address)
        assert done.returncode == 0, done.stderr
        done = cli("stop", unique_name, **address, SELFIMPROVE_TOKEN_FILE=str(tmp_path / "reader"))
        assert done.returncode == 1 and "PERMISSION_DENIED" in done.stderr, done.stderr

        def refused(reason: str) -> float:
            return metric(
                evaluator, "selfimprove_auth_refusals_total", endpoint="control_plane", reason=reason
            )

        assert (refused("missing"), refused("invalid"), refused("forbidden")) == (3, 1, 3)
        records = await read_topic(stack.kafka_bootstrap, f"{unique_name}.evt.control", 10_000, 5.0)
        assert records  # the start and the stop
        assert all(READER.encode() not in r.value and ADMIN.encode() not in r.value for r in records)
    finally:
        assert evaluator.stop() == 0
    assert_no_token(evaluator.log.read_text())


async def test_refinement_grpc_and_http_tokens(stack, unique_name, tmp_path, tiny_models):
    tokens = token_files(tmp_path)
    proc, port = refinement_kit.start(
        stack,
        unique_name,
        tmp_path,
        tiny_models[0],
        SELFIMPROVE_REFINEMENT_AUTH_TOKENS_FILE=str(tokens),
        SELFIMPROVE_LOG_LEVEL="DEBUG",
    )
    try:
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/health", timeout=5).read())
        http = f"http://127.0.0.1:{health['http_port']}"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.RefinementServiceStub(channel)
            ask = pb.GenerateRequest(prompt="1 + 1 =", max_new_tokens=2)
            assert await code_of(stub.Generate, ask) == "UNAUTHENTICATED"
            assert await code_of(stub.Generate, ask, "y" * 24) == "UNAUTHENTICATED"
            assert await code_of(stub.Generate, ask, READER) == "OK"
            stream = pb.GenerateStreamRequest(request=ask)
            assert await code_of(stub.GenerateStream, stream) == "UNAUTHENTICATED"
            assert await code_of(stub.GenerateStream, stream, ADMIN) == "OK"

        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{http}/v1/models", timeout=10)
        assert err.value.code == 401 and err.value.headers["www-authenticate"] == "Bearer"
        assert json.loads(err.value.read())["error"]["type"] == "authentication_error"
        assert urllib.request.urlopen(f"{http}/health", timeout=10).status == 200  # open
        client = openai.AsyncOpenAI(base_url=f"{http}/v1", api_key=READER, max_retries=0)
        chat = await client.chat.completions.create(
            model="selfimprove", messages=[{"role": "user", "content": "2 + 2?"}], max_tokens=2
        )
        assert chat.usage.completion_tokens > 0
        wrong = openai.AsyncOpenAI(base_url=f"{http}/v1", api_key="z" * 24, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()

        done = cli(
            "--token-file", str(tmp_path / "reader"), "generate", "--address", f"127.0.0.1:{port}",
            "--max-new-tokens", "2", "3 + 3 =",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        done = cli("generate", "--address", f"127.0.0.1:{port}", "3 + 3 =")
        assert done.returncode == 1 and "UNAUTHENTICATED" in done.stderr, done.stderr

        def refused(endpoint: str, reason: str) -> float:
            return metric(proc, "selfimprove_auth_refusals_total", endpoint=endpoint, reason=reason)

        assert refused("refinement_grpc", "missing") == 3 and refused("refinement_grpc", "invalid") == 1
        assert refused("refinement_http", "missing") == 1 and refused("refinement_http", "invalid") == 1
    finally:
        assert proc.stop() == 0
    assert_no_token(proc.log.read_text())


async def test_refinement_mutual_tls_roles_from_the_certificate(stack, unique_name, tmp_path, tiny_models):
    key, cert = self_signed(tmp_path)
    ca, clients = ca_and_clients(tmp_path)
    proc, port = refinement_kit.start(
        stack,
        unique_name,
        tmp_path,
        tiny_models[0],
        SELFIMPROVE_REFINEMENT_TLS_CERT_FILE=str(cert),
        SELFIMPROVE_REFINEMENT_TLS_KEY_FILE=str(key),
        SELFIMPROVE_REFINEMENT_TLS_CLIENT_CA_FILE=str(ca),
    )
    try:
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/health", timeout=5).read())
        for unit, want_grpc, want_http in (("read", "OK", 200), ("none", "PERMISSION_DENIED", 403)):
            client_key, client_cert = clients[unit]
            creds = grpc.ssl_channel_credentials(
                cert.read_bytes(),
                private_key=client_key.read_bytes(),
                certificate_chain=client_cert.read_bytes(),
            )
            async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
                ask = pb.GenerateRequest(prompt="1 + 1 =", max_new_tokens=2)
                assert await code_of(pb_grpc.RefinementServiceStub(channel).Generate, ask) == want_grpc
            context = ssl.create_default_context(cafile=str(cert))
            context.load_cert_chain(str(client_cert), str(client_key))
            try:
                status = urllib.request.urlopen(
                    f"https://localhost:{health['http_port']}/v1/models", timeout=10, context=context
                ).status
            except urllib.error.HTTPError as exc:
                status = exc.code
            assert status == want_http, unit
        bare = ssl.create_default_context(cafile=str(cert))  # no client certificate: no connection
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(
                f"https://localhost:{health['http_port']}/v1/models", timeout=10, context=bare
            )
        assert metric(proc, "selfimprove_auth_refusals_total", reason="forbidden") == 2
    finally:
        assert proc.stop() == 0
