"""The evaluation worker with a tiny random Llama (saved as a Hugging Face folder) as the base model:
paired scores per suite, per-item details, and the incumbent's results cached across commands."""

from __future__ import annotations

import json

import pytest

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.evaluator.commands import task_spec
from selfimprove.v2.common_pb2 import ModelRef, Stage
from selfimprove.v2.stages_pb2 import EvalSuite, EvaluateCommand
from tests.support.buskit import ServiceProcess, artifact_store, kafka_settings
from tests.support.evaluator_kit import FAST, topic_events

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
        seed=7,
        suites=[
            EvalSuite(name="dev", task=task_spec("arithmetic", {"categories": ["add2"]}), dev_size=4),
            EvalSuite(
                name="heldout_phrasing",
                task=task_spec("arithmetic", {"categories": ["add2"]}),
                dev_size=4,
                split="heldout_phrasing",
            ),
            EvalSuite(name="add1", task=task_spec("arithmetic", {"categories": ["add1"]}), dev_size=2),
        ],
        max_new_tokens=6,
    )
    return envelopes.make(
        run_id=run_id,
        iteration=1,
        stage=Stage.STAGE_EVALUATE,
        producer="test",
        attempt=attempt,
        evaluate_command=cmd,
    )


def start_worker(stack, unique_name: str, tmp_path) -> ServiceProcess:
    return ServiceProcess(
        "-m selfimprove.evaluator.worker",
        stack,
        unique_name,
        tmp_path / "worker.log",
        SELFIMPROVE_EVALUATOR_WORKER_BATCH_SIZE="8",
        HF_HUB_OFFLINE="1",
        **FAST,
    )


async def test_worker_scores_suites_and_caches_the_incumbent(stack, unique_name, tmp_path, tiny_base):
    worker = start_worker(stack, unique_name, tmp_path)
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
    assert [s.name for s in result.suites] == ["dev", "heldout_phrasing", "add1"]
    assert [s.split for s in result.suites] == ["", "heldout_phrasing", ""]
    assert [s.n for s in result.suites] == [4, 4, 2]
    # the same model on both sides: identical outcomes, no difference, p = 1
    assert all(s.candidate_accuracy == s.incumbent_accuracy and s.p_value == 1.0 for s in result.suites)
    lines = artifact_store(stack).read_file(result.details, "details.jsonl").decode().splitlines()
    rows = [json.loads(x) for x in lines]
    assert len(rows) == 10 and {"incumbent_reply", "candidate_reply", "answer"} <= set(rows[0])
    # the held-out-phrasing suite asks the dev problems, in other wordings
    dev, worded = ([r for r in rows if r["suite"] == name] for name in ("dev", "heldout_phrasing"))
    assert [r["id"] for r in worded] == [r["id"] for r in dev]
    assert all(w["prompt"] != d["prompt"] for w, d in zip(worded, dev, strict=True))
    assert result.stats.cache_hits == 3  # the candidate is the same version as the incumbent
    second = both[1].evaluate_result
    assert second.stats.cache_hits == 6 and second.stats.tokens == 0


def looked_command(run_id: str, candidate: ModelRef, incumbent: ModelRef) -> object:
    cmd = EvaluateCommand(
        candidate=candidate,
        incumbent=incumbent,
        suites=[EvalSuite(name="dev", task=task_spec("arithmetic", {"categories": ["add2"]}), dev_size=8)],
        max_new_tokens=6,
        interim_looks=[4],
        interim_alpha=0.2,
        seed=7,
    )
    return envelopes.make(
        run_id=run_id, iteration=1, stage=Stage.STAGE_EVALUATE, producer="test", evaluate_command=cmd
    )


async def test_interim_looks_settle_a_clear_gain_early_and_go_on_otherwise(
    stack, unique_name, tmp_path, tiny_base
):
    from selfimprove.evaluator import evalcache
    from selfimprove.runtime.policy import version_key
    from selfimprove.runtime.tasks.arithmetic import ArithmeticTask
    from selfimprove.v2.common_pb2 import ArtifactRef

    store = artifact_store(stack)
    suite = json.dumps(
        {"task": "arithmetic", "params": {"categories": ["add2"]}, "max_new_tokens": 6, "split": "dev"},
        sort_keys=True,
    )
    first4 = [it.id for it in ArithmeticTask(["add2"]).items("dev", 8, seed=7)[:4]]
    # outcomes of the first chunk already in the cache: the incumbent missed all 4, the candidate
    # (an adapter the worker could not even load) got all 4; 4 discordant pairs give p = 0.125 < 0.2
    better = ModelRef(base=tiny_base, adapter=ArtifactRef(uri="s3://nowhere/cand", sha256="c0ffee"))
    plain = ModelRef(base=tiny_base)
    for model, ok in ((plain, False), (better, True)):
        prefix = evalcache.cache_prefix(version_key(model), f"{suite}#0-4", 7, 4)
        evalcache.put(store, prefix, {"ids": first4, "replies": ["x"] * 4, "ok": [ok] * 4, "tokens": 0})
    worker = start_worker(stack, unique_name, tmp_path)
    try:
        worker.wait_ready(timeout=120)
        async with Bus(kafka_settings(stack, unique_name)) as bus:
            await bus.publish(f"{unique_name}.cmd.evaluate", looked_command(unique_name, better, plain))
            early = await topic_events(stack, f"{unique_name}.evt.evaluate", expect=1, timeout=120)
            same = ModelRef(base=tiny_base, version="again")
            await bus.publish(f"{unique_name}.cmd.evaluate", looked_command(f"{unique_name}-b", same, same))
            both = await topic_events(stack, f"{unique_name}.evt.evaluate", expect=2, timeout=120)
    finally:
        worker.stop()
    assert early[0].WhichOneof("payload") == "evaluate_result", early
    dev = early[0].evaluate_result.suites[0]
    assert (dev.n, dev.candidate_accuracy, dev.incumbent_accuracy, dev.p_value) == (4, 1.0, 0.0, 0.125)
    assert early[0].evaluate_result.stats.tokens == 0  # settled from the first chunk alone
    rows = store.read_file(early[0].evaluate_result.details, "details.jsonl").decode().splitlines()
    assert [json.loads(r)["id"] for r in rows] == first4
    # no gain at the look: the second chunk is evaluated too, and cached under its own range
    rest = next(e for e in both if e.run_id == f"{unique_name}-b").evaluate_result.suites[0]
    assert rest.n == 8 and rest.p_value == 1.0
    assert evalcache.get(store, evalcache.cache_prefix(version_key(plain), f"{suite}#4-8", 7, 4)) is not None
