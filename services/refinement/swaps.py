"""Apply only the newest of promotions that arrive close together.

A replica that starts reads the control topic from its beginning (its consumer group is its own, so
that every replica sees every decision): without this it would load every model ever promoted, one
after another, before serving the latest. Here each promotion replaces the pending one, and a model
is loaded only once no newer promotion arrived for ``settle_s``. A promotion that cannot be applied
(its model does not load) is logged and reported to ``on_error``; the old model keeps serving.
A transient failure (``RetryableError``: the object store is down) is no verdict on the model: the
same promotion is offered again after ``retry_s``, unless a newer one arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from selfimprove.core.retry import RetryableError

T = TypeVar("T")
log = logging.getLogger(__name__)


class LatestOnly(Generic[T]):
    """``offer`` items; ``run`` applies the newest one after ``settle_s`` without a newer offer."""

    def __init__(
        self,
        apply: Callable[[T], Awaitable[None]],
        settle_s: float = 0.5,
        on_error: Callable[[T, Exception], None] | None = None,
        retry_s: float = 5.0,
    ) -> None:
        self.apply, self.settle_s, self.on_error = apply, settle_s, on_error
        self.retry_s = retry_s
        self.pending: T | None = None
        self.offered = 0  # offers so far; an offer during the settle time restarts it
        self.wake = asyncio.Event()

    def offer(self, item: T) -> None:
        self.pending = item
        self.offered += 1
        self.wake.set()

    async def settle(self) -> T | None:
        """Wait for an offer and until ``settle_s`` pass without another; take the pending item."""
        await self.wake.wait()
        while True:
            seen = self.offered
            await asyncio.sleep(self.settle_s)
            if self.offered == seen:
                break
        self.wake.clear()
        item, self.pending = self.pending, None
        return item

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiter = asyncio.ensure_future(self.settle())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                waiter.cancel()
                stopper.cancel()
                return
            stopper.cancel()
            item = waiter.result()
            if item is None:
                continue
            try:
                await self.apply(item)
            except RetryableError as exc:
                log.warning("could not apply %r yet (%s): trying again in %.0f s", item, exc, self.retry_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.retry_s)
                if self.pending is None and not stop.is_set():
                    self.offer(item)
            except Exception as exc:  # noqa: BLE001 - a bad promotion must not stop serving
                log.exception("could not apply %r", item)
                if self.on_error is not None:
                    self.on_error(item, exc)
