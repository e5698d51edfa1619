"""A stage's progress while it works, for ``selfimprove run`` and ``selfimprove status``.

A stage's model work runs on the compute thread for minutes (sampling a shard, training, scoring a
dev set). :class:`StageReporter` is handed to that work as a plain callback; it publishes a
``StageProgress`` event on the stage's result topic (caused by the command, so it carries the run,
iteration, stage, shard and attempt) at most once every ``every`` seconds, and always when the work
reaches its total. The controller keeps the latest per shard in memory and shows it in the run
status. Progress is advisory: a failed publish is logged and dropped, never retried, and never
holds up the work.

    report = StageReporter(ctx.bus, cmd, "trainer/x", total=steps, unit="steps")
    await compute.run(lambda: train(..., on_step=lambda step: report.update(step)))
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from selfimprove.core import envelope as envelopes
from selfimprove.core.stage import command_stage
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import StageProgress

log = logging.getLogger(__name__)
EVERY_S = 2.0


class StageReporter:
    """Publishes the progress of the command ``cause``'s work; safe to call from any thread.

    ``publish`` is the bus's ``publish`` coroutine function (a fake in tests); it is scheduled on the
    event loop that created the reporter.
    """

    def __init__(
        self,
        bus: Any,
        cause: Envelope,
        producer: str,
        total: int = 0,
        unit: str = "items",
        every: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus, self.cause, self.producer = bus, cause, producer
        self.topic = bus.topics.result(command_stage(cause))
        self.total, self.unit, self.every, self.clock = total, unit, every, clock
        self.done = 0
        self.sent_at: float | None = None
        self.loop = asyncio.get_running_loop()
        self.lock = threading.Lock()

    def advance(self, k: int = 1) -> None:
        """``k`` more units done."""
        with self.lock:
            self.done += k
            self._maybe_send()

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` units done so far (of ``total``, when it became known)."""
        with self.lock:
            self.done = done
            if total is not None:
                self.total = total
            self._maybe_send()

    def _maybe_send(self) -> None:
        now = self.clock()
        finished = self.total > 0 and self.done >= self.total
        if not finished and self.sent_at is not None and now - self.sent_at < self.every:
            return
        self.sent_at = now
        env = envelopes.caused_by(
            self.cause,
            self.producer,
            stage_progress=StageProgress(done=self.done, total=self.total, unit=self.unit),
        )
        try:
            future = asyncio.run_coroutine_threadsafe(self.bus.publish(self.topic, env), self.loop)
        except RuntimeError as exc:  # the loop is closing: nobody is left to show it
            log.debug("progress not sent: %s", exc)
            return
        future.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("progress event not published (advisory, dropped): %s", exc)
