"""Retry with exponential backoff and jitter, for broker and store operations."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class RetryableError(Exception):
    """Raised by a handler for a transient failure: the message is retried, then dead-lettered."""


def backoff_delays(base: float = 0.1, cap: float = 5.0, rng: random.Random | None = None):
    """Endless delays: ``base * 2**n`` capped at ``cap``, with full jitter in the upper half.

    >>> d = backoff_delays(0.1, 1.0, random.Random(0))
    >>> all(0.05 <= next(d) <= 1.0 for _ in range(20))
    True
    """
    rng = rng or random.Random()
    n = 0
    while True:
        step = min(cap, base * 2**n)
        yield step / 2 + rng.random() * step / 2
        n += 1


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    what: str,
    attempts: int | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Await ``operation()`` until it succeeds, retrying ``retry_on`` errors (forever if attempts is None)."""
    delays = backoff_delays()
    tried = 0
    while True:
        try:
            return await operation()
        except retry_on as exc:
            tried += 1
            if attempts is not None and tried >= attempts:
                raise
            delay = next(delays)
            log.warning("%s failed (%s: %s), retry %d in %.2fs", what, type(exc).__name__, exc, tried, delay)
            if on_retry:
                on_retry()
            await asyncio.sleep(delay)
