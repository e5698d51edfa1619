"""Runs a service process: settings, logs, metrics/health server, bus, store, graceful shutdown.

A service module provides ``setup(ctx) -> list[Runnable]`` (consumers, a gRPC server, ...) and calls
``main("name", setup)``. SIGTERM or SIGINT sets the stop event: consumers finish or abandon their
current message without committing it, and the process exits 0. A bad setting exits 2 with a message
naming it; a runnable that crashes stops the others and exits 1. A service that starts while the
object store is down waits for it (a SIGTERM still stops it), instead of exiting and being restarted
in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from selfimprove.core import logs
from selfimprove.core.bus import Bus
from selfimprove.core.consumer import Consumer, Handler
from selfimprove.core.dedup import ObjectStoreDedup
from selfimprove.core.metrics import Metrics, MetricsServer
from selfimprove.core.retry import retrying
from selfimprove.core.settings import KafkaSettings, ServiceSettings, SettingsError, StoreSettings, load
from selfimprove.core.store import ArtifactStore, StoreUnavailableError

log = logging.getLogger(__name__)
Runnable = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
__all__ = ["Context", "Handler", "Runnable", "main", "serve"]


@dataclass
class Context:
    """What a service's setup gets: its settings and the shared clients."""

    service: str
    settings: ServiceSettings
    kafka: KafkaSettings
    metrics: Metrics
    bus: Bus
    store: ArtifactStore

    def consumer(
        self, topics: Sequence[str], handler: Handler, group: str | None = None, **options
    ) -> Consumer:
        """A consumer in the service's group, deduplicating through the artifact store."""
        group = group or f"{self.kafka.topic_prefix}.{self.service}"
        dedup = ObjectStoreDedup(self.store, group)
        consumer = Consumer(self.bus, topics, group, handler, dedup, **options)
        return consumer

    def runnable(self, consumer: Consumer) -> Runnable:
        return consumer.run


def limit_threads(threads: int) -> None:
    """Five torch services and the stack share two cores: cap BLAS and torch threads early."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


async def wait_for_store(store: ArtifactStore, stop: asyncio.Event) -> bool:
    """Ensure the bucket exists, retrying while the store is unavailable; False if ``stop`` came first."""
    ready = asyncio.create_task(
        retrying(
            lambda: asyncio.to_thread(store.ensure_bucket),
            retry_on=(StoreUnavailableError,),
            what="reaching the object store",
        )
    )
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not ready.done():
        ready.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready
        return False
    ready.result()
    return True


async def serve(service: str, setup: Callable[[Context], Awaitable[Sequence[Runnable]]]) -> int:
    settings = load(ServiceSettings)
    kafka = load(KafkaSettings)
    store = ArtifactStore.from_settings(load(StoreSettings))
    metrics = Metrics(service)
    server = MetricsServer(metrics, settings.metrics_host, settings.metrics_port).start()
    metrics.details["metrics_port"] = server.port
    log.info("metrics and health on %s:%d", settings.metrics_host, server.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bus = Bus(kafka, metrics)
    code = 0
    try:
        await bus.start()
        if not await wait_for_store(store, stop):
            return 0
        await bus.ensure_topics(bus.topics.all())
        ctx = Context(service, settings, kafka, metrics, bus, store)
        runnables = await setup(ctx)
        tasks = [asyncio.create_task(r(stop), name=f"{service}-{i}") for i, r in enumerate(runnables)]
        metrics.set_ready(True)
        log.info("%s ready", service)
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stopping}:
            if task.exception() is not None:
                log.error("%s crashed", task.get_name(), exc_info=task.exception())
                code = 1
        stop.set()
        metrics.set_ready(False)
        await asyncio.gather(*tasks, return_exceptions=True)
        stopping.cancel()
    finally:
        await bus.stop()
        server.stop()
    log.info("%s stopped", service)
    return code


def main(service: str, setup: Callable[[Context], Awaitable[Sequence[Runnable]]]) -> None:
    try:
        settings = load(ServiceSettings)
    except SettingsError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    limit_threads(settings.threads)
    logs.setup(service, settings.log_level, settings.log_json)
    try:
        code = asyncio.run(serve(service, setup))
    except SettingsError as exc:
        log.error("%s", exc)
        code = 2
    raise SystemExit(code)
