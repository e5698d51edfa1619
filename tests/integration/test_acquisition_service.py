"""The acquisition service as its own process against the real stack, with a tiny random Llama."""

import asyncio
import json

import pytest

from selfimprove.acquisition.shard import open_label
from selfimprove.core import envelope as envelopes
from selfimprove.evaluator import snapshot
from selfimprove.evaluator.state import RunState, Slot
from selfimprove.runtime.benchmarks import decontamination_keys
from selfimprove.runtime.evalguard import dump_test_sets
from selfimprove.runtime.testsets import gpt3_sets
from selfimprove.v2.common_pb2 import ModelRef, SamplingParams, Stage, TaskSpec
from selfimprove.v2.stages_pb2 import AcquireCommand, AcquireTactics
from tests.support.buskit import ServiceProcess, artifact_store, header, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]
PARTITIONS = 4
SERVICE_ENV = dict(
    SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS="6000",
    SELFIMPROVE_KAFKA_PARTITIONS=str(PARTITIONS),
    SELFIMPROVE_THREADS="1",
    SELFIMPROVE_ACQUISITION_BATCH_SIZE="32",
)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A tiny random Llama with the real tokenizer, saved as a Hugging Face folder."""
    from selfimprove.runtime.tiny import tiny_llama

    folder = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = tiny_llama()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def acquire(run_id, shard, base, num_shards=4, prompts=6, weights=None, seed=11, label_free=False):
    return envelopes.make(
        run_id=run_id,
        iteration=1,
        stage=Stage.STAGE_ACQUIRE,
        shard=shard,
        producer="test",
        acquire_command=AcquireCommand(
            policy=ModelRef(base=base, version="tiny"),
            task=TaskSpec(name="arithmetic", params_json=json.dumps({"categories": ["add1", "add2"]})),
            shard=shard,
            num_shards=num_shards,
            num_prompts=prompts,
            sampling=SamplingParams(n=2, temperature=0.7, top_p=0.95, max_new_tokens=12),
            seed=seed,
            self_judge=True,
            category_weights=weights or {},
            tactics=AcquireTactics(check_labels=label_free, worked=label_free, worked_by_majority=label_free),
            test_sets_json=dump_test_sets(gpt3_sets()),  # the GPT-3 sets, as the arithmetic configs declare
        ),
    )


def metric(service, name, run_id):
    """The value of a service process's metric of one run (labelled only ``run_id``)."""
    for line in service.metrics().splitlines():
        if line.startswith(f'{name}{{run_id="{run_id}"}} '):
            return float(line.split()[1])
    raise AssertionError(f"{name} of run {run_id} not exported")


async def publish(stack, prefix, envs):
    from selfimprove.core.bus import Bus
    from tests.support.buskit import kafka_settings

    async with Bus(kafka_settings(stack, prefix)) as bus:
        topic = bus.topics.command(Stage.STAGE_ACQUIRE)
        await bus.ensure_topics([topic], partitions=PARTITIONS)
        for env in envs:
            shard = env.acquire_command.shard  # as the evaluator sends them: one partition per shard
            await bus.publish(topic, env, key=f"{env.run_id}/{shard}", spread=shard)
    return f"{prefix}.evt.acquire"


async def test_one_shard_in_artifact_and_result_out(stack, unique_name, tmp_path, tiny_base):
    service = ServiceProcess(
        "-m selfimprove.acquisition", stack, unique_name, tmp_path / "a.log", **SERVICE_ENV
    )
    try:
        service.wait_ready()
        mislabelled = acquire(unique_name, 1, tiny_base)
        mislabelled.stage = Stage.STAGE_TRAIN  # would answer on the trainer's result topic
        # add1 gets no share; with seed 26, 4 of the stream's first 6 add2 problems are GPT-3 items
        focused = acquire(unique_name, 2, tiny_base, weights={"add2": 1.0}, seed=26, label_free=True)
        results_topic = await publish(stack, unique_name, [mislabelled, focused])
        [record] = await read_topic(stack.kafka_bootstrap, results_topic, expect=1, timeout=120)
        [dead] = await read_topic(
            stack.kafka_bootstrap, f"{unique_name}.cmd.acquire.dlq", expect=1, timeout=30
        )
        assert "envelope stage train does not match its acquire_command" in header(dead, "x-error")
        assert not await read_topic(stack.kafka_bootstrap, f"{unique_name}.evt.train", expect=1, timeout=3)
        assert metric(service, "selfimprove_acquisition_prompts_total", unique_name) == 6
        assert metric(service, "selfimprove_generation_tokens_per_second", unique_name) > 0
    finally:
        assert service.stop() == 0
    env = envelopes.decode(record.value)
    assert env.WhichOneof("payload") == "acquire_result", env
    res = env.acquire_result
    assert res.shard == 2 and env.shard == 2
    assert "/iter-001/acquire/shard-002/attempt-1/" in res.samples.uri
    store = artifact_store(stack)
    manifest = store.verify(res.samples)
    assert manifest.meta["shard"] == 2 and manifest.meta["model_version"] == "tiny"
    tactics = manifest.meta["tactics"]
    assert tactics["check_labels"] is True and tactics["worked_by_majority"] is True
    assert tactics["rationalize"] is False and tactics["rationalize_steps"] is False
    every = [json.loads(x) for x in store.read_file(res.samples, "samples.jsonl").decode().splitlines()]
    rows, steps = every[:6], every[6:]  # the prompts, then the worked replies' sub-questions
    assert len(rows) == 6 and all(len(r["samples"]) == 2 for r in rows)
    # label-free worked replies: each sum's first sub-question asked, every pick by majority
    assert [r["id"] for r in steps if r["meta"]["step"] == 1] == [f"{r['id']}.s1" for r in rows]
    assert all(r["meta"]["pick"] == "majority" for r in steps)
    assert all(w["pick"] == "majority" for r in rows for w in r["worked"])
    assert {r["category"] for r in rows} == {"add2"}
    eval_keys = decontamination_keys()
    keys = {(op, tuple(operands)) for op, operands in (r["meta"]["key"] for r in rows)}
    assert len(keys) == 6 and not keys & eval_keys  # evaluation problems were skipped before sampling
    sample_keys = {"text", "tokens", "finish_reason", "extracted", "verified", "agrees", "judge"}
    assert all(set(s) == sample_keys and 0 <= s["judge"] <= 1 for r in rows for s in r["samples"])
    stats = res.stats
    assert stats.tokens > 0 and stats.tokens_per_second > 0 and stats.duration_seconds > 0
    assert 0 <= stats.yield_rate <= 1
    assert stats.prompts == 6 and stats.samples == 12
    # the label check rode through the command (the meta above); a majority answer, if the tiny model
    # gives one, is checked, and nothing else is
    checked = [r for r in rows if r["check"] is not None]
    assert all(r["check"]["label"] == r["majority"] for r in checked)
    assert {r["id"] for r in checked} == {r["id"] for r in rows if r["majority"] is not None}
    assert stats.labels_checked == len(checked)
    assert stats.majority_share == sum(r["majority"] is not None for r in rows) / 6
    [add2] = stats.categories  # add1 was not asked
    assert add2.category == "add2" and add2.verified == 6 and 0 <= add2.pass_rate <= 1
    # label-free focus's figure: prompts whose label passed its checks though not every sample gave it
    assert add2.asked == 6 and add2.open_labels == sum(map(open_label, rows))


async def test_commands_sent_before_a_run_ended_are_not_carried_out(stack, unique_name, tmp_path, tiny_base):
    store = artifact_store(stack)
    slots = {"acquire/0": Slot(attempt=1), "acquire/1": Slot(attempt=1)}
    state = RunState(run_id=unique_name, config_yaml="{}", status="stopped", iteration=1, slots=slots)
    snapshot.save(store, state)  # beside the snapshot, the run's end record that stage services read
    queued = acquire(unique_name, 0, tiny_base)  # sent before the stop
    resumed = acquire(unique_name, 1, tiny_base)
    resumed.attempt = 2  # the resumed run's command: goes ahead though the record is not rewritten yet
    service = ServiceProcess(
        "-m selfimprove.acquisition", stack, unique_name, tmp_path / "a.log", **SERVICE_ENV
    )
    try:
        service.wait_ready()
        results_topic = await publish(stack, unique_name, [queued, resumed])
        records = await read_topic(stack.kafka_bootstrap, results_topic, expect=2, timeout=120)
    finally:
        assert service.stop() == 0
    by_shard = {e.shard: e for e in (envelopes.decode(r.value) for r in records)}
    refused = by_shard[0]
    assert refused.WhichOneof("payload") == "stage_failure"
    assert f"run {unique_name} has ended (stopped)" in refused.stage_failure.message
    assert not list(store.list_keys(f"runs/{unique_name}/iter-001/acquire/shard-000/"))
    assert by_shard[1].WhichOneof("payload") == "acquire_result"
    assert "/shard-001/attempt-2/" in by_shard[1].acquire_result.samples.uri


async def test_two_replicas_split_a_four_shard_iteration(stack, unique_name, tmp_path, tiny_base):
    run_id = unique_name  # any run id: the shards go to partitions 0-3 whatever their keys hash to
    replicas = [
        ServiceProcess(
            "-m selfimprove.acquisition",
            stack,
            unique_name,
            tmp_path / f"{i}.log",
            **{
                **SERVICE_ENV,
                "SELFIMPROVE_INSTANCE": f"acquisition-{i}",
            },  # two replicas on one host: two names
        )
        for i in range(2)
    ]
    try:
        for r in replicas:
            r.wait_ready()
        await asyncio.sleep(8)  # both members joined and the partitions were split between them
        envs = [acquire(run_id, shard, tiny_base, prompts=8) for shard in range(4)]
        results_topic = await publish(stack, unique_name, envs)
        records = await read_topic(stack.kafka_bootstrap, results_topic, expect=4, timeout=180)
        await asyncio.sleep(3)
        handled = [r.counter("selfimprove_messages_consumed_total", outcome="handled") for r in replicas]
    finally:
        for r in replicas:
            r.stop()
    results = [envelopes.decode(r.value) for r in records]
    assert sorted(e.acquire_result.shard for e in results) == [0, 1, 2, 3]
    assert handled == [2, 2], handled  # round-robin members: partitions 0 and 2, 1 and 3
    store = artifact_store(stack)
    producers = {e.producer for e in results}
    assert len(producers) == 2
    prompts = set()
    for e in results:
        store.verify(e.acquire_result.samples)
        rows = store.read_file(e.acquire_result.samples, "samples.jsonl").decode().splitlines()
        prompts |= {json.loads(x)["id"] for x in rows}
        assert "attempt-1/" in e.acquire_result.samples.uri
    assert len(prompts) == 32  # no prompt in two shards
