"""``selfimprove dlq``: inspect dead-letter topics and replay fixed messages to where they came from.

    selfimprove dlq list                               # every <prefix>.*.dlq topic: count, per error type
    selfimprove dlq show selfimprove.cmd.train.dlq --limit 5 --offset 0
    selfimprove dlq replay selfimprove.cmd.train.dlq --offset 3 --offset 4
    selfimprove dlq replay selfimprove.cmd.train.dlq --offset 3 --from-file fixed.pb   # a fixed envelope
    selfimprove dlq replay selfimprove.evt.train.dlq --all --to other.topic

Bus settings come from the environment (``SELFIMPROVE_KAFKA_*``, the topic prefix included). A replay
republishes the message's bytes (or the fixed envelope) to ``x-original-topic`` with its key, so the
service handles it again: a dead-lettered event was never marked handled, so its event id is not a
duplicate. Offsets are the dead-letter topic's own (``show`` prints them).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Inspect and replay dead-letter topics.")
HEADERS = (
    "x-error",
    "x-error-type",
    "x-reason",
    "x-original-topic",
    "x-original-partition",
    "x-original-offset",
    "x-consumer-group",
    "x-event-id",
)


@dataclass(frozen=True)
class Letter:
    """One dead-lettered record: where it sits in the DLQ, its bytes and headers."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


def summary(value: bytes | None) -> str:
    """One line about the bytes: the envelope's fields when they decode, else why not.

    >>> summary(b"")
    'undecodable (0 bytes): empty message'
    >>> summary(b"\\x08\\x96\\x01garbage").startswith("undecodable (10 bytes): not an Envelope")
    True
    """
    from selfimprove.core import envelope as envelopes
    from selfimprove.v2.common_pb2 import Stage

    try:
        env = envelopes.decode(value)
    except envelopes.EnvelopeError as exc:
        return f"undecodable ({len(value or b'')} bytes): {exc}"
    stage = Stage.Name(env.stage) if env.stage in Stage.values() else str(env.stage)
    return (
        f"{envelopes.payload_name(env)} event={env.event_id} run={env.run_id} iter={env.iteration} "
        f"stage={stage} attempt={env.attempt} shard={env.shard} producer={env.producer!r} "
        f"({len(value or b'')} bytes)"
    )


def count_by_type(letters: list[Letter]) -> dict[str, int]:
    """Messages per ``x-error-type``.

    >>> count_by_type([Letter(0, 0, None, b"", {"x-error-type": "ValueError"})] * 2)
    {'ValueError': 2}
    """
    return dict(Counter(letter.headers.get("x-error-type", "?") for letter in letters))


async def read_all(topic: str, idle_s: float = 2.0, timeout_s: float = 60.0) -> list[Letter]:
    """Every record of ``topic``, oldest first (read to the end offsets, or until the topic is idle)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from selfimprove.core.kafka_config import client_kwargs

    consumer = AIOKafkaConsumer(**client_kwargs(_settings()), group_id=None, enable_auto_commit=False)
    await consumer.start()
    letters: list[Letter] = []
    try:
        await consumer.topics()  # fresh metadata: the topic may be newer than the client's view
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        loop = asyncio.get_running_loop()
        deadline, idle_since = loop.time() + timeout_s, loop.time()
        while loop.time() < deadline and loop.time() - idle_since < idle_s:
            if all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                break
            batch = await consumer.getmany(timeout_ms=300)
            if batch:
                idle_since = loop.time()
            for records in batch.values():
                letters.extend(
                    Letter(
                        r.partition,
                        r.offset,
                        r.key,
                        r.value,
                        {k: v.decode(errors="replace") for k, v in r.headers},
                    )
                    for r in records
                )
    finally:
        await consumer.stop()
    return sorted(letters, key=lambda x: (x.partition, x.offset))


async def dlq_topics() -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    from selfimprove.core.kafka_config import client_kwargs

    settings = _settings()
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        names = await admin.list_topics()
    finally:
        await admin.close()
    return sorted(n for n in names if n.startswith(settings.topic_prefix + ".") and n.endswith(".dlq"))


async def republish(items: list[tuple[str, bytes | None, bytes | None, dict[str, str]]]) -> None:
    from selfimprove.core.bus import Bus

    async with Bus(_settings()) as bus:
        for topic, key, value, headers in items:
            await bus.send_raw(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])


def _settings():
    from selfimprove.core.settings import KafkaSettings, load

    return load(KafkaSettings)


@app.command("list")
def list_cmd(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every dead-letter topic of the prefix with its message count and counts per error type."""
    rows = {}
    for topic in asyncio.run(dlq_topics()):
        letters = asyncio.run(read_all(topic))
        rows[topic] = {"messages": len(letters), "error_types": count_by_type(letters)}
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no dead-letter topics")
    for topic, row in rows.items():
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(row["error_types"].items()))
        typer.echo(f"{topic}\t{row['messages']}" + (f"\t({kinds})" if kinds else ""))


@app.command("show")
def show_cmd(
    topic: Annotated[str, typer.Argument(help="A dead-letter topic (see `dlq list`).")],
    limit: Annotated[int, typer.Option(min=1, help="Messages to print.")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="First DLQ offset to print.")] = 0,
) -> None:
    """Print dead letters with their error headers and a summary of the envelope."""
    letters = [x for x in asyncio.run(read_all(topic)) if x.offset >= offset][:limit]
    if not letters:
        typer.echo(f"{topic}: no messages at offset >= {offset}")
    for letter in letters:
        typer.echo(f"--- {topic} partition {letter.partition} offset {letter.offset}")
        for name in HEADERS:
            if name in letter.headers:
                typer.echo(f"  {name}: {letter.headers[name]}")
        typer.echo(f"  envelope: {summary(letter.value)}")


@app.command("replay")
def replay_cmd(
    topic: Annotated[str, typer.Argument(help="A dead-letter topic.")],
    offset: Annotated[list[int] | None, typer.Option(help="DLQ offset to replay (repeatable).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every message of the topic.")] = False,
    to: Annotated[str | None, typer.Option(help="Target topic (default: x-original-topic).")] = None,
    from_file: Annotated[
        Path | None, typer.Option(help="A fixed envelope (serialized protobuf) to send instead.")
    ] = None,
) -> None:
    """Republish selected dead letters (or a fixed envelope) to their original topic."""
    from selfimprove.core import envelope as envelopes

    if not offset and not all_:
        raise typer.BadParameter("give --offset K (repeatable) or --all", param_hint="--offset")
    fixed = None
    if from_file is not None:
        try:
            fixed = envelopes.encode(envelopes.decode(from_file.read_bytes()))
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {from_file}: {exc.strerror}", param_hint="--from-file"
            ) from None
        except envelopes.EnvelopeError as exc:
            raise typer.BadParameter(f"{from_file}: {exc}", param_hint="--from-file") from None
    letters = asyncio.run(read_all(topic))
    chosen = letters if all_ else [x for x in letters if x.offset in set(offset or [])]
    if fixed is not None and len(chosen) != 1:
        raise typer.BadParameter("--from-file replaces exactly one message: give one --offset")
    missing = sorted(set(offset or []) - {x.offset for x in chosen})
    if missing:
        typer.echo(f"error: {topic} has no message at offset {missing}", err=True)
        raise typer.Exit(1)
    items = []
    for letter in chosen:
        target = to or letter.headers.get("x-original-topic")
        if not target:
            typer.echo(f"error: offset {letter.offset} has no x-original-topic: use --to", err=True)
            raise typer.Exit(1)
        headers = {"x-replayed-from": f"{topic}/{letter.partition}@{letter.offset}"}
        items.append((target, letter.key, fixed if fixed is not None else letter.value, headers))
    asyncio.run(republish(items))
    for (target, *_), letter in zip(items, chosen, strict=True):
        typer.echo(f"replayed {topic}@{letter.offset} -> {target}" + (" (fixed)" if fixed else ""))
