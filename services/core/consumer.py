"""The consume loop every service runs: decode, deduplicate, handle, publish, then commit.

Commit policy: the input's offset is committed only after the handler returned and every event it
produced was acknowledged by the broker, and its event id was recorded as handled. So a crash at
any point redelivers the input, and the repeat is recognised by its event id.

Long handlers (an hour of training) keep their partitions: the loop pauses its partitions, runs the
handler in a task and keeps polling, so the member stays alive in its group; if a rebalance revokes
the partition meanwhile, the revocation waits for the handler and commits first, so no second
replica is handed the same message.

Anything that cannot be decoded, or whose handler fails (after ``handler_attempts`` tries for
``RetryableError``), goes to ``<topic>.dlq`` with the error in headers; the loop keeps going.
An outage of the object store (``StoreUnavailableError``) is no fault of the message: the handler
is tried again, with backoff, for as long as the outage lasts, and the input is neither
dead-lettered nor committed before its outputs are written (see :func:`on_handler_error`).
Handlers are pure: ``async (Envelope) -> list[Outgoing]``; they never see aiokafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from selfimprove.core import envelope as envelopes
from selfimprove.core.assignor import MetadataGaps, watched_round_robin
from selfimprove.core.bus import Bus
from selfimprove.core.dedup import Dedup
from selfimprove.core.kafka_config import client_kwargs
from selfimprove.core.logs import fields
from selfimprove.core.outgoing import Outgoing
from selfimprove.core.retry import RetryableError, backoff_delays, retrying
from selfimprove.core.storeerrors import StoreUnavailableError
from selfimprove.core.topics import Topics
from selfimprove.v2.envelope_pb2 import Envelope

log = logging.getLogger(__name__)
Handler = Callable[[Envelope], Awaitable[Sequence[Outgoing]]]
MAX_ERROR_HEADER = 2000
WAIT, RETRY, DEAD_LETTER = "wait", "retry", "dead-letter"


def on_handler_error(exc: BaseException, attempt: int, attempts: int) -> str:
    """What the consumer does after its handler raised ``exc`` on try ``attempt`` of ``attempts``:
    ``wait`` out an outage of the object store (no limit: dead-lettering would commit an input whose
    outputs were never written), ``retry`` a transient error until ``attempts`` tries are spent, and
    ``dead-letter`` the rest.

    >>> on_handler_error(StoreUnavailableError("down"), 99, 3)
    'wait'
    >>> on_handler_error(RetryableError("busy"), 2, 3), on_handler_error(RetryableError("busy"), 3, 3)
    ('retry', 'dead-letter')
    >>> on_handler_error(ValueError("bad command"), 1, 3)
    'dead-letter'
    """
    if isinstance(exc, StoreUnavailableError):
        return WAIT
    if isinstance(exc, (RetryableError, KafkaError)):
        return RETRY if attempt < attempts else DEAD_LETTER
    return DEAD_LETTER


@dataclass
class _InFlight:
    tp: TopicPartition
    offset: int
    task: asyncio.Task[None]
    committed: bool = False


class Consumer:
    """Consumes ``topics`` in consumer group ``group`` and calls ``handler`` once per new event."""

    def __init__(
        self,
        bus: Bus,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        dedup: Dedup,
        *,
        handler_attempts: int = 3,
        max_handler_seconds: float = 3600.0,
        shutdown_grace_s: float = 5.0,
        poll_ms: int = 200,
    ) -> None:
        self.bus = bus
        self.topics = list(topics)
        self.group = group
        self.handler = handler
        self.dedup = dedup
        self.handler_attempts = handler_attempts
        self.max_handler_seconds = max_handler_seconds
        self.shutdown_grace_s = shutdown_grace_s
        self.poll_ms = poll_ms
        self.metrics = bus.metrics
        self._consumer: AIOKafkaConsumer | None = None
        self._inflight: _InFlight | None = None
        self.assigned = asyncio.Event()
        self.gaps = MetadataGaps()  # topics this member, as the group's leader, could not assign

    # -- loop -----------------------------------------------------------------------------------

    def client_options(self) -> dict[str, Any]:
        """The aiokafka consumer's options: the bus settings (every timing from them, the fetch wait
        included), manual commits, and this consumer's group."""
        settings = self.bus.settings
        return {
            **client_kwargs(settings),
            "group_id": self.group,
            "partition_assignment_strategy": (watched_round_robin(self.gaps),),
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_interval_ms": settings.max_poll_interval_ms,
            "session_timeout_ms": settings.session_timeout_ms,
            "heartbeat_interval_ms": max(1000, settings.session_timeout_ms // 3),
            "rebalance_timeout_ms": int(self.max_handler_seconds * 1000),
            "fetch_max_bytes": 64 * 1024 * 1024,
            "fetch_max_wait_ms": settings.fetch_max_wait_ms,
            "max_partition_fetch_bytes": 16 * 1024 * 1024,
            # A group joined while the broker could not describe a topic (Tansu during an object-store
            # outage) is assigned none of its partitions; the next metadata refresh that shows them
            # makes the group rejoin. Refresh every 30 s instead of aiokafka's 5 minutes, so such a
            # consumer takes its partitions back well within a stage's timeout.
            "metadata_max_age_ms": 30_000,
        }

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(**self.client_options())
        consumer.subscribe(self.topics, listener=_Listener(self))
        self._consumer = consumer
        stopping = asyncio.create_task(stop.wait())
        try:
            # Joining a group takes seconds (the broker waits for other members): stay stoppable.
            start = asyncio.create_task(
                retrying(consumer.start, retry_on=(KafkaError, OSError), what="consumer start", attempts=30)
            )
            await asyncio.wait({start, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not start.done():
                start.cancel()
                with contextlib.suppress(asyncio.CancelledError, KafkaError):
                    await start
                return
            start.result()
            watch = AssignmentWatch()
            while not stop.is_set():
                # A poll can block while the group (re)balances: never let it delay a shutdown.
                poll = asyncio.create_task(consumer.getmany(timeout_ms=self.poll_ms, max_records=1))
                await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not poll.done():
                    poll.cancel()
                    with contextlib.suppress(asyncio.CancelledError, KafkaError):
                        await poll
                    break
                try:
                    batch = poll.result()
                except KafkaError as exc:
                    log.warning("poll failed (%s), retrying", exc)
                    if self.metrics:
                        self.metrics.broker_retries.labels("poll").inc()
                    await asyncio.sleep(0.5)
                    continue
                for tp, records in batch.items():
                    for record in records:
                        await self._dispatch(consumer, tp, record, stop)
                missing = self.gaps.filled(consumer.partitions_for_topic)
                if missing:
                    log.warning("the group was assigned while %s had no partitions: rejoining", missing)
                    self._rejoin(consumer)
                    continue
                known = any(consumer.partitions_for_topic(t) for t in self.topics)
                if watch.stale(bool(consumer.assignment()), known, time.monotonic()):
                    log.warning(
                        "no partition of %s assigned for %.0f s: rejoining the group",
                        self.topics,
                        watch.grace_s,
                    )
                    self._rejoin(consumer)
        finally:
            stopping.cancel()
            self._consumer = None
            await consumer.stop()

    def _rejoin(self, consumer: AIOKafkaConsumer) -> None:
        if self.metrics:
            self.metrics.rejoins.labels(self.group).inc()
        consumer.unsubscribe()
        consumer.subscribe(self.topics, listener=_Listener(self))

    async def _dispatch(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, record, stop: asyncio.Event
    ) -> None:
        task = asyncio.create_task(self._process(tp, record))
        inflight = self._inflight = _InFlight(tp, record.offset, task)
        stopping = asyncio.create_task(stop.wait())
        try:
            # Most handlers finish quickly; only a slow one needs its partitions paused.
            await asyncio.wait({task}, timeout=self.poll_ms / 1000)
            if not task.done():
                consumer.pause(*consumer.assignment())
            while not task.done():
                await asyncio.wait(
                    {task, stopping}, timeout=self.poll_ms / 1000, return_when=asyncio.FIRST_COMPLETED
                )
                if stop.is_set() and not task.done():
                    await asyncio.wait({task}, timeout=self.shutdown_grace_s)
                    if not task.done():
                        log.warning("shutting down: abandoning %s@%d uncommitted", tp, record.offset)
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                        return
                # Paused: returns nothing, but keeps this member alive past max_poll_interval.
                with contextlib.suppress(KafkaError):
                    await consumer.getmany(timeout_ms=0)
            task.result()
            if not inflight.committed:
                await self._commit(consumer, tp, record.offset)
                inflight.committed = True
            if self.metrics and tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is not None:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - record.offset - 1))
        finally:
            stopping.cancel()
            self._inflight = None
            if consumer.paused():
                with contextlib.suppress(IllegalStateError):
                    consumer.resume(*consumer.paused())

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await retrying(
                lambda: consumer.commit({tp: offset + 1}),
                retry_on=(KafkaError,),
                what=f"commit {tp.topic}/{tp.partition}@{offset}",
                attempts=5,
            )
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # The partition moved to another member: it will redeliver, and dedup drops the repeat.
            log.warning("commit of %s@%d failed: %s", tp, offset, exc)

    # -- one message ----------------------------------------------------------------------------

    async def _process(self, tp: TopicPartition, record) -> None:
        topic = tp.topic
        started = time.monotonic()
        try:
            env = envelopes.decode(record.value)
        except envelopes.EnvelopeError as exc:
            await self._dead_letter(record, exc, "decode")
            return
        if await retrying(lambda: self.dedup.seen(env.event_id), retry_on=(Exception,), what="dedup check"):
            log.info("duplicate %s ignored", env.event_id, extra=fields(event_id=env.event_id, topic=topic))
            self._count(topic, "duplicate")
            return
        outgoing = await self._handle(env, record)
        if outgoing is None:
            return
        stamped = [
            replace(out, envelope=_stamp(out.envelope, env, out.topic, i)) for i, out in enumerate(outgoing)
        ]
        await self.bus.publish_all(stamped)
        await retrying(lambda: self.dedup.mark(env.event_id), retry_on=(Exception,), what="dedup mark")
        self._count(topic, "handled")
        if self.metrics:
            self.metrics.handler_seconds.labels(topic).observe(time.monotonic() - started)

    async def _handle(self, env: Envelope, record) -> Sequence[Outgoing] | None:
        delays = backoff_delays(base=0.5, cap=30)
        outage = backoff_delays(base=1.0, cap=15)
        attempt = 1
        while True:
            try:
                return await self.handler(env)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                step = on_handler_error(exc, attempt, self.handler_attempts)
                if step == DEAD_LETTER:
                    if not isinstance(exc, (RetryableError, KafkaError)):
                        log.exception(
                            "handler failed", extra=fields(event_id=env.event_id, run_id=env.run_id)
                        )
                    await self._dead_letter(record, exc, "handler", env)
                    return None
                self._count(record.topic, "retry")
                if step == WAIT:
                    log.warning(
                        "object store unavailable, %s@%d waits: %s",
                        record.topic,
                        record.offset,
                        exc,
                        extra=fields(event_id=env.event_id),
                    )
                    await asyncio.sleep(next(outage))
                    continue
                log.warning(
                    "handler attempt %d failed: %s", attempt, exc, extra=fields(event_id=env.event_id)
                )
                attempt += 1
                await asyncio.sleep(next(delays))

    async def _dead_letter(
        self, record, exc: BaseException, reason: str, env: Envelope | None = None
    ) -> None:
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:MAX_ERROR_HEADER]
        headers = [
            ("x-error", error.encode()),
            ("x-error-type", type(exc).__name__.encode()),
            ("x-reason", reason.encode()),
            ("x-original-topic", record.topic.encode()),
            ("x-original-partition", str(record.partition).encode()),
            ("x-original-offset", str(record.offset).encode()),
            ("x-consumer-group", self.group.encode()),
            ("x-failed-at", str(time.time()).encode()),
        ]
        if env is not None:
            headers.append(("x-event-id", env.event_id.encode()))
        await self.bus.send_raw(Topics.dlq(record.topic), record.value, key=record.key, headers=headers)
        log.error("dead-lettered %s@%d: %s", record.topic, record.offset, error)
        self._count(record.topic, "dlq")
        if self.metrics:
            self.metrics.dlq.labels(record.topic, reason).inc()

    def _count(self, topic: str, outcome: str) -> None:
        if self.metrics:
            self.metrics.consumed.labels(topic, outcome).inc()


def _stamp(out: Envelope, cause: Envelope, topic: str, index: int) -> Envelope:
    """Give a produced event a stable id derived from its cause, so a re-run handler repeats it exactly."""
    stamped = Envelope()
    stamped.CopyFrom(out)
    stamped.event_id = envelopes.derived_event_id(cause.event_id, topic, index)
    stamped.causation_id = stamped.causation_id or cause.event_id
    return stamped


@dataclass
class AssignmentWatch:
    """Notices a consumer left without partitions. A group joined while the broker could not describe
    its topics (Tansu during an object-store outage) assigns none of them, and a member that is not the
    group's leader never rejoins by itself; a member with no partition for ``grace_s`` while the topics
    do have partitions rejoins. (More members than partitions is the one legitimate case: such a
    member rejoins once per ``grace_s``, a cheap rebalance.)

    >>> watch = AssignmentWatch(grace_s=60)
    >>> [watch.stale(False, True, t) for t in (0, 30, 61)], watch.stale(False, True, 62)
    ([False, False, True], False)
    >>> watch.stale(True, True, 200), watch.stale(False, False, 300), watch.stale(False, True, 301)
    (False, False, False)
    """

    grace_s: float = 60.0
    since: float | None = None

    def stale(self, assigned: bool, partitions_known: bool, now: float) -> bool:
        if assigned or not partitions_known:
            self.since = None
            return False
        if self.since is None:
            self.since = now
            return False
        if now - self.since >= self.grace_s:
            self.since = None
            return True
        return False


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: Consumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked) -> None:
        inflight = self.owner._inflight
        consumer = self.owner._consumer
        if inflight is None or consumer is None or inflight.tp not in revoked:
            return
        # Finish the message and commit before the partition can move to another member.
        log.info(
            "rebalance: waiting for the handler of %s@%d before giving it up", inflight.tp, inflight.offset
        )
        await asyncio.wait({inflight.task})
        if not inflight.task.cancelled() and inflight.task.exception() is None and not inflight.committed:
            await self.owner._commit(consumer, inflight.tp, inflight.offset)
            inflight.committed = True

    async def on_partitions_assigned(self, assigned) -> None:
        consumer = self.owner._consumer
        if consumer is not None and self.owner._inflight is not None:
            consumer.pause(*assigned)
        if assigned:
            self.owner.assigned.set()
