"""The evaluation worker with a tiny random Llama (saved as a Hugging Face folder) as the base model:
paired scores per suite, per-item details, and the incumbent's results cached across commands."""

from __future__ import annotations

import json

import pytest

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.evaluator.commands import task_spec
from selfimprove.v1.common_pb2 import ModelRef, Stage
from selfimprove.v1.stages_pb2 import EvaluateCommand

from .buskit import ServiceProcess, artifact_store, kafka_settings
from .evaluator_kit import FAST, topic_events

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from selfimprove.runtime.tiny import tiny_llama

    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model, tokenizer = tiny_llama()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def command(run_id: str, base: str, attempt: int) -> object:
    cmd = EvaluateCommand(
        candidate=ModelRef(base=base, version="cand"),
        incumbent=ModelRef(base=base, version="inc"),
        task=task_spec("arithmetic", {"categories": ["add2"]}, _suite="dev", _max_new_tokens=6),
        dev_size=4,
        seed=7,
        regression_suites=[
            task_spec("arithmetic", {"categories": ["add1"]}, _suite="add1", _dev_size=2, _max_new_tokens=6)
        ],
    )
    return envelopes.make(
        run_id=run_id,
        iteration=1,
        stage=Stage.STAGE_EVALUATE,
        producer="test",
        attempt=attempt,
        evaluate_command=cmd,
    )


async def test_worker_scores_suites_and_caches_the_incumbent(stack, unique_name, tmp_path, tiny_base):
    worker = ServiceProcess(
        "-m selfimprove.evaluator.worker",
        stack,
        unique_name,
        tmp_path / "worker.log",
        SELFIMPROVE_EVALUATOR_WORKER_BATCH_SIZE="8",
        HF_HUB_OFFLINE="1",
        **FAST,
    )
    try:
        worker.wait_ready(timeout=120)
        async with Bus(kafka_settings(stack, unique_name)) as bus:
            await bus.publish(f"{unique_name}.cmd.evaluate", command(unique_name, tiny_base, 1))
            first = await topic_events(stack, f"{unique_name}.evt.evaluate", expect=1, timeout=120)
            await bus.publish(f"{unique_name}.cmd.evaluate", command(unique_name, tiny_base, 2))
            both = await topic_events(stack, f"{unique_name}.evt.evaluate", expect=2, timeout=120)
    finally:
        worker.stop()
    assert first and first[0].WhichOneof("payload") == "evaluate_result", first
    result = first[0].evaluate_result
    assert [s.name for s in result.suites] == ["dev", "add1"]
    assert [s.n for s in result.suites] == [4, 2]
    # the same model on both sides: identical outcomes, no difference, p = 1
    assert all(s.candidate_accuracy == s.incumbent_accuracy and s.p_value == 1.0 for s in result.suites)
    lines = artifact_store(stack).read_file(result.details, "details.jsonl").decode().splitlines()
    rows = [json.loads(x) for x in lines]
    assert len(rows) == 6 and {"incumbent_reply", "candidate_reply", "answer"} <= set(rows[0])
    assert result.stats.values["cache_hits"] == 2  # the candidate is the same version as the incumbent
    second = both[1].evaluate_result
    assert second.stats.values["cache_hits"] == 4 and second.stats.values["tokens"] == 0
