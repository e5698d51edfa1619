"""The bus against the real local broker (Tansu) and object store (SeaweedFS)."""

import asyncio

import pytest

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus, Outgoing
from selfimprove.core.consumer import Consumer
from selfimprove.core.dedup import ObjectStoreDedup
from selfimprove.core.metrics import Metrics
from selfimprove.v2.common_pb2 import ArtifactRef, ModelRef, Stage
from selfimprove.v2.stages_pb2 import TrainCommand
from tests.support.buskit import (
    ServiceProcess,
    artifact_store,
    eventually,
    header,
    kafka_settings,
    read_topic,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def train_command(run_id: str, seed: int = 1):
    return envelopes.make(
        run_id=run_id,
        iteration=1,
        stage=Stage.STAGE_TRAIN,
        producer="test",
        train_command=TrainCommand(
            policy=ModelRef(
                base="smollm2-135m-instruct", adapter=ArtifactRef(uri="s3://b/a", sha256="00" * 32)
            ),
            seed=seed,
        ),
    )


async def run_consumer(stack, prefix, topic, handler, group, metrics=None, **options):
    bus = await Bus(kafka_settings(stack, prefix), metrics).start()
    dedup = ObjectStoreDedup(artifact_store(stack), group)
    consumer = Consumer(bus, [topic], group, handler, dedup, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    return bus, stop, task


async def test_envelope_round_trip(stack, unique_name):
    settings = kafka_settings(stack, unique_name)
    topic = f"{unique_name}.cmd.train"
    async with Bus(settings) as bus:
        await bus.ensure_topics([topic])
        sent = train_command(unique_name)
        await bus.publish(topic, sent)
    got = []

    async def handle(env):
        got.append(env)
        return []

    bus, stop, task = await run_consumer(stack, unique_name, topic, handle, f"{unique_name}-g")
    await eventually(lambda: got, timeout=30)
    stop.set()
    await task
    await bus.stop()
    assert got == [sent]


async def test_spread_sends_consecutive_values_to_distinct_partitions_whatever_the_key(stack, unique_name):
    topic = f"{unique_name}.cmd.acquire"
    async with Bus(kafka_settings(stack, unique_name)) as bus:
        await bus.ensure_topics([topic], partitions=4)
        sent = [train_command(unique_name, seed=i) for i in range(6)]
        await bus.publish_all(Outgoing(topic, env, "one-key", spread=i) for i, env in enumerate(sent))
        await bus.publish(topic, train_command(unique_name, seed=9), "one-key")  # by the key's hash
    records = await read_topic(stack.kafka_bootstrap, topic, expect=7, timeout=30)
    by_seed = {envelopes.decode(r.value).train_command.seed: r.partition for r in records}
    assert [by_seed[i] for i in range(6)] == [0, 1, 2, 3, 0, 1]
    assert len(by_seed) == 7 and all(r.key == b"one-key" for r in records)


async def test_poison_message_goes_to_dlq_and_consumer_keeps_going(stack, unique_name):
    topic = f"{unique_name}.cmd.train"
    metrics = Metrics("test")
    handled = []

    async def handle(env):
        if env.train_command.seed == 13:
            raise ValueError("seed 13 is unlucky")
        handled.append(env.train_command.seed)
        return []

    async with Bus(kafka_settings(stack, unique_name)) as bus:
        await bus.ensure_topics([topic])
        await bus.send_raw(topic, b"\x08\x96\x01garbage", key=b"k")
        await bus.publish(topic, train_command(unique_name, seed=13))
        await bus.publish(topic, train_command(unique_name, seed=2))
    bus, stop, task = await run_consumer(stack, unique_name, topic, handle, f"{unique_name}-g", metrics)
    await eventually(lambda: handled == [2], timeout=30)
    stop.set()
    await task
    await bus.stop()
    dead = await read_topic(stack.kafka_bootstrap, f"{topic}.dlq", expect=2)
    assert [header(r, "x-reason") for r in dead] == ["decode", "handler"]
    assert dead[0].value == b"\x08\x96\x01garbage"
    assert "not an Envelope" in header(dead[0], "x-error")
    assert "seed 13 is unlucky" in header(dead[1], "x-error")
    assert header(dead[1], "x-original-topic") == topic
    assert metrics.dlq.labels(topic, "decode")._value.get() == 1
    assert metrics.dlq.labels(topic, "handler")._value.get() == 1


async def test_killed_before_commit_redelivers_and_duplicate_is_recognised(stack, unique_name, tmp_path):
    source, target = f"{unique_name}.in", f"{unique_name}.out"
    env = dict(
        ECHO_IN=source,
        ECHO_OUT=target,
        ECHO_GROUP=f"{unique_name}-g",
        ECHO_CRASH_ONCE=str(tmp_path / "crashed"),
        SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS="6000",
    )
    async with Bus(kafka_settings(stack, unique_name)) as bus:
        await bus.ensure_topics([source, target], partitions=1)
        sent = train_command(unique_name)
        await bus.publish(source, sent)
    first = ServiceProcess("echo_service.py", stack, unique_name, tmp_path / "first.log", **env)
    assert first.wait_exit(90) == 137, (tmp_path / "first.log").read_text()[-2000:]
    second = ServiceProcess("echo_service.py", stack, unique_name, tmp_path / "second.log", **env)
    try:
        second.wait_ready()
        await eventually(
            lambda: second.counter("selfimprove_messages_consumed_total", outcome="duplicate") == 1
        )
        assert second.counter("selfimprove_messages_consumed_total", outcome="handled") == 0
    finally:
        assert second.stop() == 0
    echoes = await read_topic(stack.kafka_bootstrap, target, expect=2, timeout=5)
    assert len(echoes) == 1
    assert envelopes.decode(echoes[0].value).causation_id == sent.event_id


async def test_long_handler_is_not_handed_to_a_second_consumer(stack, unique_name, tmp_path):
    """The handler runs 3x longer than max_poll_interval while a second replica joins the group."""
    source, target = f"{unique_name}.in", f"{unique_name}.out"
    marks = tmp_path / "marks"
    marks.mkdir()
    env = dict(
        ECHO_IN=source,
        ECHO_OUT=target,
        ECHO_GROUP=f"{unique_name}-g",
        ECHO_SLEEP="9",
        ECHO_MARKS=str(marks),
        SELFIMPROVE_KAFKA_MAX_POLL_INTERVAL_MS="3000",
        SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS="6000",
    )
    async with Bus(kafka_settings(stack, unique_name)) as bus:
        await bus.ensure_topics([source, target], partitions=1)
        await bus.publish(source, train_command(unique_name))
    first = ServiceProcess("echo_service.py", stack, unique_name, tmp_path / "a.log", **env)
    second = None
    try:
        await eventually(lambda: list(marks.iterdir()), timeout=60)
        second = ServiceProcess("echo_service.py", stack, unique_name, tmp_path / "b.log", **env)
        second.wait_ready()
        echoes = await read_topic(stack.kafka_bootstrap, target, expect=1, timeout=40)
        assert len(echoes) == 1
        await asyncio.sleep(12)  # room for a wrongly reassigned message to start again
        assert len(list(marks.iterdir())) == 1
        handled = first.counter("selfimprove_messages_consumed_total", outcome="handled")
        handled += second.counter("selfimprove_messages_consumed_total", outcome="handled")
        assert handled == 1
    finally:
        first.stop()
        if second:
            second.stop()
    assert len(await read_topic(stack.kafka_bootstrap, target, expect=2, timeout=3)) == 1


async def test_broker_restart_loses_no_acknowledged_message_or_committed_offset(stack, unique_name):
    topic = f"{unique_name}.cmd.train"
    group = f"{unique_name}-g"
    seen = []

    async def handle(env):
        seen.append(env.train_command.seed)
        return []

    async with Bus(kafka_settings(stack, unique_name)) as bus:
        await bus.ensure_topics([topic])
        for seed in range(10):
            await bus.publish(topic, train_command(unique_name, seed))
    bus, stop, task = await run_consumer(stack, unique_name, topic, handle, group)
    await eventually(lambda: len(seen) == 10, timeout=60)
    stop.set()
    await task
    await bus.stop()

    stack.restart_broker()

    async with Bus(kafka_settings(stack, unique_name)) as bus:
        for seed in range(10, 15):
            await bus.publish(topic, train_command(unique_name, seed))
    bus, stop, task = await run_consumer(stack, unique_name, topic, handle, group)
    await eventually(lambda: len(seen) >= 15, timeout=60)
    await asyncio.sleep(2)
    stop.set()
    await task
    await bus.stop()
    assert seen == list(range(15))
    everything = await read_topic(stack.kafka_bootstrap, topic, expect=15)
    assert sorted(envelopes.decode(r.value).train_command.seed for r in everything) == list(range(15))


async def test_outgoing_events_get_stable_ids(stack, unique_name):
    """A handler re-run for a redelivered input emits the same event ids, so the repeat is dropped."""
    source, target = f"{unique_name}.in", f"{unique_name}.out"
    sent = train_command(unique_name)
    calls = []

    async def handle(env):
        calls.append(env.event_id)
        return [Outgoing(target, envelopes.caused_by(env, "t", train_command=TrainCommand(seed=9)))]

    async with Bus(kafka_settings(stack, unique_name)) as bus:
        await bus.ensure_topics([source, target])
        await bus.publish(source, sent)
        await bus.publish(source, sent)  # the same event twice: handled once
    for group in ("a", "b"):  # two groups: each handles it once, with identical output ids
        metrics = Metrics("test")
        bus, stop, task = await run_consumer(
            stack, unique_name, source, handle, f"{unique_name}-{group}", metrics
        )
        await eventually(
            lambda m=metrics: m.consumed.labels(source, "duplicate")._value.get() == 1, timeout=60
        )
        stop.set()
        await task
        await bus.stop()
    out = await read_topic(stack.kafka_bootstrap, target, expect=3, timeout=5)
    ids = [envelopes.decode(r.value).event_id for r in out]
    assert len(calls) == 2 and len(ids) == 2 and ids[0] == ids[1]
