"""One-shot set-up of a deployment: the artifact bucket, and every topic of the loop with its retention.

Both are idempotent (what exists is kept), so the init jobs of docker-compose and Kubernetes
(``selfimprove init store``, ``selfimprove init topics``) may run on every start. They run our own code
against the configured addresses, so the same commands work on a laptop against the local stack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from minio.error import S3Error
from urllib3.exceptions import HTTPError

from selfimprove.core.bus import create_missing_topics
from selfimprove.core.settings import KafkaSettings, StoreSettings
from selfimprove.core.store import ArtifactStore
from selfimprove.core.topics import Topics

log = logging.getLogger(__name__)
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: its name and ``retention.ms`` (-1 keeps every record)."""

    name: str
    retention_ms: int


def topic_specs(
    topics: Topics,
    retention_ms: int = 7 * DAY_MS,
    dlq_retention_ms: int = 14 * DAY_MS,
    control_retention_ms: int = -1,
) -> list[TopicSpec]:
    """Every topic of the loop and its ``.dlq`` twin. The control topic is the run's own log (the
    evaluator rebuilds its state from it), so it is kept forever by default.

    >>> [s.name for s in topic_specs(Topics("si"))][:2], len(topic_specs(Topics("si")))
    (['si.cmd.acquire', 'si.cmd.acquire.dlq'], 22)
    >>> next(s for s in topic_specs(Topics("si")) if s.name == "si.evt.control").retention_ms
    -1
    >>> topic_specs(Topics("si"), retention_ms=0)
    Traceback (most recent call last):
    ...
    ValueError: retention_ms must be -1 (forever) or a positive number of milliseconds, got 0
    """
    for name, value in (
        ("retention_ms", retention_ms),
        ("dlq_retention_ms", dlq_retention_ms),
        ("control_retention_ms", control_retention_ms),
    ):
        if value != -1 and value <= 0:
            raise ValueError(f"{name} must be -1 (forever) or a positive number of milliseconds, got {value}")
    specs = []
    for name in topics.all():
        keep = control_retention_ms if name == topics.control else retention_ms
        specs += [TopicSpec(name, keep), TopicSpec(Topics.dlq(name), dlq_retention_ms)]
    return specs


async def create_topics(settings: KafkaSettings, specs: list[TopicSpec]) -> list[str]:
    """Create the topics of ``specs`` that do not exist, with their retention (the bus's
    :func:`~selfimprove.core.bus.create_missing_topics`); return the names created."""
    return await create_missing_topics(
        settings, {s.name: {"retention.ms": str(s.retention_ms)} for s in specs}
    )


def create_topics_sync(settings: KafkaSettings, specs: list[TopicSpec]) -> list[str]:
    """:func:`create_topics` for callers without an event loop (the CLI)."""
    return asyncio.run(create_topics(settings, specs))


def create_bucket(settings: StoreSettings, wait_s: float = 120.0) -> bool:
    """Create the artifact bucket unless it exists; True when created. Waits up to ``wait_s`` for the
    store to answer; wrong credentials fail at once (S3 answers, and says why)."""
    store = ArtifactStore.from_settings(settings)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            existed = store.client.bucket_exists(store.bucket)
            break
        except S3Error:
            raise
        except (HTTPError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"object store {settings.endpoint} did not answer within {wait_s:.0f}s: {exc}"
                ) from exc
            log.warning("object store %s not answering yet (%s); retrying", settings.endpoint, exc)
            time.sleep(2.0)
    if not existed:
        store.ensure_bucket()
    return not existed
