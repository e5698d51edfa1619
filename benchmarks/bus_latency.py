"""Bus benchmark on the local stack: envelope publish-to-handle latency and messages per second.

Starts its own Tansu + SeaweedFS on loopback, then measures through the real consume loop
(decode, dedup in the object store, handler, commit):

  latency     N envelopes sent one at a time, each time from just before ``publish`` to the handler
  throughput  N envelopes published back to back; rate of publishing, and of handling all of them

Run: ``.venv/bin/python benchmarks/bus_latency.py [--messages 300]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.core.consumer import Consumer
from selfimprove.core.dedup import MemoryDedup, ObjectStoreDedup
from selfimprove.core.settings import KafkaSettings, StoreSettings
from selfimprove.core.stack import LocalStack
from selfimprove.core.store import ArtifactStore
from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.stages_pb2 import Decision


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def scenario(
    stack: LocalStack, name: str, messages: int, durable_dedup: bool, fetch_wait_ms: int
) -> dict[str, float]:
    settings = KafkaSettings(
        bootstrap_servers=stack.kafka_bootstrap,
        topic_prefix=name,
        session_timeout_ms=6000,
        fetch_max_wait_ms=fetch_wait_ms,
    )
    store = ArtifactStore.from_settings(
        StoreSettings(endpoint=stack.s3_endpoint, access_key=stack.access_key, secret_key=stack.secret_key)
    )
    topic = f"{name}.bench"
    sent_at: dict[str, float] = {}
    handled_at: dict[str, float] = {}

    async def handle(env):
        handled_at[env.event_id] = time.perf_counter()
        return []

    bus = await Bus(settings).start()
    await bus.ensure_topics([topic], partitions=1)
    dedup = ObjectStoreDedup(store, name) if durable_dedup else MemoryDedup()
    consumer = Consumer(bus, [topic], name, handle, dedup, poll_ms=50)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await consumer.assigned.wait()

    def envelope(i: int):
        return envelopes.make(
            run_id="bench",
            iteration=i,
            stage=Stage.STAGE_CONTROL,
            producer="bench",
            decision=Decision(reason="x" * 200),
        )

    async def wait_for(count: int) -> None:
        while len(handled_at) < count:
            await asyncio.sleep(0.001)

    for i in range(messages):  # latency: one in flight at a time
        env = envelope(i)
        sent_at[env.event_id] = time.perf_counter()
        await bus.publish(topic, env)
        await wait_for(i + 1)
    latencies = [(handled_at[k] - sent_at[k]) * 1000 for k in sent_at]

    handled_at.clear()
    start = time.perf_counter()
    for i in range(messages):  # throughput: back to back
        await bus.publish(topic, envelope(i))
    published = time.perf_counter() - start
    await wait_for(messages)
    drained = time.perf_counter() - start
    stop.set()
    await task
    await bus.stop()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "publish_per_s": messages / published,
        "handle_per_s": messages / drained,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        nargs="+",
        default=[KafkaSettings().fetch_max_wait_ms],
        help="broker fetch waits to compare (the services' default first)",
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    waits = " ".join(map(str, args.fetch_wait_ms))
    print(f"command: python benchmarks/bus_latency.py --messages {args.messages} --fetch-wait-ms {waits}")
    with LocalStack() as stack:
        print(f"{'dedup':<14}{'wait ms':>8}{'p50 ms':>9}{'p99 ms':>9}{'publish/s':>11}{'handled/s':>11}")
        for label, durable in (("object store", True), ("memory", False)):
            for wait in args.fetch_wait_ms:
                name = f"bench{int(durable)}w{wait}t{int(time.time())}"
                r = await scenario(stack, name, args.messages, durable, wait)
                print(
                    f"{label:<14}{wait:>8}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
                    f"{r['publish_per_s']:>11.0f}{r['handle_per_s']:>11.0f}"
                )


if __name__ == "__main__":
    asyncio.run(main())
