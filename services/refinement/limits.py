"""Request limits and the per-server rate limit, as pure checks (the gRPC layer maps the errors).

>>> bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
>>> [bucket.take(now=0.0) for _ in range(3)], bucket.take(now=1.0)
([True, True, False], True)
"""

from __future__ import annotations

import threading
import time
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
        if temperature < 0 or temperature > 2:
            raise LimitError(f"temperature={temperature} is outside 0..2")

    def check_tokens(self, prompt_tokens: int) -> None:
        if prompt_tokens > self.max_prompt_tokens:
            raise LimitError(
                f"prompt is {prompt_tokens} tokens, over max_prompt_tokens={self.max_prompt_tokens}"
            )


class TokenBucket:
    """Admits ``rate`` requests per second on average and ``burst`` at once; thread-safe."""

    def __init__(self, rate: float, burst: int, now: float | None = None) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic() if now is None else now
        self._lock = threading.Lock()

    def take(self, now: float | None = None) -> bool:
        with self._lock:
            now = time.monotonic() if now is None else now
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False
