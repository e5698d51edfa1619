"""Control-event latency on the local stack: a stage result consumed by the evaluator -> the next
stage command acknowledged by the broker (``acks=all``), through the real consume loop (decode,
durable dedup in the object store, decide, publish decision + command). Goal: p99 < 50 ms.

Starts its own Tansu + SeaweedFS on loopback, the controller in-process and in-process stand-in
stages that answer every command at once (``tests/support/fake_stages.respond``), then drives
``--iterations`` whole iterations (each: N acquire shards, select, train, evaluate, refine).
End-to-end latency (result published by the stage -> command received by the stage) is shown too.

Run: ``.venv/bin/python benchmarks/control_latency.py [--iterations 40]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfimprove.core import envelope as envelopes  # noqa: E402
from selfimprove.core.bus import Bus, Outgoing  # noqa: E402
from selfimprove.core.consumer import Consumer  # noqa: E402
from selfimprove.core.dedup import MemoryDedup, ObjectStoreDedup  # noqa: E402
from selfimprove.core.metrics import Metrics  # noqa: E402
from selfimprove.core.settings import KafkaSettings  # noqa: E402
from selfimprove.core.stack import LocalStack  # noqa: E402
from selfimprove.core.topics import STAGES  # noqa: E402
from selfimprove.evaluator.controller import Controller  # noqa: E402
from selfimprove.evaluator.loopmetrics import LoopMetrics  # noqa: E402
from selfimprove.v2.common_pb2 import Stage  # noqa: E402
from selfimprove.v2.stages_pb2 import RunControl  # noqa: E402
from tests.support.buskit import artifact_store  # noqa: E402
from tests.support.fake_stages import respond  # noqa: E402

CONFIG = """
budget: {{iterations: {iterations}, wall_time_s: 36000}}
acquisition: {{shards: 2}}
stopping: {{plateau_patience: 1000}}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run(stack: LocalStack, iterations: int) -> dict:
    prefix = f"bench{os.getpid()}"
    kafka = KafkaSettings(
        bootstrap_servers=stack.kafka_bootstrap, topic_prefix=prefix, partitions=1, session_timeout_ms=6000
    )
    store = artifact_store(stack)
    metrics = Metrics("evaluator")
    bus = await Bus(kafka, metrics).start()
    topics = bus.topics
    await bus.ensure_topics(topics.all())
    controller = Controller(bus, store, LoopMetrics(metrics), {"code_version": "bench"})
    group = f"{prefix}.evaluator"
    ctrl = Consumer(
        bus,
        [topics.result(s) for s in STAGES] + [topics.control],
        group,
        controller.handle,
        ObjectStoreDedup(store, group),
    )
    sent: dict[str, float] = {}  # result event causation -> publish time
    e2e: list[float] = []
    stage_bus = await Bus(kafka).start()

    async def stage(env):
        if env.causation_id in sent:
            e2e.append(time.perf_counter() - sent.pop(env.causation_id))
        outs = [Outgoing(topics.result(env.stage), r, env.run_id) for r in respond(env, {})]
        for out in outs:
            out.envelope.event_id = envelopes.new_event_id()
            sent[out.envelope.event_id] = time.perf_counter()
            await stage_bus.publish(out.topic, out.envelope, out.key)
        return []

    fakes = Consumer(stage_bus, [topics.command(s) for s in STAGES], f"{prefix}.fakes", stage, MemoryDedup())
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ctrl.run(stop)), asyncio.create_task(fakes.run(stop))]
    await asyncio.wait_for(asyncio.gather(ctrl.assigned.wait(), fakes.assigned.wait()), 60)
    start = envelopes.make(
        run_id="bench",
        iteration=0,
        stage=Stage.STAGE_CONTROL,
        producer="bench",
        run_control=RunControl(
            action=RunControl.ACTION_START, config_yaml=CONFIG.format(iterations=iterations)
        ),
    )
    t0 = time.perf_counter()
    await bus.publish(topics.control, start)
    while "bench" not in controller.runs or controller.runs["bench"].active:
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(*tasks)
    await stage_bus.stop()
    await bus.stop()
    state = controller.runs["bench"]
    return {
        "latencies": controller.latencies,
        "e2e": e2e,
        "wall": wall,
        "iterations": state.iteration,
        "stop": state.stop_reason,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}"
    )
    with LocalStack() as stack:
        result = asyncio.run(run(stack, args.iterations))
    lat, e2e = result["latencies"], result["e2e"]
    ms = lambda v: f"{1000 * v:.1f} ms"  # noqa: E731
    print(f"run: {result['iterations']} iterations in {result['wall']:.1f}s ({result['stop']})")
    print(
        f"control latency (result consumed -> next command acked), n={len(lat)}: "
        f"p50 {ms(percentile(lat, 0.5))}, p99 {ms(percentile(lat, 0.99))}, max {ms(max(lat))}"
    )
    print(
        f"end to end (result published -> next command received by the stage), n={len(e2e)}: "
        f"p50 {ms(percentile(e2e, 0.5))}, p99 {ms(percentile(e2e, 0.99))}"
    )


if __name__ == "__main__":
    main()
