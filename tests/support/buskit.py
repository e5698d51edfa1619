"""Helpers for bus tests: settings for the local stack, reading a topic, service processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from selfimprove.core.procs import Proc, free_ports
from selfimprove.core.settings import KafkaSettings, StoreSettings
from selfimprove.core.store import ArtifactStore

HERE = Path(__file__).parent


def kafka_settings(stack, prefix: str, **overrides) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=stack.kafka_bootstrap, topic_prefix=prefix, partitions=1, **overrides
    )


def artifact_store(stack) -> ArtifactStore:
    store = ArtifactStore.from_settings(
        StoreSettings(
            endpoint=stack.s3_endpoint,
            access_key=stack.access_key,
            secret_key=stack.secret_key,
            bucket=stack.bucket,
        )
    )
    store.ensure_bucket()
    return store


def is_progress(record) -> bool:
    """Whether a record is a stage's progress report (advisory; it shares the result topics)."""
    from selfimprove.core import envelope as envelopes

    try:
        return envelopes.decode(record.value).WhichOneof("payload") == "stage_progress"
    except Exception:  # noqa: BLE001 (not an envelope: a record of its own kind)
        return False


async def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 20.0, progress: bool = False):
    """Every record of ``topic`` from the start, waiting until ``expect`` arrived or ``timeout``;
    stage progress reports are left out unless ``progress``."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    records = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(records) < expect:
            batch = await consumer.getmany(timeout_ms=300)
            for recs in batch.values():
                records.extend(r for r in recs if progress or not is_progress(r))
    finally:
        await consumer.stop()
    return records


def run_events(bootstrap: str, topics: list[str], run_id: str) -> dict[str, list]:
    """The envelopes of one run on each of ``topics`` (progress reports left out, as by
    :func:`read_topic`), read from the start."""
    from selfimprove.core import envelope as envelopes

    async def go() -> dict[str, list]:
        out = {}
        for topic in topics:
            records = await read_topic(bootstrap, topic, expect=10_000, timeout=3)
            out[topic] = [e for e in (envelopes.decode(r.value) for r in records) if e.run_id == run_id]
        return out

    return asyncio.run(go())


def free_port() -> int:
    return free_ports(1)[0]


class ServiceProcess:
    """A service started as its own process with the stack's environment (through ``core.procs.Proc``,
    so it dies with the test process even when that is killed)."""

    def __init__(self, script: str, stack, prefix: str, log: Path, **env: str) -> None:
        self.port = free_port()
        full = {
            **os.environ,
            **stack.env(),
            "SELFIMPROVE_KAFKA_TOPIC_PREFIX": prefix,
            "SELFIMPROVE_METRICS_PORT": str(self.port),
            **env,
        }
        self.log = log
        # A script beside this file, or a module: "-m selfimprove.acquisition".
        command = script.split() if script.startswith("-m ") else [str(HERE / script)]
        child = Proc(log.stem, [sys.executable, *command], log, full)
        child.start()
        assert child.popen is not None
        self.proc = child.popen

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()

    def counter(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            labelled = line.startswith(name + "{")
            plain = line.startswith(name + " ") and not labels
            if (labelled or plain) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"service not ready: {self.log.read_text()[-3000:]}")

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


async def eventually(check, timeout: float = 30.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(every)


def header(record, name: str) -> str:
    return dict(record.headers)[name].decode()
