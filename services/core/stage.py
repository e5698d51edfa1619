"""What every stage service shares: its attempt's artifact prefix, do-once publication, result events.

A stage handler is idempotent per attempt: ``run_once`` looks for the attempt's manifest first and,
when a previous delivery already completed the work, returns that artifact instead of redoing it.
The manifest's ``meta`` carries the stage statistics, so the result event can be rebuilt from it.
CPU-heavy work runs in a worker thread so the consumer keeps heartbeating meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Outgoing
from selfimprove.core.keys import attempt_prefix
from selfimprove.core.store import ArtifactStore
from selfimprove.core.topics import STAGES, Topics
from selfimprove.v1.common_pb2 import ArtifactRef, Stats
from selfimprove.v1.envelope_pb2 import Envelope
from selfimprove.v1.stages_pb2 import StageFailure

Files = Mapping[str, bytes | Path]
Build = Callable[[], tuple[Files, dict[str, Any]]]


class StageInputError(ValueError):
    """The command cannot be carried out as given (bad reference, empty dataset, wrong base model).

    Services answer it with a ``StageFailure`` result (not retryable) instead of a dead letter.
    """


def command_stage(env: Envelope) -> int:
    """The stage of the command ``env`` carries, checked against its envelope's ``stage`` (which picks
    the artifact prefix and the result topic): a mismatch is a malformed message, not a command.

    >>> from selfimprove.v1.common_pb2 import Stage
    >>> from selfimprove.v1.stages_pb2 import TrainCommand
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


async def run_once(store: ArtifactStore, env: Envelope, build: Build) -> tuple[ArtifactRef, dict[str, Any]]:
    """The attempt's artifact: the existing one, or ``build()`` run in a thread and published."""
    prefix = prefix_for(env)
    existing = await asyncio.to_thread(store.find_manifest, prefix)
    if existing is not None:
        manifest = await asyncio.to_thread(store.manifest, existing)
        return existing, manifest.meta
    files, meta = await asyncio.to_thread(build)
    ref = await asyncio.to_thread(store.publish, prefix, files, meta)
    return ref, meta


def stats(values: Mapping[str, float | int | bool]) -> Stats:
    """Numeric statistics for a result event (non-numbers are left out)."""
    return Stats(values={k: float(v) for k, v in values.items() if isinstance(v, (int, float))})


def result(topics: Topics, cause: Envelope, producer: str, **payload: object) -> Outgoing:
    """The stage's result event, caused by its command (on the result topic of the command's stage)."""
    return Outgoing(topics.result(command_stage(cause)), envelopes.caused_by(cause, producer, **payload))


def failure(
    topics: Topics, cause: Envelope, producer: str, exc: BaseException, retryable: bool = False
) -> Outgoing:
    """A ``StageFailure`` result naming what was wrong."""
    failed = StageFailure(error_type=type(exc).__name__, message=str(exc)[:4000], retryable=retryable)
    return result(topics, cause, producer, stage_failure=failed)
