"""An evaluator killed (like SIGKILL) at three moments and restarted finishes its run with no duplicate
promotion and no stage result accepted twice (test hook ``SELFIMPROVE_EVALUATOR_CRASH_AT``)."""

from __future__ import annotations

import collections

import pytest

from selfimprove.evaluator import snapshot
from selfimprove.v2.stages_pb2 import Decision
from tests.support.buskit import artifact_store
from tests.support.evaluator_kit import Loop, control_events, topic_events

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

# The normal stage timeouts (30 minutes): a result that raced ahead of the redelivered event that
# caused it is parked and accepted when that event is applied, so no stage is re-commanded.
CONFIG = """
budget: {iterations: 2}
acquisition: {shards: 2}
task: {dev_size: 20}
"""
POINTS = [
    # after consuming a result, before publishing the next command
    "after_consume:evaluate_result",
    # after publishing the next command (and writing the snapshot), before committing the input
    "before_commit:evaluate_result",
    # after publishing a promotion, before the snapshot records it
    "after_promote",
]


@pytest.mark.parametrize("point", POINTS)
async def test_killed_evaluator_resumes_without_duplicates(stack, unique_name, tmp_path, point):
    RID = unique_name  # noqa: N806 (run id: unique per test, the bucket is shared)
    loop = Loop(
        stack,
        unique_name,
        tmp_path,
        {"eval": [[0.7, 0.4, 0.001], [0.5, 0.7, 0.2]]},
        SELFIMPROVE_EVALUATOR_CRASH_AT=point,
    )
    try:
        loop.start(CONFIG, run_id=RID)
        assert loop.evaluator.wait_exit(timeout=90) == 137
        loop.restart_evaluator()
        status = loop.wait_done(RID)
        assert status.state == "completed" and status.stop_reason == "budget spent: 2 iterations"
        assert [d.kind for d in status.decisions].count(Decision.KIND_PROMOTE) == 1

        events = await control_events(stack, unique_name)
        promotes = {
            e.event_id
            for e in events
            if e.WhichOneof("payload") == "decision" and e.decision.kind == Decision.KIND_PROMOTE
        }
        assert len(promotes) == 1, "a promotion was decided twice"

        state = snapshot.load(artifact_store(stack), RID)
        assert len(state.promotions) == 1
        assert state.promotions[0]["decision_event_id"] in promotes
        assert len(state.accepted_ids) == len(set(state.accepted_ids))
        per_slot = collections.Counter(
            (a["iteration"], a["stage"], a["shard"]) for a in state.lineage["artifacts"]
        )
        assert set(per_slot.values()) == {1}, per_slot
        # a command re-sent after the crash kept its event id: one id per (iteration, stage, shard, attempt)
        for stage in ("acquire", "select", "train", "evaluate", "refine"):
            ids = collections.defaultdict(set)
            for c in await topic_events(stack, f"{unique_name}.cmd.{stage}"):
                ids[(c.iteration, c.shard, c.attempt)].add(c.event_id)
            assert all(len(v) == 1 for v in ids.values()), (stage, ids)
            # recovered at once, never by a timeout's next attempt
            assert {attempt for _, _, attempt in ids} == {1}, (stage, sorted(ids))
        assert not [d for d in state.decisions if d["kind"] == "retry"]
    finally:
        loop.stop()
