"""An outage of the object store is waited out, never turned into a verdict on the data: the store
names it ``StoreUnavailableError`` (retryable, not an ``ArtifactError``), the consumer retries the
message for as long as the outage lasts without dead-lettering it, and the evaluator's controller
keeps its state in memory unchanged until the snapshot that records it is stored."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import urllib3.exceptions
from minio.error import S3Error

from selfimprove.core import consumer as consumer_mod
from selfimprove.core import envelope as envelopes
from selfimprove.core.consumer import Consumer
from selfimprove.core.dedup import MemoryDedup
from selfimprove.core.metrics import Metrics
from selfimprove.core.retry import RetryableError
from selfimprove.core.store import ArtifactError, ArtifactNotFoundError, ArtifactStore, StoreUnavailableError
from selfimprove.core.topics import Topics
from selfimprove.evaluator.controller import Controller
from selfimprove.evaluator.loopmetrics import LoopMetrics
from selfimprove.v2.stages_pb2 import AcquireResult, RunControl

pytestmark = pytest.mark.unit
REFUSED = urllib3.exceptions.MaxRetryError(None, "/selfimprove/x", reason="Connection refused")


class DownClient:
    """A ``minio`` client whose server refuses every connection."""

    _base_url = SimpleNamespace(host="127.0.0.1:8333")

    def __getattr__(self, name):
        def call(*args, **kwargs):
            raise REFUSED

        return call


class MissingClient:
    """A ``minio`` client whose server answers that the object does not exist."""

    def get_object(self, bucket, key):
        raise S3Error(None, "NoSuchKey", "no such key", key, "", "")


def test_a_store_that_refuses_connections_raises_a_retryable_error_naming_it():
    store = ArtifactStore(DownClient(), "selfimprove")
    calls = [
        lambda: store.put_bytes("runs/r/x", b"x"),
        lambda: store.read_key("runs/r/state/snapshot.json"),
        lambda: store.exists("dedup/g/e1"),
        lambda: list(store.list_keys("runs/r/")),
        lambda: store.list_folders("runs/"),
        store.ensure_bucket,
    ]
    for call in calls:
        with pytest.raises(StoreUnavailableError, match=r"object store 127\.0\.0\.1:8333 unavailable") as err:
            call()
        assert isinstance(err.value, RetryableError) and not isinstance(err.value, ArtifactError)


def test_a_missing_object_is_still_not_found_not_an_outage():
    with pytest.raises(ArtifactNotFoundError):
        ArtifactStore(MissingClient(), "selfimprove").read_key("runs/r/state/snapshot.json")


class FakeBus:
    def __init__(self) -> None:
        self.metrics = None
        self.topics = Topics("t")
        self.dead: list[str] = []
        self.published: list[str] = []

    async def send_raw(self, topic, value, key=None, headers=()):
        self.dead.append(topic)

    async def publish(self, topic, env, key="", spread=None):
        self.published.append(env.event_id)


def record(value: bytes = b"x"):
    return SimpleNamespace(topic="t.result.acquire", partition=0, offset=7, key=b"r", value=value)


def handle_with(failures: list[BaseException], monkeypatch, attempts: int = 3):
    """Run the consumer's handling of one message whose handler raises ``failures`` in turn."""
    monkeypatch.setattr(consumer_mod, "backoff_delays", lambda **_: iter(lambda: 0.0, None))
    bus = FakeBus()
    left = list(failures)

    async def handler(env):
        if left:
            raise left.pop(0)
        return ["done"]

    consumer = Consumer(bus, ["t.result.acquire"], "g", handler, MemoryDedup(), handler_attempts=attempts)
    env = envelopes.make(run_id="r", iteration=1, stage=1, producer="t", acquire_result=AcquireResult())
    return asyncio.run(consumer._handle(env, record())), bus.dead


def test_a_handler_meeting_a_long_store_outage_is_retried_until_it_succeeds(monkeypatch):
    outage = [StoreUnavailableError("object store down")] * 10  # more tries than handler_attempts
    assert handle_with(outage, monkeypatch) == (["done"], [])


def test_other_failures_are_still_dead_lettered(monkeypatch):
    assert handle_with([RetryableError("busy")] * 3, monkeypatch) == (None, ["t.result.acquire.dlq"])
    assert handle_with([ValueError("bad command")], monkeypatch) == (None, ["t.result.acquire.dlq"])
    # an outage between two transient failures does not use up an attempt
    mixed = [RetryableError("busy"), StoreUnavailableError("down"), RetryableError("busy")]
    assert handle_with(mixed, monkeypatch) == (["done"], [])


class FlakyStore:
    """Stores snapshots in memory; ``down`` makes every write fail as an outage would."""

    def __init__(self) -> None:
        self.down = True
        self.objects: dict[str, bytes] = {}

    def put_bytes(self, key, data, media_type="application/octet-stream"):
        if self.down:
            raise StoreUnavailableError("object store down")
        self.objects[key] = data


def test_the_controller_state_advances_only_once_its_snapshot_is_stored():
    bus, store = FakeBus(), FlakyStore()
    controller = Controller(bus, store, LoopMetrics(Metrics("evaluator")), {})
    control = RunControl(action=RunControl.ACTION_START, config_yaml="acquisition: {shards: 2}\n")
    start = envelopes.make(run_id="r1", iteration=0, stage=0, producer="cli", run_control=control)

    with pytest.raises(StoreUnavailableError):
        asyncio.run(controller.handle(start))
    assert controller.runs == {} and store.objects == {}
    first = list(bus.published)
    assert first  # the commands went out before the save failed

    store.down = False  # the store is back: the redelivered input is decided again
    asyncio.run(controller.handle(start))
    assert set(controller.runs) == {"r1"} and "runs/r1/state/snapshot.json" in store.objects
    assert bus.published[len(first) :] == first  # the same events again: stages drop the repeats
    assert start.event_id in controller.runs["r1"].applied
