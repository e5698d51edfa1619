"""What every stage service shares: its attempt's artifact prefix, do-once publication, result events.

A stage handler is idempotent per attempt: ``run_once`` looks for the attempt's manifest first and,
when a previous delivery already completed the work, returns that artifact instead of redoing it.
A command of a run its evaluator has ended (stopped, completed, failed; the run's record in
:mod:`.runend`) is refused before any work:
commands queued before a stop would otherwise still cost their full compute.
The manifest's ``meta`` carries the stage statistics, so the result event can be rebuilt from it.
CPU-heavy work runs in a worker thread so the consumer keeps heartbeating meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from selfimprove.core import compute
from selfimprove.core import envelope as envelopes
from selfimprove.core.keys import attempt_prefix
from selfimprove.core.outgoing import Outgoing
from selfimprove.core.runend import RunEnd, read_run_end
from selfimprove.core.topics import STAGES, Topics
from selfimprove.v2.common_pb2 import ArtifactRef
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import StageFailure

if TYPE_CHECKING:  # the store is passed in: pure code that imports this module needs no minio client
    from selfimprove.core.store import ArtifactStore

Files = Mapping[str, bytes | Path]
Build = Callable[[], tuple[Files, dict[str, Any]]]
M = TypeVar("M", bound=Message)


class StageInputError(ValueError):
    """The command cannot be carried out as given (bad reference, empty dataset, wrong base model).

    Services answer it with a ``StageFailure`` result (not retryable) instead of a dead letter.
    """


def command_stage(env: Envelope) -> int:
    """The stage of the command ``env`` carries, checked against its envelope's ``stage`` (which picks
    the artifact prefix and the result topic): a mismatch is a malformed message, not a command.

    >>> from selfimprove.v2.common_pb2 import Stage
    >>> from selfimprove.v2.stages_pb2 import TrainCommand
    >>> command_stage(Envelope(stage=Stage.STAGE_TRAIN, train_command=TrainCommand())) == Stage.STAGE_TRAIN
    True
    >>> command_stage(Envelope(stage=Stage.STAGE_SELECT, train_command=TrainCommand()))
    Traceback (most recent call last):
    ...
    ValueError: envelope stage select does not match its train_command
    """
    payload = env.WhichOneof("payload") or ""
    expected = next((s for s, name in STAGES.items() if payload == f"{name}_command"), None)
    if expected is None:
        raise ValueError(f"envelope carries {payload or 'no payload'}, not a stage command")
    if env.stage != expected:
        raise ValueError(f"envelope stage {STAGES.get(env.stage, env.stage)} does not match its {payload}")
    return expected


def prefix_for(env: Envelope) -> str:
    """``runs/<run>/iter-<NNN>/<stage>/shard-<NNN>/attempt-<k>/`` of the command ``env``."""
    stage = command_stage(env)
    return attempt_prefix(env.run_id, env.iteration, STAGES[stage], env.shard, max(1, env.attempt))


def ended_before(end: RunEnd | None, env: Envelope) -> str | None:
    """The run's final status when command ``env`` was sent before the run ended, else ``None``.

    ``end`` is the run's record (:mod:`.runend`; ``None``: running). A resumed run commands each open
    slot with its next attempt, so a command newer than the record (a later iteration or attempt)
    goes ahead even if the record still says "stopped".

    >>> from selfimprove.v2.common_pb2 import Stage
    >>> from selfimprove.v2.stages_pb2 import AcquireCommand
    >>> cmd = Envelope(iteration=2, stage=Stage.STAGE_ACQUIRE, shard=1, attempt=1, acquire_command=AcquireCommand())
    >>> stopped = RunEnd("stopped", 2, {"acquire/1": 1})
    >>> ended_before(stopped, cmd)
    'stopped'
    >>> cmd.attempt = 2  # the resumed run's command
    >>> ended_before(stopped, cmd) is None
    True
    >>> ended_before(RunEnd("running"), cmd) is None, ended_before(None, cmd) is None
    (True, True)
    >>> cmd.iteration = 1  # an earlier iteration's command: sent before the end whatever its attempt
    >>> ended_before(stopped, cmd)
    'stopped'
    """
    if end is None or not end.ended:
        return None
    if env.iteration != end.iteration:
        return end.status if env.iteration < end.iteration else None
    stage = STAGES[command_stage(env)]
    attempt = end.attempts.get(f"{stage}/{env.shard}")
    if attempt is None:
        attempt = end.attempts.get(stage)
    if attempt is None or max(1, env.attempt) > attempt:
        return None
    return end.status


async def run_once(
    store: ArtifactStore, env: Envelope, build: Build, on_compute: bool = True
) -> tuple[ArtifactRef, dict[str, Any]]:
    """The attempt's artifact: the existing one, or ``build()`` run on the compute thread
    (:mod:`.compute`) and published; ``StageInputError`` when the run has ended. With
    ``on_compute=False`` ``build`` runs on a worker thread and sends its model calls to the compute
    thread itself (``compute.call``), so the thread is free between them."""
    prefix = prefix_for(env)
    existing = await asyncio.to_thread(store.find_manifest, prefix)
    if existing is not None:
        manifest = await asyncio.to_thread(store.manifest, existing)
        return existing, manifest.meta
    status = ended_before(await asyncio.to_thread(read_run_end, store, env.run_id), env)
    if status is not None:
        raise StageInputError(f"run {env.run_id} has ended ({status}): its command is not carried out")
    files, meta = await (compute.run(build) if on_compute else asyncio.to_thread(build))
    ref = await asyncio.to_thread(store.publish, prefix, files, meta)
    return ref, meta


def stats_dict(stats: Message) -> dict[str, Any]:
    """A stage's typed statistics as JSON (the artifact's ``meta["stats"]``, the run state), every
    field named as in the proto, zeros included; read back with :func:`parse_stats`.

    >>> from selfimprove.v2.stages_pb2 import EvaluateStats
    >>> stats_dict(EvaluateStats(cache_hits=2))
    {'cache_hits': 2, 'tokens': '0', 'seconds': 0.0, 'items': 0}
    """
    return json_format.MessageToDict(
        stats, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def parse_stats(data: Mapping[str, Any] | None, into: M) -> M:
    """The typed statistics that :func:`stats_dict` wrote. A field the message lacks was written by a
    newer version of the project (a snapshot or result read during a rolling upgrade) and is ignored.

    >>> from selfimprove.v2.stages_pb2 import EvaluateStats
    >>> parse_stats({"tokens": "5", "cache_hits": 2, "added_later": 1}, EvaluateStats()).tokens
    5
    """
    return json_format.ParseDict(dict(data or {}), into, ignore_unknown_fields=True)


def result(topics: Topics, cause: Envelope, producer: str, **payload: object) -> Outgoing:
    """The stage's result event, caused by its command (on the result topic of the command's stage)."""
    return Outgoing(topics.result(command_stage(cause)), envelopes.caused_by(cause, producer, **payload))


def failure(
    topics: Topics, cause: Envelope, producer: str, exc: BaseException, retryable: bool = False
) -> Outgoing:
    """A ``StageFailure`` result naming what was wrong."""
    failed = StageFailure(error_type=type(exc).__name__, message=str(exc)[:4000], retryable=retryable)
    return result(topics, cause, producer, stage_failure=failed)
