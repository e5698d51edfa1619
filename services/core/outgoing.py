"""An event a handler wants published: plain data, so pure decision code builds it without the bus.

Handlers return these; the bus (:mod:`selfimprove.core.bus`, aiokafka) publishes them at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfimprove.v2.envelope_pb2 import Envelope


@dataclass(frozen=True)
class Outgoing:
    """An event a handler wants published. The bus publishes it before committing the input."""

    topic: str
    envelope: Envelope
    key: str = ""
    # not None: sent to the topic's partition number ``spread`` modulo its partitions, not by the
    # key's hash, so consecutive values (the shards of an iteration) land on distinct partitions and
    # so on distinct replicas of a round-robin group
    spread: int | None = None
