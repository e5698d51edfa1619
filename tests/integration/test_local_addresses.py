"""A second terminal finds a running local loop: ``selfimprove status`` in a subprocess, with no
``--address``, reaches the control plane the loop wrote to ``.stack/addresses.json`` and shows the
progress a stage published on the real broker; once the loop stops, the file is gone, and a stale
one is refused at once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from selfimprove.cli.control import control_stub
from selfimprove.core import addresses
from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.core.local_loop import LocalLoop
from selfimprove.core.stack import LocalStack
from selfimprove.v2 import control_pb2
from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.stages_pb2 import StageProgress
from tests.support.buskit import kafka_settings
from tests.support.evaluator_kit import FAST

pytestmark = pytest.mark.integration


def status_cli(cwd, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFIMPROVE_")}
    return subprocess.run(
        [sys.executable, "-m", "selfimprove.cli.main", "status", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def publish_progress(stack: LocalStack, run_id: str) -> None:
    async with Bus(kafka_settings(stack, "selfimprove")) as bus:
        env = envelopes.make(
            run_id=run_id,
            iteration=1,
            stage=Stage.STAGE_ACQUIRE,
            shard=0,
            attempt=1,
            producer="test",
            stage_progress=StageProgress(done=3, total=8, unit="prompts"),
        )
        await bus.publish(bus.topics.result(Stage.STAGE_ACQUIRE), env)


def test_status_in_another_terminal_finds_the_local_loop(tmp_path, unique_name):
    root = tmp_path / ".stack"
    loop = LocalLoop(LocalStack(root=root), services={"evaluator": "selfimprove.evaluator"}, env=FAST)
    try:
        loop.start()
        written = json.loads((root / addresses.FILE).read_text())
        assert written["evaluator"] == loop.grpc_address("evaluator") and written["pid"] == os.getpid()
        stub, _ = control_stub(loop.grpc_address("evaluator"))
        config = "budget: {iterations: 1}\nacquisition: {shards: 1}\n"
        stub.StartRun(control_pb2.StartRunRequest(config_yaml=config, run_id=unique_name), timeout=60)
        asyncio.run(publish_progress(loop.stack, unique_name))
        deadline = time.monotonic() + 60
        while True:
            done = status_cli(tmp_path, unique_name)
            assert done.returncode == 0, done.stderr
            if "shard 0: 3/8 prompts" in done.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert f"run {unique_name}: running" in done.stdout
        assert "shard 0: 3/8 prompts (38%)" in done.stdout
    finally:
        loop.stop()
    assert not (root / addresses.FILE).exists()
    addresses.write(root, addresses.LocalAddresses(written["pid"] + 10**6, written["evaluator"]))
    started = time.monotonic()
    stale = status_cli(tmp_path, unique_name)
    assert stale.returncode == 2 and "has ended" in stale.stderr, stale.stderr
    assert time.monotonic() - started < 30
