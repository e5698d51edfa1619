"""The OpenAI-compatible API: the pure request/response mapping, and the HTTP app in-process (uvicorn
on a free port) over a fake engine, driven by the official ``openai`` client."""

import asyncio
import json
import urllib.error
import urllib.request
from types import SimpleNamespace

import openai
import pytest

from selfimprove.core.grpcserve import TokenBucket
from selfimprove.refinement import openai_api
from selfimprove.refinement.answering import Reply
from selfimprove.refinement.http_runner import http_runnable
from selfimprove.refinement.openai_api import ApiError, ChatRequest, CompletionRequest
from selfimprove.refinement.served import ComputeEngine, Served, ServedModel
from selfimprove.refinement.settings import RefinementSettings
from selfimprove.runtime.engine import GenerationRequest, PromptResult, Sample, to_messages
from selfimprove.v2.common_pb2 import ModelRef

pytestmark = pytest.mark.unit


def chat(**fields):
    return ChatRequest.model_validate(
        {"model": "selfimprove", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def reply(text="The answer is 5.\nNext question", hit_length=False):
    return Reply(text, "5", "greedy", "run/iter-001", 7, 11, 0.1, hit_length)


def test_model_names_pick_the_strategy_and_unknown_models_are_404():
    assert openai_api.chat_ask(chat())[0].strategy == ""
    assert (
        openai_api.chat_ask(chat(model="selfimprove:self_consistency@5"))[0].strategy == "self_consistency@5"
    )
    assert openai_api.chat_ask(chat(strategy="best_of_n@2"))[0].strategy == "best_of_n@2"
    for model in ("gpt-4o", "selfimprove:", "selfimprove:wizardry@2", "selfimprove:best_of_n_verifier@2"):
        with pytest.raises(ApiError) as err:
            openai_api.chat_ask(chat(model=model))
        assert err.value.status == 404 and err.value.body()["error"]["code"] == "model_not_found"
    with pytest.raises(ApiError) as err:
        openai_api.chat_ask(chat(model="selfimprove:greedy", strategy="self_refine@1"))
    assert err.value.status == 400 and err.value.param == "strategy"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, "messages"),
        ({"messages": []}, "messages"),
    ],
)
def test_unsupported_or_bad_chat_fields_are_400_naming_the_field(fields, param):
    with pytest.raises(ApiError) as err:
        openai_api.chat_ask(chat(**fields))
    assert err.value.status == 400 and err.value.param == param, err.value.message


def test_the_chat_goes_to_the_engine_whole_and_a_completion_prompt_as_one_user_message():
    req = chat(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"}],
        max_completion_tokens=9,
        stop="\n",
        temperature=0,
    )
    ask, stops = openai_api.chat_ask(req)
    assert ask.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"}]
    assert (ask.max_new_tokens, ask.temperature, stops) == (9, 0, ("\n",))
    comp = CompletionRequest.model_validate({"model": "selfimprove", "prompt": ["2+3?"], "max_tokens": 4})
    ask, _ = openai_api.completion_ask(comp)
    assert ask.prompt == "2+3?" and ask.max_new_tokens == 4
    for bad in ({"prompt": ["a", "b"]}, {"prompt": [1, 2]}, {"prompt": "a", "echo": True}):
        with pytest.raises(ApiError):
            openai_api.completion_ask(CompletionRequest.model_validate({"model": "selfimprove", **bad}))


def test_a_body_that_is_not_json_or_misses_a_field_is_400():
    with pytest.raises(ApiError, match="not JSON"):
        openai_api.parse_request(ChatRequest, b"{nope")
    with pytest.raises(ApiError) as err:
        openai_api.parse_request(ChatRequest, b'{"model": "selfimprove", "messages": "hi"}')
    assert err.value.status == 400 and err.value.param.startswith("messages")


def test_responses_carry_usage_the_version_and_the_stop_cut():
    body = openai_api.chat_completion("chatcmpl-1", 5, reply(), ("\n",))
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "The answer is 5."}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}
    assert body["model"] == "selfimprove:greedy" and body["system_fingerprint"] == "run/iter-001"
    assert (
        openai_api.completion("c", 5, reply(hit_length=True), ())["choices"][0]["finish_reason"] == "length"
    )


def test_stream_chunks_rebuild_the_text_and_end_with_the_finish_and_usage():
    chunks = list(openai_api.chat_chunks("id", 5, reply(), (), include_usage=True))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == reply().text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 18
    pieces = list(openai_api.completion_chunks("id", 5, reply(), ("\n",), include_usage=False))
    assert "".join(c["choices"][0]["text"] for c in pieces) == "The answer is 5."


class EchoEngine:
    """Replies "<tag> heard: <last message>. The answer is 5." in 4 tokens; counts words as tokens."""

    def __init__(self, tag):
        self.tag = tag

    def generate(self, request: GenerationRequest):
        text = f"{self.tag} heard: {to_messages(request.prompts[0])[-1]['content']}. The answer is 5."
        sample = Sample(text, 4, "stop")
        return [PromptResult((sample,) * request.params.n, 3) for _ in request.prompts]

    def encode(self, prompt):
        return [m["content"] for m in to_messages(prompt)]


def served(tag, version):
    engine = ComputeEngine(EchoEngine(tag))
    return Served(ModelRef(base="fake", version=version), engine, "greedy", lambda t: "5")


@pytest.fixture
async def api():
    """The HTTP API on a free loopback port; yields (client, port, model, state)."""
    model = ServedModel(served("base", "run/iter-000"))
    state = SimpleNamespace(ready=True, details={})
    s = RefinementSettings(
        http_host="127.0.0.1",
        http_port=0,
        max_request_bytes=2048,
        max_new_tokens=64,
        default_max_new_tokens=16,
    )
    bucket = TokenBucket(rate=0.001, burst=12)
    run = await http_runnable(SimpleNamespace(metrics=state), s, model, None, bucket)
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    port = state.details["http_port"]
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    yield client, port, model, state
    await client.close()
    stop.set()
    await asyncio.wait_for(task, 10)


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def post(port, path, data: bytes):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_the_openai_client_chats_streams_lists_models_and_sees_a_swap(api):
    client, port, model, state = api
    done = await client.chat.completions.create(
        model="selfimprove", messages=[{"role": "user", "content": "What is 2 + 3?"}], stop=["."]
    )
    assert done.choices[0].message.content == "base heard: What is 2 + 3?"
    assert done.model == "selfimprove:greedy" and done.system_fingerprint == "run/iter-000"
    assert done.usage.prompt_tokens == 1 and done.usage.completion_tokens == 4
    stream = await client.chat.completions.create(
        model="selfimprove:self_consistency@3",
        messages=[{"role": "user", "content": "What is 2 + 3?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "base heard: What is 2 + 3?. The answer is 5."
    assert chunks[-1].usage.completion_tokens == 12 and chunks[-1].model == "selfimprove:self_consistency@3"
    listed = [m.id async for m in client.models.list()]
    assert listed[:2] == ["selfimprove", "selfimprove:greedy"] and "selfimprove:self_consistency@5" in listed
    comp = await client.completions.create(model="selfimprove", prompt="2+3?", max_tokens=8)
    assert comp.choices[0].text.startswith("base heard: 2+3?") and comp.usage.total_tokens == 5
    model.use_model(ModelRef(base="fake", version="run/iter-001"), served("new", "run/iter-001").engine)
    after = await client.chat.completions.with_raw_response.create(
        model="selfimprove", messages=[{"role": "user", "content": "again"}]
    )
    assert after.headers["x-selfimprove-model-version"] == "run/iter-001"
    assert after.parse().choices[0].message.content.startswith("new heard: again")
    health = json.loads(await asyncio.to_thread(get, f"http://127.0.0.1:{port}/health"))
    assert health == {"status": "ok", "model_version": "run/iter-001", "strategy": "greedy"}


async def test_errors_have_openai_shape_and_status(api):
    client, port, _, state = api
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as nf:
        await client.chat.completions.create(model="gpt-4o", messages=user)
    assert nf.value.body["code"] == "model_not_found" and nf.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="selfimprove", messages=user, n=3)
    assert bad.value.body["param"] == "n" and "self_consistency" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="selfimprove", messages=user, max_tokens=1000)
    assert "max_new_tokens=64" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="max_n"):
        await client.chat.completions.create(model="selfimprove:self_consistency@64", messages=user)
    status, body = await asyncio.to_thread(post, port, "/v1/chat/completions", b"x" * 4000)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    status, body = await asyncio.to_thread(post, port, "/v1/nothing", b"{}")
    assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}
    state.ready = False
    with pytest.raises(openai.InternalServerError) as down:
        await client.chat.completions.create(model="selfimprove", messages=user)
    assert down.value.status_code == 503 and down.value.body["code"] == "model_not_loaded"
    state.ready = True
    with pytest.raises(openai.RateLimitError):  # the burst of 12 is spent by now
        for _ in range(12):
            await client.chat.completions.create(model="selfimprove", messages=user)
