"""The evaluator drives whole iterations against the real broker and object store, with test
processes standing in for the stage services (``fake_stages.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.stages_pb2 import Decision
from tests.support.buskit import artifact_store
from tests.support.evaluator_kit import Loop, control_events, metric, topic_events

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

CONFIG = """
budget: {iterations: 2}
acquisition: {shards: 2}
task: {dev_size: 20}
"""


@pytest.fixture
def loop_factory(stack, unique_name, tmp_path):
    loops = []

    def make(script=None, **env):
        loop = Loop(stack, unique_name, tmp_path, script, **env)
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.stop()


def decisions(events, run_id):
    return [e.decision for e in events if e.run_id == run_id and e.WhichOneof("payload") == "decision"]


async def test_whole_iterations_promotion_and_rejection(loop_factory, stack, unique_name):
    RID = unique_name  # noqa: N806 (run id: unique per test, the bucket is shared)
    loop = loop_factory({"eval": [[0.7, 0.4, 0.001], [0.5, 0.7, 0.2]], "duplicate": ["acquire", "train"]})
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{loop.evaluator.port}/health").read())
    assert health["grpc_port"] == loop.port
    started = loop.start(CONFIG, run_id=RID)
    assert started.run_id == RID and not started.resumed
    status = loop.wait_done(RID)
    assert status.state == "completed", status.stop_reason
    assert status.stop_reason == "budget spent: 2 iterations"
    kinds = [d.kind for d in status.decisions]
    assert kinds.count(Decision.KIND_PROMOTE) == 1 and kinds.count(Decision.KIND_REJECT) == 1
    assert list(status.accuracy) == pytest.approx([0.7, 0.7])
    assert status.incumbent.version == f"{RID}/iter-001"
    lineage = json.loads(status.lineage_json)
    assert lineage["code_version"] and "grpcio" in lineage["packages"]
    assert lineage["promotions"][0]["version"] == f"{RID}/iter-001"
    [model] = [m for m in lineage["models"] if m["version"] == f"{RID}/iter-001"]
    assert model["promoted"] and model["trained_from"][0].endswith("manifest.json")
    # every command once per attempt; duplicates of results were ignored, never accepted twice
    cmds = []
    for stage in ("acquire", "select", "train", "evaluate", "refine"):
        cmds += await topic_events(stack, f"{unique_name}.cmd.{stage}")
    assert len(cmds) == 4 + 2 + 2 + 2 + 1
    assert {c.attempt for c in cmds} == {1}
    evts = await control_events(stack, unique_name)
    promote = [d for d in decisions(evts, RID) if d.kind == Decision.KIND_PROMOTE]
    assert (
        len(promote) == 1 and promote[0].evidence[0].name == "dev" and promote[0].evidence[0].p_value == 0.001
    )
    assert metric(loop.evaluator, "selfimprove_results_ignored_total") >= 4
    # the run's series carry its id, and stay exported after it completed (until the next run ends)
    assert metric(loop.evaluator, "selfimprove_promotions_total", run_id=RID) == 1
    assert metric(loop.evaluator, "selfimprove_rejections_total", run_id=RID) == 1
    assert metric(loop.evaluator, "selfimprove_stage_duration_seconds_count", run_id=RID, stage="train") == 2
    assert metric(loop.evaluator, "selfimprove_iteration", run_id=RID) == 2
    assert metric(loop.evaluator, "selfimprove_last_progress_timestamp_seconds", run_id=RID) == 0

    # the CLI: status through the control plane, gc through the store
    env = {**os.environ, **stack.env(), "SELFIMPROVE_EVALUATOR_ADDRESS": f"127.0.0.1:{loop.port}"}
    cli = [sys.executable, "-m", "selfimprove.cli.main"]
    shown = json.loads(
        subprocess.run([*cli, "status", RID, "--json"], env=env, capture_output=True, check=True).stdout
    )
    assert shown["state"] == "completed" and shown["lineage"]["promotions"][0]["version"] == f"{RID}/iter-001"
    store = artifact_store(stack)
    store.put_bytes(f"runs/{RID}/iter-001/train/shard-000/attempt-9/adapter.bin", b"abandoned")
    subprocess.run([*cli, "gc", RID], env=env, check=True, capture_output=True)
    keys = set(store.list_keys(f"runs/{RID}/"))
    assert not any("attempt-9" in k for k in keys)
    adapter = model["adapter"]["uri"].split("/", 3)[3]
    assert adapter in keys and f"runs/{RID}/state/snapshot.json" in keys
    subprocess.run([*cli, "gc", RID, "--old"], env=env, check=True, capture_output=True)
    keys = set(store.list_keys(f"runs/{RID}/"))
    assert adapter in keys and model["trained_from"][0].split("/", 3)[3] in keys
    assert not any("/acquire/" in k for k in keys)


async def test_stop_command_ends_a_running_run(loop_factory, stack, unique_name):
    RID = unique_name  # noqa: N806 (run id: unique per test, the bucket is shared)
    loop = loop_factory({"drop": ["train:1"]})  # the run waits for training
    loop.start(CONFIG + "stages: {train: {timeout_s: 600}}\n", run_id=RID)
    env = {**os.environ, **stack.env(), "SELFIMPROVE_EVALUATOR_ADDRESS": f"127.0.0.1:{loop.port}"}
    cli = [sys.executable, "-m", "selfimprove.cli.main"]
    missing = subprocess.run([*cli, "stop", "no-such-run"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "no-such-run" in missing.stderr
    deadline = time.monotonic() + 60
    while loop.status(RID).stage != Stage.STAGE_TRAIN:
        assert time.monotonic() < deadline, "the run never reached training"
        await asyncio.sleep(0.2)
    stopped = subprocess.run(
        [*cli, "stop", RID, "--reason", "wrong config"], env=env, capture_output=True, text=True
    )
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"run {RID}: stopped"
    status = loop.status(RID)
    assert status.state == "stopped" and "wrong config" in status.stop_reason
    assert [d.kind for d in status.decisions][-1] == Decision.KIND_STOP


async def test_regression_blocks_promotion(loop_factory, unique_name):
    RID = unique_name  # noqa: N806 (run id: unique per test, the bucket is shared)
    loop = loop_factory({"eval": [[0.8, 0.4, 0.001, {"add1": [0.5, 0.9]}]]})
    config = (
        CONFIG
        + "stopping: {plateau_patience: 2}\ntask: {dev_size: 20, regression_suites: [{label: add1, params: {categories: [add1]}, dev_size: 10}]}\n"
    )
    config = config.replace("task: {dev_size: 20}\n", "", 1)
    loop.start(config, run_id=RID)
    status = loop.wait_done(RID)
    rejects = [d for d in status.decisions if d.kind == Decision.KIND_REJECT]
    assert rejects and rejects[0].reason.startswith("regression on add1")
    assert not [d for d in status.decisions if d.kind == Decision.KIND_PROMOTE]
    assert status.incumbent.version == f"{RID}/base"


async def test_stops_on_plateau(loop_factory, unique_name):
    RID = unique_name  # noqa: N806 (run id: unique per test, the bucket is shared)
    loop = loop_factory({"eval": [[0.5, 0.5, 1.0]]})
    loop.start(CONFIG.replace("iterations: 2", "iterations: 9"), run_id=RID)
    status = loop.wait_done(RID)
    assert status.stop_reason == "plateau: no promotion in the last 2 iterations"
    assert status.iteration == 2


async def test_stops_on_collapse(loop_factory, unique_name):
    RID = unique_name  # noqa: N806 (run id: unique per test, the bucket is shared)
    script = {"eval": [[0.5, 0.5, 1.0]], "agreement": [0.5, 0.7, 0.9], "diversity": [0.8, 0.6, 0.4]}
    loop = loop_factory(script)
    loop.start(
        CONFIG.replace("iterations: 2", "iterations: 9") + "stopping: {plateau_patience: 5}\n", run_id=RID
    )
    status = loop.wait_done(RID)
    assert status.stop_reason.startswith("collapse"), status.stop_reason
    assert status.iteration == 3


async def test_late_stage_is_recommanded_and_stop_and_resume(loop_factory, stack, unique_name):
    RID = unique_name  # noqa: N806 (run id: unique per test, the bucket is shared)
    loop = loop_factory({"drop": ["train:1"]})
    config = CONFIG + "stages: {train: {timeout_s: 2, max_attempts: 3}}\n"
    loop.start(config, run_id=RID)
    status = loop.wait_done(RID)
    assert status.state == "completed"
    trains = await topic_events(stack, f"{unique_name}.cmd.train")
    assert [t.attempt for t in trains if t.iteration == 1] == [1, 2]
    assert metric(loop.evaluator, "selfimprove_stage_retries_total", stage="train") >= 1
    assert any(d.kind == Decision.KIND_RETRY for d in status.decisions)
    again = loop.start("", run_id=RID)
    assert again.resumed
