"""Build, encode and decode the bus envelope (``selfimprove.v2.Envelope``).

Event ids are uuid4 for new events. An event produced while handling another gets a uuid5 derived
from its cause, so a handler that runs twice for one redelivered message emits the same event ids
and every consumer drops the repeat.
"""

from __future__ import annotations

import uuid

from google.protobuf.message import DecodeError

from selfimprove.v2.envelope_pb2 import Envelope

NAMESPACE = uuid.UUID("6b1f2c6e-9a57-4f57-9d0b-4b8f2f3b5f10")


class EnvelopeError(ValueError):
    """Bytes that are not a valid envelope."""


def new_event_id() -> str:
    return str(uuid.uuid4())


def derived_event_id(cause_id: str, topic: str, index: int) -> str:
    """A stable id for the ``index``-th event sent to ``topic`` while handling ``cause_id``.

    >>> derived_event_id("a", "t", 0) == derived_event_id("a", "t", 0)
    True
    >>> derived_event_id("a", "t", 0) == derived_event_id("a", "t", 1)
    False
    """
    return str(uuid.uuid5(NAMESPACE, f"{cause_id}/{topic}/{index}"))


def make(
    *,
    run_id: str,
    iteration: int,
    stage: int,
    producer: str,
    attempt: int = 1,
    shard: int = 0,
    causation_id: str = "",
    event_id: str = "",
    **payload: object,
) -> Envelope:
    """An envelope stamped with the current time; ``payload`` is one ``name=message`` of the oneof."""
    if len(payload) != 1:
        raise ValueError(f"exactly one payload expected, got {sorted(payload)}")
    env = Envelope(
        event_id=event_id or new_event_id(),
        run_id=run_id,
        iteration=iteration,
        stage=stage,  # type: ignore[arg-type]
        attempt=attempt,
        shard=shard,
        causation_id=causation_id,
        producer=producer,
    )
    env.time.GetCurrentTime()
    ((name, message),) = payload.items()
    getattr(env, name).CopyFrom(message)
    return env


def caused_by(cause: Envelope, producer: str, **payload: object) -> Envelope:
    """A follow-up event of ``cause`` in the same run, iteration, stage, attempt and shard."""
    return make(
        run_id=cause.run_id,
        iteration=cause.iteration,
        stage=cause.stage,
        attempt=cause.attempt,
        shard=cause.shard,
        causation_id=cause.event_id,
        producer=producer,
        **payload,  # type: ignore[arg-type]
    )


def encode(env: Envelope) -> bytes:
    return env.SerializeToString(deterministic=True)


def decode(data: bytes | None) -> Envelope:
    """Parse and validate an envelope; raise ``EnvelopeError`` naming what is wrong."""
    if not data:
        raise EnvelopeError("empty message")
    env = Envelope()
    try:
        env.ParseFromString(data)
    except DecodeError as exc:
        raise EnvelopeError(f"not an Envelope: {exc}") from None
    if not env.event_id:
        raise EnvelopeError("envelope has no event_id")
    if not env.run_id:
        raise EnvelopeError(f"envelope {env.event_id} has no run_id")
    if env.WhichOneof("payload") is None:
        raise EnvelopeError(f"envelope {env.event_id} has no payload")
    return env


def payload_name(env: Envelope) -> str:
    return env.WhichOneof("payload") or ""
