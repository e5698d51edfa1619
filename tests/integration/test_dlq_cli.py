"""``selfimprove dlq list|show|replay`` against the real broker: a poison message lands in a DLQ via a
real consumer, ``list`` counts it, ``show`` prints its error, and a fixed replay is handled."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.core.metrics import Metrics
from tests.support.buskit import eventually, kafka_settings

from .test_bus import run_consumer, train_command

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def cli(stack, prefix: str, *args: str) -> subprocess.CompletedProcess:
    # Wide enough that typer's error box does not wrap the messages the test looks for.
    env = {**os.environ, **stack.env(), "SELFIMPROVE_KAFKA_TOPIC_PREFIX": prefix, "COLUMNS": "400"}
    command = [sys.executable, "-m", "selfimprove.cli.main", "dlq", *args]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120
    )


async def test_poison_message_listed_shown_and_replayed_after_a_fix(stack, unique_name, tmp_path):
    topic = f"{unique_name}.cmd.train"
    dlq = f"{topic}.dlq"
    handled: list[int] = []

    async def handle(env):
        if env.train_command.seed == 13:
            raise ValueError("seed 13 is unlucky")
        handled.append(env.train_command.seed)
        return []

    poison = train_command(unique_name, seed=13)
    async with Bus(kafka_settings(stack, unique_name)) as bus:
        await bus.ensure_topics([topic])
        await bus.send_raw(topic, b"\x08\x96\x01garbage", key=b"k")
        await bus.publish(topic, poison)
    metrics = Metrics("test")
    bus, stop, task = await run_consumer(stack, unique_name, topic, handle, f"{unique_name}-g", metrics)
    try:
        await eventually(lambda: metrics.dlq.labels(topic, "handler")._value.get() == 1, timeout=60)

        listed = await cli(stack, unique_name, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert rows[dlq] == {"messages": 2, "error_types": {"EnvelopeError": 1, "ValueError": 1}}
        text = await cli(stack, unique_name, "list")
        assert f"{dlq}\t2" in text.stdout

        shown = await cli(stack, unique_name, "show", dlq, "--offset", "1", "--limit", "1")
        assert shown.returncode == 0, shown.stderr
        assert "x-error: ValueError: seed 13 is unlucky" in shown.stdout
        assert f"x-original-topic: {topic}" in shown.stdout
        assert f"x-consumer-group: {unique_name}-g" in shown.stdout
        assert f"train_command event={poison.event_id}" in shown.stdout
        assert "offset 0" not in shown.stdout
        first = await cli(stack, unique_name, "show", dlq, "--limit", "1")
        assert "undecodable (10 bytes): not an Envelope" in first.stdout

        # Fix the poison message (same event id, a better seed) and replay it in its place.
        fixed = envelopes.decode(envelopes.encode(poison))
        fixed.train_command.seed = 14
        path = tmp_path / "fixed.pb"
        path.write_bytes(envelopes.encode(fixed))
        replayed = await cli(stack, unique_name, "replay", dlq, "--offset", "1", "--from-file", str(path))
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed {dlq}@1 -> {topic} (fixed)" in replayed.stdout
        await eventually(lambda: handled == [14], timeout=60)

        # Bad use is refused with a message naming the problem; nothing is sent.
        nothing = await cli(stack, unique_name, "replay", dlq)
        assert nothing.returncode != 0 and "--offset" in nothing.stderr
        absent = await cli(stack, unique_name, "replay", dlq, "--offset", "99")
        assert absent.returncode == 1 and "no message at offset [99]" in absent.stderr
        junk = tmp_path / "junk.pb"
        junk.write_bytes(b"\xff\xff")
        refused = await cli(stack, unique_name, "replay", dlq, "--offset", "1", "--from-file", str(junk))
        assert refused.returncode != 0 and "not an Envelope" in refused.stderr
        await asyncio.sleep(2)
        assert handled == [14]
        assert metrics.dlq.labels(topic, "handler")._value.get() == 1
    finally:
        stop.set()
        await task
        await bus.stop()
