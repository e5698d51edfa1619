"""Stage progress end to end without a broker: the reporter's events (throttled, the last one always
sent), the controller's board (advisory: no state change, no outputs), the run status, the CLI bars."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from selfimprove.core import envelope as envelopes
from selfimprove.core.metrics import Metrics
from selfimprove.core.progress import StageReporter
from selfimprove.core.topics import Topics
from selfimprove.evaluator import decide
from selfimprove.evaluator.config import dump_config, load_config
from selfimprove.evaluator.controller import Controller
from selfimprove.evaluator.loopmetrics import LoopMetrics
from selfimprove.evaluator.status import run_status
from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.stages_pb2 import StageProgress

pytestmark = pytest.mark.unit
TOPICS = Topics("t")


class FakeBus:
    def __init__(self, fail: bool = False):
        self.topics, self.sent, self.fail = TOPICS, [], fail

    async def publish(self, topic, env, key=""):
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((topic, env))


def acquire_command():
    cfg = load_config("run_id: r1\nacquisition: {shards: 2}\n")
    tr = decide.start(TOPICS, cfg, dump_config(cfg), "r1", 1000.0, "start", {})
    command = next(o.envelope for o in tr.out if o.envelope.WhichOneof("payload") == "acquire_command")
    return cfg, tr.state, command


def test_reporter_throttles_from_another_thread_and_always_sends_the_last():
    _, _, command = acquire_command()
    bus, now = FakeBus(), [0.0]

    async def main():
        report = StageReporter(bus, command, "acquisition/x", unit="prompts", every=2.0, clock=lambda: now[0])
        report.update(0, 10)

        def work():  # the compute thread
            for _ in range(10):
                now[0] += 0.5
                report.advance(1)

        await asyncio.to_thread(work)
        await asyncio.sleep(0.05)

    asyncio.run(main())
    done = [env.stage_progress.done for _, env in bus.sent]
    assert done[0] == 0 and done[-1] == 10 and len(done) < 11
    topic, env = bus.sent[-1]
    assert topic == TOPICS.result(Stage.STAGE_ACQUIRE)
    assert env.run_id == "r1" and env.causation_id == command.event_id and env.stage == Stage.STAGE_ACQUIRE
    assert env.stage_progress.total == 10 and env.stage_progress.unit == "prompts"
    assert len({env.event_id for _, env in bus.sent}) == len(bus.sent)  # never deduplicated away


def test_a_failed_publish_is_dropped_and_the_work_goes_on():
    _, _, command = acquire_command()

    async def main():
        report = StageReporter(FakeBus(fail=True), command, "a/x", total=2)
        await asyncio.to_thread(report.advance, 2)
        await asyncio.sleep(0.05)
        return report.done

    assert asyncio.run(main()) == 2


def progress_event(command, done, total=8):
    return envelopes.caused_by(
        command, "acquisition/x", stage_progress=StageProgress(done=done, total=total, unit="prompts")
    )


def test_controller_shows_progress_in_the_status_and_decides_nothing():
    cfg, state, command = acquire_command()
    controller = Controller(SimpleNamespace(topics=TOPICS), None, LoopMetrics(Metrics("evaluator")), {})
    controller.runs["r1"] = state
    before = state.to_json()
    for done in (3, 5, 4):  # a late, smaller report never moves the bar back
        assert asyncio.run(controller.handle(progress_event(command, done))) == []
    assert state.to_json() == before
    shown = controller.progress.current("r1", state.iteration, Stage.STAGE_ACQUIRE)
    status = run_status(state, shown)
    [p] = status.progress
    assert (p.stage, p.shard, p.progress.done, p.progress.total) == (Stage.STAGE_ACQUIRE, command.shard, 5, 8)


def test_run_follow_draws_a_bar_per_shard_and_drops_them_when_the_stage_moves_on():
    from rich.progress import Progress

    from selfimprove.cli.run import StageBars
    from selfimprove.v2.control_pb2 import RunStatus, ShardProgress

    progress = Progress(disable=True)
    bars = StageBars(progress)
    shards = [
        ShardProgress(
            stage=Stage.STAGE_ACQUIRE,
            shard=s,
            attempt=1,
            progress=StageProgress(done=s, total=4, unit="prompts"),
        )
        for s in (0, 1)
    ]
    bars.show(RunStatus(iteration=1, stage=Stage.STAGE_ACQUIRE, progress=shards))
    assert sorted(t.completed for t in progress.tasks) == [0, 1]
    assert [t.description for t in progress.tasks] == ["  acquire shard 0", "  acquire shard 1"]
    bars.show(RunStatus(iteration=1, stage=Stage.STAGE_SELECT))
    assert progress.tasks == []


def test_reporter_is_safe_to_call_from_many_threads():
    _, _, command = acquire_command()
    bus = FakeBus()

    async def main():
        report = StageReporter(bus, command, "a/x", total=400, every=0.0)
        threads = [threading.Thread(target=lambda: [report.advance(1) for _ in range(100)]) for _ in range(4)]
        await asyncio.to_thread(lambda: ([t.start() for t in threads], [t.join() for t in threads]))
        await asyncio.sleep(0.1)
        return report.done

    assert asyncio.run(main()) == 400
    assert max(env.stage_progress.done for _, env in bus.sent) == 400
