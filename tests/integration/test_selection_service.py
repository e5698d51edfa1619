"""The selection service as its own process against the real stack: shards in, SFT set, pairs and card out."""

import json

import pytest

from selfimprove.contracts.samples import to_jsonl
from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.core.keys import attempt_prefix
from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.stages_pb2 import LabelMode, SelectCommand
from tests.support.buskit import ServiceProcess, artifact_store, kafka_settings, read_topic
from tests.support.selection_rows import judged, synthetic_rows

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]
SERVICE_ENV = dict(SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS="6000", SELFIMPROVE_THREADS="1")


def publish_shards(store, run_id, rows, shards=2):
    meta = {"task": {"name": "arithmetic", "params_json": "{}"}, "model_version": "test"}
    return [
        store.publish(
            attempt_prefix(run_id, 1, "acquire", s, 1),
            {"samples.jsonl": to_jsonl(rows[s::shards])},
            {**meta, "shard": s},
        )
        for s in range(shards)
    ]


def select_command(run_id, iteration, shards, mode, test_sets="", params=None):
    return envelopes.make(
        run_id=run_id,
        iteration=iteration,
        stage=Stage.STAGE_SELECT,
        producer="test",
        select_command=SelectCommand(
            shards=shards,
            label_mode=mode,
            params_json=json.dumps(params or {"max_per_prompt": 2}),
            test_sets_json=test_sets,
        ),
    )


def data_test_set(label, path):
    return json.dumps([{"label": label, "data": {"path": str(path), "answer": "answer"}}])


async def test_selection_in_both_modes(stack, unique_name, tmp_path):
    store = artifact_store(stack)
    rows = synthetic_rows(36)
    shards = publish_shards(store, unique_name, rows)
    held_out = tmp_path / "held_out.jsonl"  # an evaluation file holding six of the training prompts
    held_out.write_text(
        "".join(json.dumps({"question": r["prompt"], "answer": r["answer"]}) + "\n" for r in rows[:6])
    )
    service = ServiceProcess(
        "-m selfimprove.selection", stack, unique_name, tmp_path / "s.log", **SERVICE_ENV
    )
    try:
        service.wait_ready()
        async with Bus(kafka_settings(stack, unique_name)) as bus:
            topic = bus.topics.command(Stage.STAGE_SELECT)
            await bus.ensure_topics([topic])
            await bus.publish(topic, select_command(unique_name, 1, shards, LabelMode.LABEL_MODE_VERIFIED))
            await bus.publish(topic, select_command(unique_name, 2, shards, LabelMode.LABEL_MODE_LABEL_FREE))
            await bus.publish(topic, select_command(unique_name, 3, [], LabelMode.LABEL_MODE_VERIFIED))
            verified = LabelMode.LABEL_MODE_VERIFIED
            await bus.publish(
                topic, select_command(unique_name, 4, shards, verified, data_test_set("held", held_out))
            )
            missing = data_test_set("gone", tmp_path / "gone.jsonl")
            await bus.publish(topic, select_command(unique_name, 5, shards, verified, missing))
            # self-judged selection: refused on shards acquired without judgements (6), and on judged
            # shards its drops come back typed (7)
            judging = {"max_per_prompt": 2, "band": [0.0, 1.01], "self_judge": {"mode": "filter"}}
            free = LabelMode.LABEL_MODE_LABEL_FREE
            await bus.publish(topic, select_command(unique_name, 6, shards, free, params=judging))
            judged_shards = publish_shards(store, f"{unique_name}-judged", judged(rows))
            await bus.publish(topic, select_command(unique_name, 7, judged_shards, free, params=judging))
        records = await read_topic(stack.kafka_bootstrap, f"{unique_name}.evt.select", expect=7, timeout=180)
        dropped = service.counter("selfimprove_selection_dropped_total", filter="difficulty")
        metrics = service.metrics()
    finally:
        assert service.stop() == 0
    by_iter = {e.iteration: e for e in (envelopes.decode(r.value) for r in records)}
    assert by_iter[3].WhichOneof("payload") == "stage_failure"
    assert "no shards" in by_iter[3].stage_failure.message
    assert dropped > 0 and "selfimprove_data_yield" in metrics
    for iteration, mode in ((1, "verified"), (2, "label_free")):
        res = by_iter[iteration].select_result
        manifest = store.verify(res.dataset)
        assert sorted(f.path for f in manifest.files) == ["card.json", "pairs.jsonl", "sft.jsonl"]
        sft = [json.loads(x) for x in store.read_file(res.dataset, "sft.jsonl").decode().splitlines()]
        pairs = [json.loads(x) for x in store.read_file(res.dataset, "pairs.jsonl").decode().splitlines()]
        card = json.loads(store.read_file(res.dataset, "card.json"))
        assert sft and pairs and card["label_mode"] == mode
        assert set(sft[0]) == {"prompt", "response", "id", "category"}
        assert set(pairs[0]) == {"prompt", "chosen", "rejected", "id", "category"}
        assert card["counts"]["sft"] == len(sft) and 0 < card["diversity"] <= 2
        stats = res.stats
        assert stats.kept == len(sft) and stats.pairs == len(pairs)
        assert {d.filter: d.count for d in stats.dropped} == card["dropped"]
        assert stats.yield_rate == card["yield"] and stats.diversity == card["diversity"]
    assert by_iter[2].select_result.stats.HasField("pseudo_label_precision")
    # the run declares no test set (1, 2) and the service started without the GPT-3 files; a declared
    # data set drops the training prompts it holds (4), and one whose file is missing fails, named (5)
    assert {d.filter: d.count for d in by_iter[1].select_result.stats.dropped}["decontaminated_ngram"] == 0
    declared = by_iter[4].select_result
    assert {d.filter: d.count for d in declared.stats.dropped}["decontaminated_ngram"] >= 1
    sft = store.read_file(declared.dataset, "sft.jsonl").decode().splitlines()
    assert not {json.loads(x)["prompt"] for x in sft} & {r["prompt"] for r in rows[:6]}
    assert json.loads(store.read_file(declared.dataset, "card.json"))["decontamination_sets"] == ["held"]
    assert by_iter[5].WhichOneof("payload") == "stage_failure"
    assert "'gone'" in by_iter[5].stage_failure.message and "gone.jsonl" in by_iter[5].stage_failure.message
    assert by_iter[6].WhichOneof("payload") == "stage_failure"
    assert "acquisition.self_judge" in by_iter[6].stage_failure.message
    judged_stats = by_iter[7].select_result.stats
    card = json.loads(store.read_file(by_iter[7].select_result.dataset, "card.json"))
    assert judged_stats.self_judge_prompts_dropped == card["dropped"]["self_judge_prompt"] > 0
    assert judged_stats.self_judge_responses_dropped == card["dropped"]["self_judge"]
