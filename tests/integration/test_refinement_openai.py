"""The refinement service's OpenAI-compatible HTTP API, as its own process on the real broker and object
store with a tiny random Llama, driven by the official ``openai`` client: a chat, a stream, the model
list, errors in OpenAI's shape, and a promotion mid-session after which answers come from the new
version; then TLS on the HTTP port with the service's certificate."""

import asyncio
import json
import ssl
import urllib.error
import urllib.request

import openai
import pytest

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.v2.common_pb2 import ModelRef, Stage
from selfimprove.v2.stages_pb2 import Decision
from tests.integration import test_refinement_service as refinement_kit
from tests.support.buskit import artifact_store, kafka_settings
from tests.support.tlskit import self_signed

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]
start = refinement_kit.start
tiny_models = refinement_kit.tiny_models  # the module-scoped fixture: a tiny Llama and two adapters
USER = [{"role": "user", "content": "What is 12 + 30?"}]


def health(proc) -> dict:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/health", timeout=5).read())


async def promote(stack, prefix, model: ModelRef) -> None:
    decision = Decision(kind=Decision.KIND_PROMOTE, reason="better", model=model)
    env = envelopes.make(
        run_id=prefix, iteration=1, stage=Stage.STAGE_CONTROL, producer="test", decision=decision
    )
    async with Bus(kafka_settings(stack, prefix)) as bus:
        await bus.publish(bus.topics.control, env)


async def test_the_openai_client_chats_streams_and_follows_a_promotion(
    stack,
    unique_name,
    tmp_path,
    tiny_models,
):
    base, adapters = tiny_models
    proc, _ = start(stack, unique_name, tmp_path, base, name="openai")
    try:
        port = health(proc)["http_port"]
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        chat = await client.chat.completions.create(model="selfimprove", messages=USER, max_tokens=8)
        assert chat.model == "selfimprove:greedy" and chat.system_fingerprint == str(base)
        assert chat.usage.prompt_tokens > 0 and 0 < chat.usage.completion_tokens <= 8
        assert chat.choices[0].message.role == "assistant"
        stream = await client.chat.completions.create(
            model="selfimprove:self_consistency@2",
            messages=USER,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        assert chunks[-1].usage.completion_tokens > 0 and chunks[-2].choices[0].finish_reason
        assert {c.model for c in chunks} == {"selfimprove:self_consistency@2"}
        listed = [m.id async for m in client.models.list()]
        assert listed[0] == "selfimprove" and "selfimprove:greedy" in listed
        comp = await client.completions.create(model="selfimprove", prompt="2 + 3 =", max_tokens=4)
        assert comp.usage.completion_tokens > 0 and comp.system_fingerprint == str(base)

        with pytest.raises(openai.NotFoundError) as nf:
            await client.chat.completions.create(model="gpt-4o", messages=USER)
        assert nf.value.body["code"] == "model_not_found" and nf.value.body["param"] == "model"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="selfimprove", messages=USER, n=2)
        assert bad.value.body["param"] == "n" and bad.value.body["type"] == "invalid_request_error"
        with pytest.raises(openai.BadRequestError, match="max_prompt_chars"):
            await client.chat.completions.create(
                model="selfimprove", messages=[{"role": "user", "content": "x" * 5000}]
            )

        # A promotion while the client keeps asking: answers move to the new version, no restart.
        ref = artifact_store(stack).publish_folder(f"runs/{unique_name}/adapter/", adapters[0])
        version = f"{unique_name}/iter-001"
        await promote(stack, unique_name, ModelRef(base=str(base), adapter=ref, version=version))
        seen = []
        for _ in range(300):
            raw = await client.chat.completions.with_raw_response.create(
                model="selfimprove", messages=USER, max_tokens=8
            )
            seen.append(raw.headers["x-selfimprove-model-version"])
            if seen[-1] == version:
                break
            await asyncio.sleep(0.2)
        assert seen[-1] == version, f"never served {version}: {set(seen)}"
        assert raw.parse().system_fingerprint == version and proc.proc.poll() is None
        assert health(proc)["http_port"] == port
        assert proc.counter("selfimprove_refinement_requests_total", method="ChatCompletions", code="OK") >= 3
        assert (
            proc.counter("selfimprove_refinement_requests_total", method="ChatCompletions", code="NOT_FOUND")
            == 1
        )
        await client.close()
    finally:
        assert proc.stop() == 0


async def test_the_http_port_serves_tls_with_the_services_certificate(
    stack, unique_name, tmp_path, tiny_models
):
    key, cert = self_signed(tmp_path)
    proc, _ = start(
        stack,
        unique_name,
        tmp_path,
        tiny_models[0],
        name="openai-tls",
        SELFIMPROVE_REFINEMENT_TLS_CERT_FILE=str(cert),
        SELFIMPROVE_REFINEMENT_TLS_KEY_FILE=str(key),
    )
    try:
        found = health(proc)
        assert found["http_tls"] is True
        body = json.dumps({"model": "selfimprove", "messages": USER, "max_tokens": 4}).encode()
        request = urllib.request.Request(
            f"https://127.0.0.1:{found['http_port']}/v1/chat/completions",
            data=body,
            headers={"content-type": "application/json"},
        )
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(request, timeout=60, context=context) as r:
            assert json.loads(r.read())["object"] == "chat.completion"
        plain = urllib.request.Request(request.full_url.replace("https", "http"), data=body)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(plain, timeout=10)
    finally:
        assert proc.stop() == 0
