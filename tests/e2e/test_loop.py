"""The whole loop with the real model: every service as its own process on the real local stack,
two small iterations (the first asks every prompt with its answer as a hint only; the dev suite is
looked at after 8 of its 16 items), then the events, the artifacts (manifests verified) and one
decision per iteration are checked."""

from __future__ import annotations

import asyncio
import json

import pytest

from selfimprove.core import envelope as envelopes
from selfimprove.core.local_loop import LocalLoop
from selfimprove.core.stack import LocalStack
from selfimprove.core.topics import Topics
from selfimprove.v2.stages_pb2 import Decision
from tests.support.buskit import artifact_store, read_topic

pytestmark = pytest.mark.e2e

CONFIG = """
base_model: smollm2-135m-instruct
label_mode: verified
seed: 7
task: {name: arithmetic, params: {categories: [add1, add2]}, dev_size: 16, tactics: {rationalize: true}}
budget: {iterations: 2, wall_time_s: 1500}
acquisition: {shards: 2, prompts_per_shard: 16, samples_per_prompt: 4, max_new_tokens: 48}
training: {method: sft, hparams: {epochs: 2, batch_size: 4, frozen_dtype: auto}}
evaluation: {max_new_tokens: 48, alpha: 0.2, interim_looks: [8], interim_alpha: 0.1}
refinement: {strategies: [greedy, self_consistency@3], dev_size: 8}
stopping: {plateau_patience: 3}
stages:
  acquire: {timeout_s: 600}
  select: {timeout_s: 300}
  train: {timeout_s: 600}
  evaluate: {timeout_s: 600}
  refine: {timeout_s: 600}
"""


def test_two_iterations_with_the_real_model(tmp_path, unique_name):
    from selfimprove.cli.run import follow

    prefix = unique_name
    stack = LocalStack(root=tmp_path / "stack")
    loop = LocalLoop(
        stack, env={"SELFIMPROVE_KAFKA_TOPIC_PREFIX": prefix, "SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000"}
    )
    with loop:
        summary = follow(loop.grpc_address("evaluator"), CONFIG, run_id=f"e2e-{unique_name}", quiet=True)
        assert summary["state"] == "completed", summary
        topics = Topics(prefix)
        events = {}
        for topic in topics.all():
            records = asyncio.run(read_topic(stack.kafka_bootstrap, topic, expect=10_000, timeout=3))
            events[topic] = [envelopes.decode(r.value) for r in records]
        run_events = {  # stage results and commands; progress reports only show in the status
            t: [
                e
                for e in evs
                if e.run_id == summary["run_id"] and e.WhichOneof("payload") != "stage_progress"
            ]
            for t, evs in events.items()
        }
        store = artifact_store(stack)
        for stage in (1, 2, 3):  # acquire, select, train: commanded and answered each iteration
            for iteration in (1, 2):
                assert any(e.iteration == iteration for e in run_events[topics.command(stage)]), (
                    stage,
                    iteration,
                )
                results = [e for e in run_events[topics.result(stage)] if e.iteration == iteration]
                assert results and not any(e.WhichOneof("payload") == "stage_failure" for e in results)
        for env in run_events[topics.result(1)]:
            store.verify(env.acquire_result.samples)
        asked = {(e.iteration, e.acquire_command.tactics.rationalize) for e in run_events[topics.command(1)]}
        assert asked == {(1, True), (2, True)}
        for env in run_events[topics.result(1)]:  # plain samples, then hints for the unanswered prompts
            figures = env.acquire_result.stats
            assert figures.samples == 16 * 4, (env.iteration, figures)
            assert figures.answered >= figures.yield_rate
        for env in run_events[topics.result(2)]:
            manifest = store.verify(env.select_result.dataset)
            assert {"sft.jsonl", "card.json"} <= {f.path for f in manifest.files}
        for env in run_events[topics.result(3)]:
            manifest = store.verify(env.train_result.candidate.adapter)
            assert "adapter_config.json" in {f.path for f in manifest.files}
        decisions = [e for e in run_events[topics.control] if e.WhichOneof("payload") == "decision"]
        judged = {
            e.iteration for e in decisions if e.decision.kind in (Decision.KIND_PROMOTE, Decision.KIND_REJECT)
        }
        assert judged == {1, 2}  # one verdict on each iteration's candidate
        evaluated = [e for e in run_events[topics.result(4)] if e.WhichOneof("payload") == "evaluate_result"]
        for env in evaluated:  # a healthy candidate was evaluated on the dev set, with evidence
            assert env.evaluate_result.suites and env.evaluate_result.suites[0].n in (8, 16)
            store.verify(env.evaluate_result.details)
        for e in decisions:  # a clear gain may settle at the interim look of 8 items, and says so
            if e.decision.kind in (Decision.KIND_PROMOTE, Decision.KIND_REJECT):
                settled = (
                    next(x for x in evaluated if x.iteration == e.iteration).evaluate_result.suites[0].n == 8
                )
                assert ("at an interim look (8 of 16 dev problems)" in e.decision.reason) == settled
        assert len(summary["accuracy"]) >= 1
        print(json.dumps({"accuracy": summary["accuracy"], "decisions": summary["decisions"]}, indent=1))
