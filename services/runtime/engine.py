"""The inference engine interface every service codes against, and the factory that picks a backend.

A :class:`GenerationRequest` holds prompts (chat message lists, or plain strings taken as one user
message) and :class:`SamplingParams`; an engine returns one :class:`PromptResult` per prompt, in
order, each with ``n`` samples. Backends: ``"transformers"`` (CPU default, :mod:`.hf_engine`) and
``"vllm"`` (GPU, :mod:`.vllm_engine`, an optional extra imported only when chosen).

    engine = make_engine("transformers", base="smollm2-135m-instruct", threads=2)
    [result] = engine.generate(GenerationRequest(["What is 48 + 27?"], SamplingParams()))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

Message = dict[str, str]
Prompt = str | Sequence[Message]
FinishReason = Literal["stop", "length"]
BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` is greedy decoding.

    ``stop`` strings end a sample and are cut from its text; the end-of-turn token always ends one.
    ``seed`` makes a request reproducible on the same backend and batch layout.
    ``logprobs`` asks for each generated token's log-probability under the model (before
    temperature and top-p).
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError("n and max_new_tokens must be at least 1")
        # Written so that NaN fails too (every comparison with NaN is false).
        if not (0 <= self.temperature < math.inf) or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be a finite number >= 0 and top_p in (0, 1]")


@dataclass(frozen=True)
class GenerationRequest:
    """Prompts and how to sample them. ``on_done``, when given, is told how many more prompts have
    all their samples finished, as they finish (for progress display; an engine that cannot tell
    reports nothing and its caller counts the whole request when it returns)."""

    prompts: Sequence[Prompt]
    params: SamplingParams = field(default_factory=SamplingParams)
    on_done: Callable[[int], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Sample:
    """One generated answer. ``tokens`` counts generated tokens up to and including the one that
    ended it (end-of-turn or the end of a stop string), never padding."""

    text: str
    tokens: int
    finish_reason: FinishReason
    logprobs: tuple[float, ...] | None = None


@dataclass(frozen=True)
class PromptResult:
    samples: tuple[Sample, ...]
    prompt_tokens: int

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.samples]


class Engine(Protocol):
    """What services call; both backends implement it."""

    def generate(self, request: GenerationRequest) -> list[PromptResult]: ...


def to_messages(prompt: Prompt) -> list[Message]:
    """Chat messages for a prompt: a plain string becomes one user message.

    >>> to_messages("What is 2 + 3?")
    [{'role': 'user', 'content': 'What is 2 + 3?'}]
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def useful_tokens(results: Sequence[PromptResult]) -> int:
    """Generated tokens over all samples (what tokens/s figures count)."""
    return sum(s.tokens for r in results for s in r.samples)


def make_engine(
    backend: str = "transformers",
    base: str = "smollm2-135m-instruct",
    adapters: Sequence[str | Path] = (),
    **options,
) -> Engine:
    """Build the engine named by ``backend``; ``options`` go to that backend's ``load``."""
    if backend == "transformers":
        from selfimprove.runtime.hf_engine import TransformersEngine

        return TransformersEngine.load(base, adapters, **options)
    if backend == "vllm":
        from selfimprove.runtime.vllm_engine import VLLMEngine

        return VLLMEngine.load(base, adapters, **options)
    raise ValueError(f"unknown engine backend {backend!r}; choose one of {', '.join(BACKENDS)}")
