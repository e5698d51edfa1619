"""One request's answer, whatever the transport: the limits, then the strategy on the served model.

The gRPC servicer (``server``) and the OpenAI-compatible HTTP API (``http_api``) both go through
:func:`plan` and :func:`answer`, so they refuse the same requests with the same messages, sample
with the same defaults and count the same tokens. :func:`plan` runs on the event loop (it only
tokenizes); :func:`answer` runs the model and belongs on the compute thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from selfimprove.refinement.limits import Limits
from selfimprove.refinement.served import Served
from selfimprove.runtime import strategies
from selfimprove.runtime.engine import Prompt, to_messages


@dataclass(frozen=True)
class Ask:
    """What a request asks for; ``None`` (or an empty strategy) takes the server's default."""

    prompt: Prompt
    strategy: str = ""
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Plan:
    """An admitted request: the snapshot it runs on to the end, its strategy and sampling."""

    served: Served
    prompt: Prompt
    spec: strategies.Spec
    settings: strategies.Settings
    prompt_tokens: int


@dataclass(frozen=True)
class Reply:
    text: str
    answer: str
    strategy: str
    model_version: str
    prompt_tokens: int
    completion_tokens: int  # generated over every engine call of the strategy
    seconds: float  # the strategy's own time (not the queue before it)
    hit_length: bool  # greedy only: the reply stopped at the token limit


def prompt_text(prompt: Prompt) -> str:
    """The text a prompt's length limit counts: a chat's message contents, one per line.

    >>> prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"}])
    'Be brief.\\n2+3?'
    """
    return "\n".join(m["content"] for m in to_messages(prompt))


def plan(served: Served, ask: Ask, limits: Limits, sampling: strategies.Settings) -> Plan:
    """Admit ``ask`` against ``limits`` on ``served``; raises ``ValueError`` (a ``LimitError`` for a
    limit) with a message naming what was wrong."""
    spec = strategies.parse(ask.strategy or served.strategy, serving=True)
    max_new = ask.max_new_tokens or sampling.max_new_tokens
    temperature = sampling.temperature if ask.temperature is None else ask.temperature
    limits.check(prompt_text(ask.prompt), max_new, spec.k, temperature)
    top_p = sampling.top_p if ask.top_p is None else ask.top_p
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p} is outside (0, 1]")
    counted = served.engine.count_tokens(ask.prompt)
    if counted is not None:
        limits.check_tokens(counted)
    settings = strategies.Settings(temperature, top_p, max_new, ask.seed)
    return Plan(served, ask.prompt, spec, settings, counted or 0)


def answer(p: Plan) -> Reply:
    """Run the plan's strategy on its model (blocking: call it on the compute thread)."""
    start = time.perf_counter()
    done = strategies.run(p.served.engine, p.spec, [p.prompt], p.served.extract, p.settings)
    [a] = done.answers
    return Reply(
        text=a.text,
        answer=a.answer or "",
        strategy=p.spec.name,
        model_version=p.served.version,
        prompt_tokens=p.prompt_tokens,
        completion_tokens=done.tokens,
        seconds=time.perf_counter() - start,
        hit_length=p.spec.kind == "greedy" and a.tokens >= p.settings.max_new_tokens,
    )
