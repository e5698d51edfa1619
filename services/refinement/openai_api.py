"""The OpenAI-compatible API's requests and replies as pure mappings (the HTTP app is ``http_api``).

A model name picks the inference strategy: ``selfimprove`` is the strategy the last calibration chose
(what gRPC ``Generate`` serves by default), ``selfimprove:<strategy>`` any servable strategy, e.g.
``selfimprove:self_consistency@5``; a body field ``strategy`` does the same for plain ``selfimprove``.
A chat goes to the engine whole (its chat template formats it, as it formats gRPC's prompt, which
is one user message); a completion prompt is one user message, exactly as gRPC sends it.

Strategies only know their answer once they are done (self-consistency votes at the end), so a
stream sends the finished text in chunks, as ``GenerateStream`` does. ``stop`` strings cut the
finished text; ``n`` above 1 is refused (a strategy such as ``self_consistency@5`` is how to use
several samples), as are the features the engine lacks (tools, log-probabilities, penalties).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from selfimprove.refinement.answering import Ask, Reply
from selfimprove.runtime import strategies

MODEL = "selfimprove"
# GET /v1/models lists these besides the served strategy; any other servable name@k is accepted.
LISTED = ("greedy", "self_consistency@5", "best_of_n@4", "self_refine@1", "prompt_ensemble@4")
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOPS = 4
CHUNK = 16  # characters per streamed delta


class ApiError(Exception):
    """A refused request: its HTTP status and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        """OpenAI's error shape.

        >>> ApiError(404, "no such model", "model", "model_not_found").body()["error"]["code"]
        'model_not_found'
        """
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    """Fields both endpoints share; unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None
    strategy: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None


R = TypeVar("R", bound=_Request)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None


def parse_request(cls: type[R], raw: bytes) -> R:
    """Decode a JSON body into ``cls``; a 400 names the first field that is wrong.

    >>> parse_request(ChatRequest, b'{"model": "selfimprove"}')
    Traceback (most recent call last):
    ...
    selfimprove.refinement.openai_api.ApiError: messages: Field required
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(400, f"{param}: {first['msg']}", param) from None


def strategy_of(model: str, strategy: str | None) -> str:
    """The strategy a request names ("" is the served one); 404 for a model not served here.

    >>> strategy_of("selfimprove", None), strategy_of("selfimprove:self_consistency@5", None)
    ('', 'self_consistency@5')
    >>> strategy_of("selfimprove", "greedy")
    'greedy'
    >>> strategy_of("gpt-4o", None)
    Traceback (most recent call last):
    ...
    selfimprove.refinement.openai_api.ApiError: model 'gpt-4o' is not served here: use selfimprove or selfimprove:<strategy> (GET /v1/models lists them)
    """
    name, sep, spec = model.partition(":")
    if name != MODEL or (sep and not spec):
        raise ApiError(
            404,
            f"model {model!r} is not served here: use {MODEL} or {MODEL}:<strategy> (GET /v1/models lists them)",
            "model",
            "model_not_found",
        )
    if spec:
        try:
            parsed = strategies.parse(spec, serving=True).name
        except ValueError as exc:
            raise ApiError(404, f"model {model!r}: {exc}", "model", "model_not_found") from None
        if strategy and strategies.parse(strategy).name != parsed:
            raise ApiError(400, f"model {model!r} and strategy {strategy!r} disagree", "strategy")
        return parsed
    if strategy:
        try:
            return strategies.parse(strategy, serving=True).name
        except ValueError as exc:
            raise ApiError(400, str(exc), "strategy") from None
    return ""


def _refuse(param: str, what: str) -> ApiError:
    return ApiError(400, f"{param}: {what} is not supported by this server", param, "unsupported_parameter")


def _common(req: _Request, max_tokens: int | None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The Ask fields both endpoints share, and the stop strings; refuses what is not supported."""
    if req.n is not None and req.n != 1:
        raise ApiError(
            400,
            f"n={req.n}: one choice per request is supported; to use several samples ask for a strategy "
            f"such as {MODEL}:self_consistency@5",
            "n",
            "unsupported_parameter",
        )
    if max_tokens is not None and max_tokens < 1:
        raise ApiError(400, f"max_tokens={max_tokens} must be at least 1", "max_tokens")
    for param in ("presence_penalty", "frequency_penalty"):
        if getattr(req, param):
            raise _refuse(param, "a non-zero penalty")
    if req.logit_bias:
        raise _refuse("logit_bias", "a logit bias")
    stops = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stops) > MAX_STOPS or not all(stops):
        raise ApiError(400, f"stop: at most {MAX_STOPS} non-empty strings", "stop")
    fields = {
        "strategy": strategy_of(req.model, req.strategy),
        "max_new_tokens": max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
    }
    return fields, stops


def chat_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """The chat as the engine's messages; the last one must be the user's.

    >>> chat_messages([ChatMessage(role="developer", content="Be brief."),
    ...                ChatMessage(role="user", content=[{"type": "text", "text": "2+3?"}])])
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': '2+3?'}]
    """
    if not messages:
        raise ApiError(400, "messages: at least one message is needed", "messages")
    out = []
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise ApiError(
                400, f"messages.{i}.role: {m.role!r} is not supported (use {', '.join(ROLES)})", "messages"
            )
        if isinstance(m.content, list):
            if any(part.get("type") != "text" for part in m.content):
                raise ApiError(400, f"messages.{i}.content: only text parts are supported", "messages")
            content = "".join(str(part.get("text", "")) for part in m.content)
        else:
            content = m.content or ""
        out.append({"role": ROLES[m.role], "content": content})
    if out[-1]["role"] != "user":
        raise ApiError(400, "messages: the last message must be the user's", "messages")
    return out


def chat_ask(req: ChatRequest) -> tuple[Ask, tuple[str, ...]]:
    """What a chat completion asks for, and its stop strings."""
    if req.logprobs or req.top_logprobs:
        raise _refuse("logprobs", "log-probabilities")
    if req.tools or req.functions:
        raise _refuse("tools", "tool calling")
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise _refuse("response_format", "a structured response format")
    fields, stops = _common(req, req.max_completion_tokens or req.max_tokens)
    return Ask(chat_messages(req.messages), **fields), stops


def completion_ask(req: CompletionRequest) -> tuple[Ask, tuple[str, ...]]:
    """What a completion asks for (its prompt is one user message, as gRPC sends it)."""
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise ApiError(400, "prompt: one text prompt per request (token ids are not accepted)", "prompt")
        prompt = prompt[0]
    unsupported = {
        "echo": req.echo,
        "suffix": req.suffix,
        "best_of": (req.best_of or 1) > 1,
        "logprobs": req.logprobs is not None,
    }
    for param, asked in unsupported.items():
        if asked:
            raise _refuse(param, "this parameter")
    fields, stops = _common(req, req.max_tokens)
    return Ask(prompt, **fields), stops


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found.

    >>> cut_at_stop("4 + 5 = 9.\\nNext", ("\\n",)), cut_at_stop("9", ("\\n",))
    (('4 + 5 = 9.', True), ('9', False))
    """
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def finish_reason(reply: Reply, stopped: bool) -> str:
    return "length" if reply.hit_length and not stopped else "stop"


def usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def model_name(strategy: str) -> str:
    return f"{MODEL}:{strategy}"


def _head(kind: str, rid: str, created: int, reply: Reply) -> dict[str, Any]:
    return {
        "id": rid,
        "object": kind,
        "created": created,
        "model": model_name(reply.strategy),
        "system_fingerprint": reply.model_version,
    }


def chat_completion(rid: str, created: int, reply: Reply, stops: tuple[str, ...]) -> dict[str, Any]:
    text, stopped = cut_at_stop(reply.text, stops)
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish_reason(reply, stopped),
        "logprobs": None,
    }
    return {**_head("chat.completion", rid, created, reply), "choices": [choice], "usage": usage(reply)}


def completion(rid: str, created: int, reply: Reply, stops: tuple[str, ...]) -> dict[str, Any]:
    text, stopped = cut_at_stop(reply.text, stops)
    choice = {"index": 0, "text": text, "finish_reason": finish_reason(reply, stopped), "logprobs": None}
    return {**_head("text_completion", rid, created, reply), "choices": [choice], "usage": usage(reply)}


def chat_chunks(
    rid: str, created: int, reply: Reply, stops: tuple[str, ...], include_usage: bool
) -> Iterator[dict[str, Any]]:
    """``chat.completion.chunk`` objects: the role, the text in pieces, the finish reason, then
    (with ``stream_options.include_usage``) one with the usage and no choices."""
    head = _head("chat.completion.chunk", rid, created, reply)
    text, stopped = cut_at_stop(reply.text, stops)

    def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    yield chunk({"role": "assistant", "content": ""})
    for i in range(0, len(text), CHUNK):
        yield chunk({"content": text[i : i + CHUNK]})
    yield chunk({}, finish_reason(reply, stopped))
    if include_usage:
        yield {**head, "choices": [], "usage": usage(reply)}


def completion_chunks(
    rid: str, created: int, reply: Reply, stops: tuple[str, ...], include_usage: bool
) -> Iterator[dict[str, Any]]:
    """``text_completion`` chunks: the text in pieces, the finish reason, then the usage if asked."""
    head = _head("text_completion", rid, created, reply)
    text, stopped = cut_at_stop(reply.text, stops)

    def chunk(piece: str, finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "text": piece, "finish_reason": finish, "logprobs": None}]}

    for i in range(0, len(text), CHUNK):
        yield chunk(text[i : i + CHUNK])
    yield chunk("", finish_reason(reply, stopped))
    if include_usage:
        yield {**head, "choices": [], "usage": usage(reply)}


def sse(event: dict[str, Any] | str) -> bytes:
    """One server-sent event (``"[DONE]"`` ends a stream).

    >>> sse({"a": 1}), sse("[DONE]")
    (b'data: {"a":1}\\n\\n', b'data: [DONE]\\n\\n')
    """
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def model_list(served_strategy: str, max_n: int, version: str) -> dict[str, Any]:
    """``GET /v1/models``: the served default, the served strategy by name, and the usual others
    within ``max_n``.

    >>> [m["id"] for m in model_list("self_consistency@3", 4, "v1")["data"]]  # doctest: +NORMALIZE_WHITESPACE
    ['selfimprove', 'selfimprove:self_consistency@3', 'selfimprove:greedy', 'selfimprove:best_of_n@4',
     'selfimprove:self_refine@1', 'selfimprove:prompt_ensemble@4']
    """
    names = [served_strategy, *(s for s in LISTED if strategies.parse(s).k <= max_n)]
    ids = [MODEL, *dict.fromkeys(model_name(n) for n in names)]
    return {
        "object": "list",
        "data": [
            {
                "id": i,
                "object": "model",
                "created": 0,
                "owned_by": MODEL,
                "strategy": served_strategy if i == MODEL else i.partition(":")[2],
                "model_version": version,
            }
            for i in ids
        ],
    }
