"""Shared by the fuzz and chaos suites: the local loop with a fresh topic prefix, metrics, topics.

>>> parse_metrics('selfimprove_x_total{topic="a",outcome="dlq"} 3.0\\nselfimprove_y 1\\n# HELP z')
{('selfimprove_x_total', (('outcome', 'dlq'), ('topic', 'a'))): 3.0, ('selfimprove_y', ()): 1.0}
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from selfimprove.core.local_loop import LocalLoop
from selfimprove.core.procs import free_ports
from selfimprove.core.stack import LocalStack

Metric = dict[tuple[str, tuple[tuple[str, str], ...]], float]
LINE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> Metric:
    out: Metric = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def total(metrics: Metric, name: str, **labels: str) -> float:
    """Sum of ``name`` over the series whose labels include ``labels``."""
    return sum(
        v for (n, ls), v in metrics.items() if n == name and all((k, w) in ls for k, w in labels.items())
    )


def snapshot(loop: LocalLoop) -> dict[str, Metric]:
    """Every live service's metrics (a dead or restarting one is left out)."""
    out = {}
    for name in loop.services:
        with contextlib.suppress(OSError):
            out[name] = parse_metrics(loop.metrics_text(name))
    return out


def make_loop(root: Path, prefix: str | None = None, **env: str) -> tuple[LocalLoop, str]:
    prefix = prefix or "s" + uuid.uuid4().hex[:10]
    refinement_port, evaluator_port = free_ports(2)
    stack = LocalStack(root=root)
    loop = LocalLoop(
        stack,
        env={
            "SELFIMPROVE_KAFKA_TOPIC_PREFIX": prefix,
            "SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000",
            # Free ports (another loop on this machine may hold the defaults), fixed for the loop's
            # life so that a restarted service answers where clients already point.
            "SELFIMPROVE_REFINEMENT_GRPC_PORT": str(refinement_port),
            "SELFIMPROVE_EVALUATOR_GRPC_PORT": str(evaluator_port),
            **env,
        },
    )
    return loop, prefix


def artifact_store(loop: LocalLoop):
    """The run artifacts' store of the loop's stack (as the services see it)."""
    from selfimprove.core.settings import StoreSettings
    from selfimprove.core.store import ArtifactStore

    s = loop.stack
    settings = StoreSettings(
        endpoint=s.s3_endpoint, access_key=s.access_key, secret_key=s.secret_key, bucket=s.bucket
    )
    return ArtifactStore.from_settings(settings)


async def read_all(bootstrap: str, topic: str, idle_s: float = 3.0, timeout_s: float = 300.0) -> list:
    """Every record of ``topic`` (to its end offsets, or until it stays idle for ``idle_s``)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    records: list = []
    try:
        await consumer.topics()
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not parts:
            return []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        start = idle = time.monotonic()
        while time.monotonic() - start < timeout_s and time.monotonic() - idle < idle_s:
            if all([await consumer.position(tp) >= ends[tp] for tp in parts]):
                break
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            if batch:
                idle = time.monotonic()
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


def read_topics(bootstrap: str, topics: list[str]) -> dict[str, list]:
    async def go() -> dict[str, list]:
        return {t: await read_all(bootstrap, t) for t in topics}

    return asyncio.run(go())


def log_tails(logs: Path, lines: int = 8, width: int = 320) -> dict[str, list[str]]:
    """The last ``lines`` warning and error lines of each service log under ``logs`` (what a failed
    suite prints, so a failure on a machine whose files are gone still says what went wrong)."""
    tails: dict[str, list[str]] = {}
    for path in sorted(logs.glob("*.log")):
        picked = [
            line[:width]
            for line in path.read_text(errors="replace").splitlines()
            if '"level": "warning"' in line or '"level": "error"' in line
        ]
        if picked:
            tails[path.stem] = picked[-lines:]
    return tails


def wait_for(check: Callable[[], bool], timeout: float, every: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()
