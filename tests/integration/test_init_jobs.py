"""The one-shot jobs of the deployments (``selfimprove init store`` and ``selfimprove init topics``), run as
the init containers run them: a process with settings from the environment, twice (idempotent)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from selfimprove.core.provision import topic_specs
from selfimprove.core.stack import LocalStack
from selfimprove.core.topics import Topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
CLI = str(Path(sys.executable).parent / "selfimprove")


def _init(stack: LocalStack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "init", *args],
        env={**os.environ, **stack.env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_init_store_creates_the_bucket_once(stack: LocalStack, unique_name: str) -> None:
    first = _init(stack, "store", SELFIMPROVE_S3_BUCKET=unique_name)
    assert first.returncode == 0, first.stderr
    assert f"bucket {unique_name} created" in first.stdout
    assert stack.s3_client().bucket_exists(unique_name)
    again = _init(stack, "store", SELFIMPROVE_S3_BUCKET=unique_name)
    assert again.returncode == 0 and f"bucket {unique_name} exists" in again.stdout


def test_init_store_names_wrong_credentials(stack: LocalStack, unique_name: str) -> None:
    run = _init(stack, "store", SELFIMPROVE_S3_BUCKET=unique_name, SELFIMPROVE_S3_SECRET_KEY="wrong-secret")
    # bucket_exists is a HEAD request: S3 answers 403 without a body, which the client calls AccessDenied.
    assert run.returncode == 1 and re.search("AccessDenied|SignatureDoesNotMatch", run.stderr), run.stderr
    bad = _init(stack, "store", SELFIMPROVE_S3_ENDPOINT="http://x:1")
    assert bad.returncode == 2 and "SELFIMPROVE_S3_ENDPOINT" in bad.stderr


def test_init_topics_creates_every_topic_once(stack: LocalStack, unique_name: str) -> None:
    # The options as docker-compose passes them (one argument each, -1 included).
    first = _init(
        stack,
        "topics",
        "--retention-ms=604800000",
        "--control-retention-ms=-1",
        SELFIMPROVE_KAFKA_TOPIC_PREFIX=unique_name,
    )
    assert first.returncode == 0, first.stderr
    assert "22 topics" in first.stdout and "22 created" in first.stdout
    again = _init(stack, "topics", SELFIMPROVE_KAFKA_TOPIC_PREFIX=unique_name)
    assert again.returncode == 0 and "0 created, 22 existed" in again.stdout
    wanted = {s.name for s in topic_specs(Topics(unique_name))}

    async def listed() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            return {t for t in await admin.list_topics() if t.startswith(unique_name + ".")}
        finally:
            await admin.close()

    assert asyncio.run(listed()) == wanted
    assert f"{unique_name}.evt.control" in wanted and f"{unique_name}.cmd.train.dlq" in wanted


def test_init_topics_refuses_a_zero_retention(stack: LocalStack) -> None:
    run = _init(stack, "topics", "--retention-ms", "0")
    assert run.returncode == 2 and "retention_ms must be -1" in run.stderr
