"""Request limits, as pure checks (the gRPC layer maps the errors; the rate limit is the shared
interceptor of ``selfimprove.core.grpcserve``)."""

from __future__ import annotations

import math
from dataclasses import dataclass


class LimitError(ValueError):
    """A request over a limit; the message names the limit and its value."""


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 4000
    max_prompt_tokens: int = 1024
    max_new_tokens: int = 512
    max_n: int = 16

    def check(self, prompt: str, max_new_tokens: int, k: int, temperature: float = 0.0) -> None:
        """Raise ``LimitError`` naming the first limit ``prompt``/``max_new_tokens``/``k`` break.

        >>> Limits(max_prompt_chars=5).check("What is 2 + 3?", 10, 1)
        Traceback (most recent call last):
        ...
        selfimprove.refinement.limits.LimitError: prompt is 14 characters, over max_prompt_chars=5
        >>> Limits().check("hi", 10, 64)
        Traceback (most recent call last):
        ...
        selfimprove.refinement.limits.LimitError: strategy asks for 64 samples or rounds, over max_n=16

        A temperature must be a finite number in 0..2 (NaN compares false with everything):

        >>> Limits().check("hi", 10, 1, float("nan"))
        Traceback (most recent call last):
        ...
        selfimprove.refinement.limits.LimitError: temperature=nan is not a finite number
        >>> Limits().check("hi", 10, 1, 2.5)
        Traceback (most recent call last):
        ...
        selfimprove.refinement.limits.LimitError: temperature=2.5 is outside 0..2
        """
        if not prompt.strip():
            raise LimitError("prompt is empty")
        if len(prompt) > self.max_prompt_chars:
            raise LimitError(
                f"prompt is {len(prompt)} characters, over max_prompt_chars={self.max_prompt_chars}"
            )
        if max_new_tokens < 0 or max_new_tokens > self.max_new_tokens:
            raise LimitError(
                f"max_new_tokens={max_new_tokens} is outside 0..max_new_tokens={self.max_new_tokens}"
            )
        if k > self.max_n:
            raise LimitError(f"strategy asks for {k} samples or rounds, over max_n={self.max_n}")
        if not math.isfinite(temperature):
            raise LimitError(f"temperature={temperature} is not a finite number")
        if not 0 <= temperature <= 2:
            raise LimitError(f"temperature={temperature} is outside 0..2")

    def check_tokens(self, prompt_tokens: int) -> None:
        if prompt_tokens > self.max_prompt_tokens:
            raise LimitError(
                f"prompt is {prompt_tokens} tokens, over max_prompt_tokens={self.max_prompt_tokens}"
            )
