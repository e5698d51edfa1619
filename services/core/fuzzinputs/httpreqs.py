"""Malformed requests to the refinement service's OpenAI-compatible HTTP API: pure, seeded.

Each case is one raw HTTP request (method, path, headers, body) with the statuses a clear refusal
may have and the word its OpenAI error body must contain (the field at fault, in ``param`` or the
message). Wrong types cover every field a request carries; the huge body is sized from the server's
``max_request_bytes``. ``disconnect`` cases declare a longer body than they send and then close:
there is no answer to check, only that the server keeps serving and counts no internal error.

>>> import random
>>> cases = generate(random.Random(1), max_request_bytes=65536)
>>> len({c.kind for c in cases}) == len(cases) > 30
True
>>> [c.body for c in generate(random.Random(1), 65536)] == [c.body for c in cases]
True
>>> next(c for c in cases if c.kind == "temperature_nan").body.endswith(b'"temperature": NaN}')
True
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
JSON_TYPE = {"content-type": "application/json"}


@dataclass(frozen=True)
class HttpCase:
    """One request; ``statuses`` are the answers that count as a clear refusal (empty: the request
    is fine and must be answered 200), ``names`` a word the error body must contain."""

    kind: str
    method: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_TYPE))
    statuses: frozenset[int] = frozenset({400})
    names: str = ""
    disconnect: bool = False


def _chat(rng: random.Random, **fields: Any) -> dict[str, Any]:
    a, b = rng.randrange(100), rng.randrange(100)
    return {
        "model": "selfimprove",
        "messages": [{"role": "user", "content": f"What is {a} + {b}?"}],
        **fields,
    }


def good(rng: random.Random) -> HttpCase:
    """A valid chat request (sent after the fuzzing: it must be answered 200)."""
    return HttpCase(
        "good_request_after",
        "POST",
        CHAT,
        json.dumps(_chat(rng, max_tokens=4)).encode(),
        statuses=frozenset(),
    )


def _field_cases(rng: random.Random) -> list[tuple[str, dict[str, Any], str]]:
    """(kind, chat body, field named): a wrong type or an out-of-range value for every field."""
    user = [{"role": "user", "content": "What is 2 + 3?"}]
    base = {"model": "selfimprove", "messages": user}
    return [
        ("messages_not_list", {**base, "messages": rng.choice(["hi", {"role": "user"}, 3])}, "messages"),
        ("messages_missing", {"model": "selfimprove"}, "messages"),
        ("message_not_object", {**base, "messages": ["What is 2 + 3?"]}, "messages"),
        (
            "content_number",
            {**base, "messages": [{"role": "user", "content": rng.choice([5, 2.5, True])}]},
            "content",
        ),
        (
            "content_part_image",
            {**base, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "content",
        ),
        ("role_missing", {**base, "messages": [{"content": "hi"}]}, "role"),
        ("role_unknown", {**base, "messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ("model_missing", {"messages": user}, "model"),
        ("model_number", {**base, "model": 4}, "model"),
        ("max_tokens_string", {**base, "max_tokens": rng.choice(["many", "ten"])}, "max_tokens"),
        ("max_tokens_negative", {**base, "max_tokens": rng.choice([-1, -100, 0])}, "max_tokens"),
        ("max_tokens_huge", {**base, "max_tokens": rng.choice([10**6, 2**31, 10**30])}, "max_"),
        ("max_tokens_float", {**base, "max_tokens": 3.5}, "max_tokens"),
        ("temperature_negative", {**base, "temperature": -1}, "temperature"),
        ("temperature_string", {**base, "temperature": "hot"}, "temperature"),
        ("temperature_huge", {**base, "temperature": 1e9}, "temperature"),
        ("top_p_over_one", {**base, "top_p": rng.choice([1.5, 2, 100])}, "top_p"),
        ("top_p_zero", {**base, "top_p": 0}, "top_p"),
        ("top_p_string", {**base, "top_p": "all"}, "top_p"),
        ("n_over_cap", {**base, "n": rng.choice([2, 17, 1000])}, "n"),
        ("n_string", {**base, "n": "two"}, "n"),
        ("stop_number", {**base, "stop": rng.choice([5, 1.5])}, "stop"),
        ("stop_too_many", {**base, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("stop_empty_string", {**base, "stop": [""]}, "stop"),
        ("stream_string", {**base, "stream": "yes please"}, "stream"),
        ("seed_string", {**base, "seed": "lucky"}, "seed"),
        ("strategy_unknown", {**base, "strategy": "wizardry@3"}, "strategy"),
        ("strategy_k_over_cap", {**base, "model": "selfimprove:self_consistency@999"}, "max_n"),
        ("logit_bias_list", {**base, "logit_bias": [1, 2]}, "logit_bias"),
        ("tools_given", {**base, "tools": [{"type": "function"}]}, "tools"),
    ]


def generate(rng: random.Random, max_request_bytes: int) -> list[HttpCase]:
    """Every kind once: bodies that are not a JSON object, every field wrong, unknown models, paths and
    methods, a body over ``max_request_bytes``, invalid UTF-8, a missing content type, a disconnect."""
    body = json.dumps(_chat(rng)).encode()
    cases = [
        HttpCase("bad_json", "POST", CHAT, body[: rng.randrange(1, len(body) - 1)], names="JSON"),
        HttpCase("json_array", "POST", CHAT, b"[" + body + b"]", names="object"),
        HttpCase("json_string", "POST", CHAT, json.dumps(body.decode()).encode(), names="object"),
        HttpCase("json_number", "POST", CHAT, b"42", names="object"),
        HttpCase("json_nan_body", "POST", CHAT, b"NaN", names="object"),
        HttpCase("empty_body", "POST", CHAT, b"", names="JSON"),
        HttpCase("invalid_utf8", "POST", CHAT, body.replace(b"What", b"Wh\xff\xfe"), names="JSON"),
        HttpCase("random_bytes", "POST", CHAT, rng.randbytes(rng.randrange(1, 400)), names="JSON"),
    ]
    huge = json.dumps(_chat(rng, padding="x" * (max_request_bytes + 1024))).encode()
    cases.append(
        HttpCase("huge_body", "POST", CHAT, huge, statuses=frozenset({413}), names="max_request_bytes")
    )
    cases.append(
        HttpCase(
            "huge_body_undeclared",
            "POST",
            CHAT,
            huge,
            headers={**JSON_TYPE, "transfer-encoding": "chunked"},
            statuses=frozenset({413}),
            names="max_request_bytes",
        )
    )
    for kind, chat, name in _field_cases(rng):
        cases.append(HttpCase(kind, "POST", CHAT, json.dumps(chat).encode(), names=name))
    nan = json.dumps(_chat(rng, temperature=0)).replace('"temperature": 0', '"temperature": NaN')
    cases.append(HttpCase("temperature_nan", "POST", CHAT, nan.encode(), names="temperature"))
    inf = json.dumps(_chat(rng, temperature=0)).replace('"temperature": 0', '"temperature": Infinity')
    cases.append(HttpCase("temperature_inf", "POST", CHAT, inf.encode(), names="temperature"))
    unknown = rng.choice(["gpt-4o", "selfimprove:", "selfimprove:wizardry@2", "", "../etc/passwd"])
    cases.append(
        HttpCase(
            "unknown_model",
            "POST",
            CHAT,
            json.dumps(_chat(rng, model=unknown)).encode(),
            statuses=frozenset({404}),
            names="model",
        )
    )
    completion = {"model": "selfimprove", "prompt": [1, 2, 3], "max_tokens": 4}
    cases.append(
        HttpCase("completion_token_ids", "POST", COMPLETIONS, json.dumps(completion).encode(), names="prompt")
    )
    completion = {"model": "selfimprove", "prompt": {"text": "hi"}}
    cases.append(
        HttpCase(
            "completion_prompt_object", "POST", COMPLETIONS, json.dumps(completion).encode(), names="prompt"
        )
    )
    path = rng.choice(["/v1/nothing", "/v2/chat/completions", "/v1/chat/completions/x", "/../../etc/passwd"])
    cases.append(HttpCase("unknown_path", "POST", path, body, statuses=frozenset({404}), names="Not Found"))
    method = rng.choice(["GET", "PUT", "DELETE", "PATCH"])
    cases.append(
        HttpCase("wrong_method", method, CHAT, body, statuses=frozenset({405}), names="Method Not Allowed")
    )
    # Accepted as JSON: OpenAI clients always send the header, and curl users often forget it.
    cases.append(
        HttpCase(
            "missing_content_type",
            "POST",
            CHAT,
            json.dumps(_chat(rng, max_tokens=4)).encode(),
            headers={},
            statuses=frozenset(),
        )
    )
    cases.append(HttpCase("disconnect_mid_body", "POST", CHAT, body, statuses=frozenset(), disconnect=True))
    return cases
