"""Test stand-ins for the stage services: answer every stage command with a plausible result, no model.

``respond(env, script)`` is pure (unit tests call it); run as a process it consumes every command
topic with the real consume loop (dedup included) and publishes small real artifacts.
``$FAKE_SCRIPT`` (JSON) shapes the answers per iteration (lists are indexed by iteration - 1, the last
entry repeats):

- ``eval``: ``[[candidate, incumbent, p_value, {suite: [candidate, incumbent]}], ...]``; a suite not
  named scores 0.9 for both (``heldout_phrasing`` names the held-out-phrasing split's suite)
- ``eval_n``: ``{iteration: n}``, the main suite's size when it was settled at an interim look
- ``agreement``, ``diversity``: acquisition ``agreement_mean`` and selection ``diversity``
- ``yield``, ``majority_share``: acquisition's verified ``yield`` (and ``answered``) and its share of
  prompts with a majority answer
- ``samples`` (per shard), ``kept``, ``loss``: ``[initial, final]`` (the adapter's ``loss_curve.json``
  goes from one to the other in 10 steps)
- ``drop``: ``["train:1", ...]`` slot:attempt commands left unanswered (to test timeouts)
- ``duplicate``: stages whose result is published twice under different event ids (two replicas)
- ``fail``: ``["select:1"]`` answer that attempt with a retryable ``StageFailure``
"""

from __future__ import annotations

import json
import os
import uuid

from selfimprove.core import envelope as envelopes
from selfimprove.core.stage import stats_dict
from selfimprove.core.topics import STAGES, Topics
from selfimprove.v2.common_pb2 import ArtifactRef, ModelRef
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import (
    AcquireResult,
    AcquireStats,
    CategoryStats,
    EvaluateResult,
    EvaluateStats,
    RefineResult,
    RefineStats,
    SelectResult,
    SelectStats,
    StageFailure,
    StrategyScore,
    SuiteScore,
    TrainResult,
    TrainStats,
)

PRODUCER = "fake-stages"


def _pick(values, iteration: int, default):
    if not values:
        return default
    return values[min(iteration, len(values)) - 1]


def _ref(name: str, env: Envelope) -> ArtifactRef:
    return ArtifactRef(
        uri=f"s3://fake/{env.run_id}/{env.iteration}/{name}/{env.attempt}", sha256="00" * 32, bytes=1
    )


def slot_of(env: Envelope) -> str:
    stage = STAGES[env.stage]
    return f"{stage}/{env.shard}" if stage == "acquire" else stage


def respond(env: Envelope, script: dict, refs=None) -> list[Envelope]:
    """The result events a stage would publish for command ``env`` (empty: no answer)."""
    refs = refs or (lambda name, files, meta: _ref(name, env))
    stage, it = STAGES[env.stage], env.iteration
    slot = f"{slot_of(env)}:{env.attempt}"
    if slot in script.get("drop", []) or f"{stage}:{env.attempt}" in script.get("drop", []):
        return []
    if f"{stage}:{env.attempt}" in script.get("fail", []):
        failure = StageFailure(error_type="TransientError", message="fake failure", retryable=True)
        return [envelopes.caused_by(env, PRODUCER, stage_failure=failure)]
    if stage == "acquire":
        n = int(_pick(script.get("samples"), it, 10))
        stats = AcquireStats(
            prompts=4,
            samples=n,
            hinted_samples=0,
            answered=float(_pick(script.get("yield"), it, 0.5)),
            tokens=100,
            yield_rate=float(_pick(script.get("yield"), it, 0.5)),
            agreement_mean=float(_pick(script.get("agreement"), it, 0.5)),
            majority_share=float(_pick(script.get("majority_share"), it, 0.5)),
            pass_rate_mean=0.5,
        )
        categories: dict[str, CategoryStats] = {}
        for category, rate in script.get("category_pass", {}).items():  # e.g. {"add2": 0.75}
            categories.setdefault(category, CategoryStats(category=category)).MergeFrom(
                CategoryStats(pass_rate=rate, verified=2)
            )
        for category, share in script.get("category_open", {}).items():  # e.g. {"add2": 0.25}
            categories.setdefault(category, CategoryStats(category=category)).MergeFrom(
                CategoryStats(open_labels=round(share * 4), asked=4)
            )
        stats.categories.extend(categories[k] for k in sorted(categories))
        ref = refs("samples", {"samples.jsonl": b"{}\n" * max(n, 1)}, {"stats": stats_dict(stats)})
        out = AcquireResult(shard=env.shard, samples=ref, stats=stats)
        result = envelopes.caused_by(env, PRODUCER, acquire_result=out)
    elif stage == "select":
        stats = SelectStats(
            kept=int(_pick(script.get("kept"), it, 10)),
            pairs=0,
            diversity=float(_pick(script.get("diversity"), it, 0.8)),
            yield_rate=0.5,
        )
        files = {"sft.jsonl": b"{}\n", "pairs.jsonl": b"", "card.json": b"{}"}
        ref = refs("selected", files, {"stats": stats_dict(stats)})
        out = SelectResult(dataset=ref, stats=stats)
        result = envelopes.caused_by(env, PRODUCER, select_result=out)
    elif stage == "train":
        initial, final = _pick(script.get("loss"), it, [2.0, 1.0])
        stats = TrainStats(steps=10, tokens=500, initial_loss=initial, final_loss=final)
        curve = [{"step": i + 1, "loss": initial + (final - initial) * i / 9} for i in range(10)]
        files = {
            "adapter_config.json": b"{}",
            "adapter_model.safetensors": os.urandom(16),
            "loss_curve.json": json.dumps(curve).encode(),
        }
        ref = refs("adapter", files, {"stats": stats_dict(stats)})
        cand = ModelRef(base=env.train_command.policy.base, adapter=ref)
        result = envelopes.caused_by(env, PRODUCER, train_result=TrainResult(candidate=cand, stats=stats))
    elif stage == "evaluate":
        cand, inc, p, regs = (_pick(script.get("eval"), it, [0.6, 0.4, 0.01, {}]) + [{}])[:4]
        cmd = env.evaluate_command
        suites = [
            SuiteScore(
                name="dev",
                candidate_accuracy=cand,
                incumbent_accuracy=inc,
                n=script.get("eval_n", {}).get(it, cmd.suites[0].dev_size),
                delta_low=cand - inc - 0.1,
                delta_high=cand - inc + 0.1,
                p_value=p,
            )
        ]
        for suite in cmd.suites[1:]:
            label = suite.name
            c, i = regs.get(label, [0.9, 0.9])
            suites.append(
                SuiteScore(
                    name=label,
                    split=suite.split,
                    candidate_accuracy=c,
                    incumbent_accuracy=i,
                    n=50,
                    delta_low=c - i - 0.1,
                    delta_high=c - i + 0.1,
                    p_value=0.5,
                )
            )
        ref = refs("details", {"details.jsonl": b"{}\n"}, {})
        out = EvaluateResult(suites=suites, details=ref, stats=EvaluateStats(tokens=200))
        result = envelopes.caused_by(env, PRODUCER, evaluate_result=out)
    else:
        ref = refs("targets", {"targets.jsonl": b"{}\n"}, {})
        table = [StrategyScore(strategy="greedy", accuracy=0.5, tokens_per_problem=20, n=10)]
        out = RefineResult(
            table=table,
            chosen="greedy",
            targets=ref,
            stats=RefineStats(dev_n=10, strategies=1, greedy_accuracy=0.5),
        )
        result = envelopes.caused_by(env, PRODUCER, refine_result=out)
    results = [result]
    if stage in script.get("duplicate", []):
        twin = Envelope()
        twin.CopyFrom(result)
        twin.event_id = str(uuid.uuid4())
        results.append(twin)
    return results


async def setup(ctx):
    from selfimprove.core.bus import Outgoing
    from selfimprove.core.stage import prefix_for

    script = json.loads(os.environ.get("FAKE_SCRIPT", "{}"))
    topics: Topics = ctx.bus.topics

    async def handle(env: Envelope):
        import asyncio

        def publish(name, files, meta):
            return ctx.store.publish(prefix_for(env) + "", files, meta)

        def refs(name, files, meta):
            existing = ctx.store.find_manifest(prefix_for(env))
            return existing or publish(name, files, meta)

        results = await asyncio.to_thread(respond, env, script, refs)
        return [Outgoing(topics.result(env.stage), r, env.run_id) for r in results]

    consumer = ctx.consumer([topics.command(s) for s in STAGES], handle, max_handler_seconds=30)
    return [consumer.run]


if __name__ == "__main__":
    from selfimprove.core.runner import main

    main("fake-stages", setup)
