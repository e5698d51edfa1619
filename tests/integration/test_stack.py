"""The local stack: S3 with credentials only, a broker whose log and offsets survive a restart,
Prometheus on request, and a clean stop."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from minio import Minio
from minio.error import S3Error
from prometheus_client import start_http_server

from selfimprove.core.procs import Proc, ProcessError, free_ports
from selfimprove.core.stack import LocalStack, StackError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_env_names_every_address(stack: LocalStack) -> None:
    env = stack.env()
    assert env["SELFIMPROVE_KAFKA_BOOTSTRAP_SERVERS"] == stack.kafka_bootstrap
    assert env["SELFIMPROVE_S3_ENDPOINT"] == stack.s3_endpoint
    assert env["SELFIMPROVE_S3_BUCKET"] == stack.bucket == "selfimprove"
    host, port = stack.kafka_bootstrap.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert stack.dead() == []


def test_s3_refuses_anonymous_and_accepts_credentials(stack: LocalStack, unique_name: str) -> None:
    anonymous = Minio(stack.s3_endpoint, secure=False)
    with pytest.raises(S3Error):
        anonymous.list_buckets()
    with pytest.raises(S3Error):
        anonymous.put_object(stack.bucket, f"{unique_name}/x", io.BytesIO(b"x"), 1)
    wrong = Minio(stack.s3_endpoint, stack.access_key, "not-the-secret", secure=False)
    with pytest.raises(S3Error):
        wrong.list_buckets()

    client = stack.s3_client()
    assert stack.bucket in {b.name for b in client.list_buckets()}
    client.put_object(stack.bucket, f"{unique_name}/x", io.BytesIO(b"hello"), 5)
    assert client.get_object(stack.bucket, f"{unique_name}/x").read() == b"hello"


async def test_messages_and_committed_offsets_survive_broker_restart(
    stack: LocalStack, unique_name: str
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    tp = TopicPartition(topic, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        first = await producer.send_and_wait(topic, b"first", key=b"k")
        second = await producer.send_and_wait(topic, b"second", key=b"k")
    finally:
        await producer.stop()
    assert (first.offset, second.offset) == (0, 1)

    def consumer(group_id: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=stack.kafka_bootstrap,
            group_id=group_id,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            # Tansu holds a JoinGroup for about half the session timeout, and starts generations at
            # 0, for which aiokafka sends no LeaveGroup: the next member waits out the session.
            session_timeout_ms=2000,
            heartbeat_interval_ms=300,
        )

    async def read(c: AIOKafkaConsumer, want: int) -> list[bytes]:
        got: list[bytes] = []
        for _ in range(20):
            batch = await c.getmany(timeout_ms=1000)
            got += [m.value for msgs in batch.values() for m in msgs if m.value is not None]
            if len(got) >= want:
                break
        return got

    c = consumer(group)
    await c.start()
    try:
        assert (await read(c, 2))[:1] == [b"first"]
        await c.commit({tp: first.offset + 1})  # "first" is done, "second" is not
    finally:
        await c.stop()

    stack.restart_broker()

    c = consumer(group)
    await c.start()
    try:
        assert await c.committed(tp) == 1
        assert await read(c, 1) == [b"second"]
    finally:
        await c.stop()
    fresh = consumer(f"{unique_name}-fresh")
    await fresh.start()
    try:
        assert await read(fresh, 2) == [b"first", b"second"]
    finally:
        await fresh.stop()


def test_prometheus_is_ready_and_scrapes_added_targets(stack: LocalStack, prometheus: str) -> None:
    with urllib.request.urlopen(f"{prometheus}/-/ready", timeout=5) as resp:
        assert resp.status == 200
    port = free_ports(1)[0]
    server, thread = start_http_server(port, addr="127.0.0.1")
    try:
        stack.add_prometheus_targets(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        health: list[str] = []
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{prometheus}/api/v1/targets", timeout=5) as resp:
                active = json.load(resp)["data"]["activeTargets"]
            health = [t["health"] for t in active if t["labels"]["instance"] == f"127.0.0.1:{port}"]
            if health == ["up"]:
                break
            time.sleep(1)
        assert health == ["up"]
    finally:
        server.shutdown()
        thread.join()


def test_a_second_stack_on_a_running_stacks_folder_is_refused(stack: LocalStack) -> None:
    with pytest.raises(StackError, match="is in use by another local stack"):
        LocalStack(root=stack.root).start()
    assert stack.dead() == []
    assert stack.s3_client().bucket_exists(stack.bucket)


def test_stop_leaves_no_process_and_removes_temp_root() -> None:
    with LocalStack() as s:
        pids, root = s.pids(), s.root
        assert set(pids) == {"weed", "tansu"} and root is not None and root.is_dir()
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not root.exists()


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    proc = Proc("boom", ["/bin/sh", "-c", "echo it broke; exit 3"], tmp_path / "boom.log")
    proc.start()
    with pytest.raises(ProcessError, match=r"(?s)boom exited with code 3.*it broke"):
        proc.wait_ready(lambda: False, timeout=10)
    proc.stop()


async def test_the_object_store_restarts_with_its_data_and_the_broker_rides_it_out(unique_name: str) -> None:
    """What the chaos suite's store restart relies on: an artifact written before is there after, a
    write while the store is down is a retryable ``StoreUnavailableError``, and Tansu (its log in
    that store) stays up and takes produce requests again once the store is back."""
    from selfimprove.core.settings import StoreSettings
    from selfimprove.core.store import ArtifactStore, StoreUnavailableError

    with LocalStack() as s:
        store = ArtifactStore.from_settings(
            StoreSettings(
                endpoint=s.s3_endpoint, access_key=s.access_key, secret_key=s.secret_key, bucket=s.bucket
            )
        )
        ref = store.publish(f"{unique_name}/a/", {"f.txt": b"before"})
        endpoint = s.s3_endpoint
        s.stop_store()
        with pytest.raises(StoreUnavailableError, match=endpoint):
            store.put_bytes(f"{unique_name}/b", b"during")
        assert s.dead() == []  # the broker is still running
        s.start_store()
        assert s.s3_endpoint == endpoint and s.dead() == []
        assert store.verify(ref).files[0].path == "f.txt"
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=False, request_timeout_ms=5000
        )
        await producer.start()
        try:
            for _ in range(12):  # Tansu's own S3 client reconnects within seconds
                try:
                    await producer.send_and_wait(unique_name, b"after")
                    break
                except Exception:  # noqa: BLE001 - timeouts until its storage answers again
                    await asyncio.sleep(1)
            else:
                pytest.fail("the broker took no produce request after the store came back")
        finally:
            await producer.stop()
