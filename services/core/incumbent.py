"""The deployment's incumbent: the last decision that chose what serves (PROMOTE, or ROLLBACK to an
earlier promoted model), kept in the object store.

The evaluator writes it when it publishes such a decision (before the run's snapshot, so a crash repeats
the write with the same decision); a serving replica reads it when it starts and serves that model at
once. Its promotion listener keeps a consumer group of its own that survives restarts (named by the
replica's stable instance name), so a restarted replica reads only the decisions it has not seen and
never replays the whole control topic to learn what to serve.

The record is the decision event itself (serialized ``Envelope``), so it says which run, iteration
and model, and when.
"""

from __future__ import annotations

import logging

from google.protobuf.message import DecodeError

from selfimprove.core.keys import incumbent_key
from selfimprove.core.store import ArtifactNotFoundError, ArtifactStore
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import Decision

log = logging.getLogger(__name__)


SERVES = (Decision.KIND_PROMOTE, Decision.KIND_ROLLBACK)  # the decisions that choose the served model


def is_promotion(env: Envelope) -> bool:
    """Whether ``env`` decides what is served: a promotion, or a rollback to an earlier model."""
    return env.WhichOneof("payload") == "decision" and env.decision.kind in SERVES


def write(store: ArtifactStore, topic_prefix: str, promotion: Envelope) -> None:
    """Record ``promotion`` as the deployment's incumbent (raises ``StoreUnavailableError``)."""
    if not is_promotion(promotion):
        raise ValueError(f"event {promotion.event_id} is not a promotion")
    store.put_bytes(incumbent_key(topic_prefix), promotion.SerializeToString())


def read(store: ArtifactStore, topic_prefix: str) -> Envelope | None:
    """The deployment's last promotion, or None when there is none (or the record is unreadable,
    which is logged: the replica then serves its base model until the next promotion)."""
    key = incumbent_key(topic_prefix)
    try:
        data = store.read_key(key)
    except ArtifactNotFoundError:
        return None
    env = Envelope()
    try:
        env.ParseFromString(data)
    except DecodeError as exc:
        log.error("incumbent record %s is not an event (%s): ignored", key, exc)
        return None
    if not is_promotion(env):
        log.error("incumbent record %s holds no promotion: ignored", key)
        return None
    return env
