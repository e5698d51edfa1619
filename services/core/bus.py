"""Publishing envelopes to the bus, and creating topics (aiokafka; Tansu locally, Kafka deployed).

Delivery is at least once: every send waits for ``acks=all`` and is retried with backoff on broker
errors. Idempotent and transactional producers are not used (Tansu rejects them); consumers
deduplicate by event id instead (see ``consumer.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from selfimprove.core import envelope as envelopes
from selfimprove.core.kafka_config import client_kwargs
from selfimprove.core.metrics import Metrics
from selfimprove.core.outgoing import Outgoing
from selfimprove.core.retry import retrying
from selfimprove.core.settings import KafkaSettings
from selfimprove.core.topics import Topics
from selfimprove.v2.envelope_pb2 import Envelope

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class Bus:
    """A producer plus topic administration for one process."""

    def __init__(self, settings: KafkaSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.metrics = metrics
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> Bus:
        async def connect() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(
                **client_kwargs(self.settings),
                acks="all",
                enable_idempotence=False,
                linger_ms=0,
                max_request_size=MAX_MESSAGE_BYTES,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            return producer

        self._producer = await retrying(
            connect, retry_on=(KafkaError, OSError), what="producer start", attempts=30
        )
        return self

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> Bus:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        spread: int | None = None,
    ) -> None:
        """Send bytes and wait for the broker's acknowledgement, retrying broker errors."""
        if self._producer is None:
            raise RuntimeError("Bus.start() was not awaited")
        producer = self._producer

        async def send() -> None:
            partition = None
            if spread is not None:
                partitions = sorted(await producer.partitions_for(topic))
                partition = partitions[spread % len(partitions)]
            await producer.send_and_wait(topic, value, key=key, partition=partition, headers=list(headers))

        def count_retry() -> None:
            if self.metrics:
                self.metrics.broker_retries.labels("publish").inc()

        await retrying(send, retry_on=(KafkaError,), what=f"publish to {topic}", on_retry=count_retry)
        if self.metrics:
            self.metrics.published.labels(topic).inc()

    async def publish(self, topic: str, env: Envelope, key: str = "", spread: int | None = None) -> None:
        """Publish one envelope; the run id is the default key so a run's events stay in order
        (``spread``: see :class:`Outgoing`)."""
        data = envelopes.encode(env)
        if len(data) > MAX_MESSAGE_BYTES:
            raise ValueError(
                f"envelope {env.event_id} is {len(data)} bytes: large data belongs in the artifact store"
            )
        await self.send_raw(topic, data, key=(key or env.run_id).encode(), spread=spread)

    async def publish_all(self, outgoing: Iterable[Outgoing]) -> None:
        for out in outgoing:
            await self.publish(out.topic, out.envelope, out.key, out.spread)

    async def ensure_topics(
        self, names: Iterable[str], partitions: int | None = None, dlq: bool = True
    ) -> None:
        """Create topics (and their ``.dlq`` twins) that do not exist yet."""
        wanted = list(dict.fromkeys(names))
        if dlq:
            wanted += [Topics.dlq(n) for n in wanted if not n.endswith(".dlq")]
        await create_missing_topics(self.settings, {n: {} for n in wanted}, partitions)


async def create_missing_topics(
    settings: KafkaSettings, configs: Mapping[str, Mapping[str, str]], partitions: int | None = None
) -> list[str]:
    """Create each topic of ``configs`` (name -> topic configs, e.g. ``retention.ms``) that does not
    exist yet, with ``partitions`` (default: the settings') and the settings' replication; return the
    names created. Waits for the broker, which may start after the caller."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await retrying(admin.start, retry_on=(KafkaError, OSError), what="admin start", attempts=30)
    try:
        # Retried: a broker whose storage (Tansu's object store) just came back answers slowly.
        listed = await retrying(
            admin.list_topics, retry_on=(KafkaError, OSError), what="list topics", attempts=30
        )
        existing = set(listed)
        new = [
            NewTopic(n, partitions or settings.partitions, settings.replication_factor, topic_configs=dict(c))
            for n, c in configs.items()
            if n not in existing
        ]

        async def create() -> None:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)

        if new:
            await retrying(create, retry_on=(KafkaError, OSError), what="create topics", attempts=30)
            log.info("created topics %s", [t.name for t in new])
        return [t.name for t in new]
    finally:
        await admin.close()
