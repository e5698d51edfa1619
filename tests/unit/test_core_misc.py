"""Manifests, retry, dedup memory and the metrics server."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from selfimprove.core.dedup import MemoryDedup
from selfimprove.core.metrics import Metrics, MetricsServer
from selfimprove.core.retry import retrying
from selfimprove.core.store import ArtifactIntegrityError, Manifest, ManifestEntry

pytestmark = pytest.mark.unit


def test_manifest_round_trip_and_malformed():
    manifest = Manifest("runs/r/", [ManifestEntry("a.jsonl", "ab" * 32, 10)], {"k": 1})
    back = Manifest.from_json(manifest.to_json(), "x")
    assert back.files == manifest.files and back.meta == {"k": 1}
    with pytest.raises(ArtifactIntegrityError, match="malformed manifest"):
        Manifest.from_json(b'{"files": 3}', "s3://b/m")


def test_retrying_retries_then_gives_up():
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    assert asyncio.run(retrying(flaky, retry_on=(ConnectionError,), what="t")) == "ok"

    async def broken():
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        asyncio.run(retrying(broken, retry_on=(ConnectionError,), what="t", attempts=2))


def test_memory_dedup_forgets_oldest():
    async def scenario():
        dedup = MemoryDedup(capacity=2)
        for event in ("a", "b", "c"):
            await dedup.mark(event)
        return [await dedup.seen(e) for e in ("a", "b", "c")]

    assert asyncio.run(scenario()) == [False, True, True]


def test_metrics_server_serves_metrics_and_health():
    metrics = Metrics("unit")
    metrics.published.labels("t").inc()
    server = MetricsServer(metrics).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + "/health")
        assert info.value.code == 503
        metrics.set_ready(True)
        health = json.load(urllib.request.urlopen(base + "/health"))
        assert health["status"] == "ok" and health["service"] == "unit"
        text = urllib.request.urlopen(base + "/metrics").read().decode()
        assert 'selfimprove_messages_published_total{topic="t"} 1.0' in text
        assert 'selfimprove_service_up{service="unit"} 1.0' in text
    finally:
        server.stop()


def test_model_work_runs_on_one_thread_whatever_calls_it():
    import threading

    from selfimprove.core import compute

    async def main():
        started = threading.Event()

        def slow():
            started.wait(5)
            return threading.current_thread().name

        # while the compute thread is busy, more model work queues for it (no second thread);
        # I/O goes to asyncio's default executor meanwhile
        first = asyncio.ensure_future(compute.run(slow))
        io_thread = await asyncio.to_thread(lambda: threading.current_thread().name)
        started.set()
        names = await asyncio.gather(
            first, *(compute.run(lambda: threading.current_thread().name) for _ in range(8))
        )
        return io_thread, set(names)

    io_thread, names = asyncio.run(main())
    [name] = names
    assert name.startswith(compute.THREAD_NAME) and name != io_thread


def test_a_stage_builds_its_artifact_on_the_compute_thread():
    import threading

    from selfimprove.core import compute, stage
    from selfimprove.core.store import ArtifactNotFoundError
    from selfimprove.v2.common_pb2 import Stage
    from selfimprove.v2.envelope_pb2 import Envelope
    from selfimprove.v2.stages_pb2 import TrainCommand

    class Store:
        def find_manifest(self, prefix):
            return None

        def read_key(self, key):
            raise ArtifactNotFoundError(key)

        def publish(self, prefix, files, meta):
            return prefix

    env = Envelope(
        event_id="e", run_id="r", iteration=1, stage=Stage.STAGE_TRAIN, train_command=TrainCommand()
    )
    built = asyncio.run(
        stage.run_once(Store(), env, lambda: ({}, {"thread": threading.current_thread().name}))
    )
    assert built[1]["thread"].startswith(compute.THREAD_NAME)
