"""Acquisition then selection with the real base model on arithmetic, each service its own process.

CI runs a small iteration (24 prompts x 4 samples). For the figures in docs/data.md run it by hand
with more prompts: ``DATA_E2E_PROMPTS=200 DATA_E2E_RATIONALIZE=0 pytest -m e2e tests/e2e/test_data_pipeline.py -s``;
the figures are printed and written to ``$DATA_E2E_REPORT`` when set. CI runs with rationalization and
worked replies on (their sub-questions hinted too), and checks that hinted and worked replies feed verified selection only and that a
worked reply is verified exactly when its final answer is right and every step true.
"""

import json
import os
import time

import pytest

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.core.stage import stats_dict
from selfimprove.runtime.evalguard import dump_test_sets
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask, equations, equations_true
from selfimprove.runtime.testsets import gpt3_sets
from selfimprove.v2.common_pb2 import ModelRef, SamplingParams, Stage, TaskSpec
from selfimprove.v2.stages_pb2 import AcquireCommand, AcquireTactics, LabelMode, SelectCommand
from tests.support.buskit import ServiceProcess, artifact_store, kafka_settings, read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]
PROMPTS = int(os.environ.get("DATA_E2E_PROMPTS", "24"))
RATIONALIZE = os.environ.get("DATA_E2E_RATIONALIZE", "1") == "1"
WORKED = os.environ.get("DATA_E2E_WORKED", "1") == "1"
ENV = dict(SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS="6000", SELFIMPROVE_THREADS="2")
extract_int = ArithmeticTask().extract
GPT3_SETS = dump_test_sets(gpt3_sets())  # what the arithmetic configs declare (evaluation.test_sets)


async def send(stack, prefix, stage, env):
    async with Bus(kafka_settings(stack, prefix)) as bus:
        topic = bus.topics.command(stage)
        await bus.ensure_topics([topic])
        await bus.publish(topic, env)


def acquire(run_id: str, categories: list[str], prompts: int, seed: int, max_new_tokens: int, **fields):
    """A one-shard acquire command of the base model on ``categories``, 4 samples a prompt at T=0.7."""
    command = AcquireCommand(
        policy=ModelRef(base="smollm2-135m-instruct", version="base"),
        task=TaskSpec(name="arithmetic", params_json=json.dumps({"categories": categories})),
        shard=0,
        num_shards=1,
        num_prompts=prompts,
        sampling=SamplingParams(n=4, temperature=0.7, top_p=0.95, max_new_tokens=max_new_tokens),
        seed=seed,
        **fields,
    )
    return envelopes.make(
        run_id=run_id, iteration=1, stage=Stage.STAGE_ACQUIRE, producer="test", acquire_command=command
    )


async def run_stage(stack, name, tmp_path, stage, envs, timeout):
    """Start the stage's service, send it ``envs`` and return its result records (one per envelope)."""
    module, topic = {
        Stage.STAGE_ACQUIRE: ("acquisition", "acquire"),
        Stage.STAGE_SELECT: ("selection", "select"),
    }[stage]
    service = ServiceProcess(f"-m selfimprove.{module}", stack, name, tmp_path / f"{topic}.log", **ENV)
    try:
        service.wait_ready()
        for env in envs:
            await send(stack, name, stage, env)
        return await read_topic(
            stack.kafka_bootstrap, f"{name}.evt.{topic}", expect=len(envs), timeout=timeout
        )
    finally:
        service.stop()


async def test_real_model_gives_sft_data_in_both_label_modes(stack, unique_name, tmp_path):
    report = {"prompts": PROMPTS}
    env = acquire(
        unique_name,
        ["add1", "add2", "sub1", "mul1"],
        PROMPTS,
        seed=1,
        max_new_tokens=64,
        tactics=AcquireTactics(
            rationalize=RATIONALIZE,
            worked=WORKED,
            rationalize_steps=RATIONALIZE and WORKED,
            check_labels=True,  # stored beside the rows; only the label-free selection reads it
        ),
        test_sets_json=GPT3_SETS,
    )
    started = time.monotonic()
    [record] = await run_stage(stack, unique_name, tmp_path, Stage.STAGE_ACQUIRE, [env], timeout=1800)
    report["acquire_wall_seconds"] = time.monotonic() - started
    acquired = envelopes.decode(record.value).acquire_result
    report["acquire"] = stats_dict(acquired.stats)
    assert acquired.stats.prompts == PROMPTS
    store = artifact_store(stack)
    rows = [json.loads(line) for line in store.read_file(acquired.samples, "samples.jsonl").splitlines()]
    hinted = [r for r in rows[:PROMPTS] if any(s["verified"] for s in r["rationales"])]
    assert acquired.stats.rationalized == len(hinted)
    assert all(r["pass_rate"] == 0.0 for r in hinted)  # only prompts the model never answered
    # none to a few of 24 with the base model: measured, not asserted
    report["rescued_by_a_hint"] = len(hinted)
    if RATIONALIZE:  # every prompt no sample (nor worked reply) answered was asked again with its hint
        todo = [
            r for r in rows[:PROMPTS] if r["pass_rate"] == 0.0 and not any(w["verified"] for w in r["worked"])
        ]
        assert all(r["rationales"] for r in todo), [r["id"] for r in todo if not r["rationales"]]
    worked = [w for r in rows for w in r["worked"]]
    assert acquired.stats.worked == sum(any(w["verified"] for w in r["worked"]) for r in rows)
    assert not any(r["worked"] for r in rows if r["category"] == "mul1")  # no plan for a product
    for r in rows:
        for w in r["worked"]:
            assert len(w["steps"]) == 2 and w["text"].endswith(f"so the answer is {w['extracted']}.")
            assert w["verified"] == (w["extracted"] == r["answer"] and equations_true(w["text"])), w
    if WORKED:  # one-digit sub-questions ("3 + 0", "3 + 5") are within the base model's reach
        assert acquired.stats.worked > 0, worked
    checked = [r for r in rows[:PROMPTS] if r["check"] is not None]
    assert checked and acquired.stats.labels_checked == len(checked)
    for r in rows[:PROMPTS]:  # every majority of a sum or difference is checked, by the model alone
        has_check = r["majority"] is not None and r["category"] != "mul1"
        assert (r["check"] is not None) == has_check, r
        if has_check:
            c, (a, _) = r["check"], r["meta"]["operands"]
            assert c["label"] == r["majority"] and c["passed"] == (c["extracted"] == c["expects"])
            assert c["expects"] == (r["majority"] if r["meta"]["operator"] == "+" else str(a))
    steps = rows[PROMPTS:]  # the sub-questions follow the prompts, as rows of their own
    assert all(not r["meta"].get("step") for r in rows[:PROMPTS])
    assert [r["meta"]["step"] for r in steps] == sorted(r["meta"]["step"] for r in steps)
    assert acquired.stats.step_prompts == len(steps) and (len(steps) > 0) == WORKED
    for r in steps:
        assert r["prompt"] == f"What is {r['meta']['expression']}?" and r["id"].endswith(
            f".s{r['meta']['step']}"
        )
        for s in r["samples"]:
            assert s["verified"] == (s["extracted"] == r["answer"] and all(equations(s["text"]))), s
        # rationalize_steps: a sub-question is hinted exactly when none of its own samples was right
        hinted_step = RATIONALIZE and WORKED and not any(s["verified"] for s in r["samples"])
        assert bool(r["rationales"]) == hinted_step and len(r["rationales"]) in (
            0,
            env.acquire_command.sampling.n,
        ), r
    by_id = {r["id"]: r for r in steps}
    assert acquired.stats.steps_rationalized == sum(
        any(s["verified"] for s in r["rationales"]) for r in steps
    )
    for r in rows[:PROMPTS]:  # each step of a worked reply is a right own sample when there is one
        for w in r["worked"]:
            for k, text in enumerate(w["steps"], start=1):
                step = by_id[f"{r['id']}.s{k}"]
                own = [s["text"] for s in step["samples"] if s["verified"]]
                right = own or [s["text"] for s in step["rationales"] if s["verified"]]
                asked = [s["text"] for s in [*step["samples"], *step["rationales"]]]
                assert text in (right or asked), (w, step)

    envs = [
        envelopes.make(
            run_id=unique_name,
            iteration=iteration,
            stage=Stage.STAGE_SELECT,
            producer="test",
            select_command=SelectCommand(
                shards=[acquired.samples], label_mode=mode, test_sets_json=GPT3_SETS
            ),
        )
        for iteration, mode in ((1, LabelMode.LABEL_MODE_VERIFIED), (2, LabelMode.LABEL_MODE_LABEL_FREE))
    ]
    started = time.monotonic()
    records = await run_stage(stack, unique_name, tmp_path, Stage.STAGE_SELECT, envs, timeout=600)
    report["select_wall_seconds_both"] = time.monotonic() - started
    for rec in records:
        env = envelopes.decode(rec.value)
        assert env.WhichOneof("payload") == "select_result", env
        mode = "verified" if env.iteration == 1 else "label_free"
        card = json.loads(store.read_file(env.select_result.dataset, "card.json"))
        report[mode] = {"stats": stats_dict(env.select_result.stats), "category_mix": card["category_mix"]}
        assert env.select_result.stats.kept > 0, card
        if mode == "label_free":
            counts = card["counts"]
            assert counts["prompts_rationalized"] == counts["prompts_worked"] == counts["prompts_steps"] == 0
            assert counts["prompts_in"] == PROMPTS  # the sub-questions' rows are not read blind
            refused = {r["id"] for r in rows[:PROMPTS] if r["check"] and not r["check"]["passed"]}
            sft = [
                json.loads(x) for x in store.read_file(env.select_result.dataset, "sft.jsonl").splitlines()
            ]
            assert not {x["id"].rsplit("-", 1)[0] for x in sft} & refused
        elif RATIONALIZE:
            assert card["counts"]["prompts_rationalized"] > 0, card
    print(json.dumps(report, indent=2, sort_keys=True))
    if os.environ.get("DATA_E2E_REPORT"):
        with open(os.environ["DATA_E2E_REPORT"], "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)


async def test_label_free_worked_replies_follow_the_steps_majorities_on_the_real_model(
    stack, unique_name, tmp_path
):
    """Label-free acquisition with worked replies: each step's answer is its samples' majority (never
    the verifier's pick), and label-free selection trains a worked reply only when it gives the label."""
    prompts = 12
    env = acquire(
        unique_name,
        ["add1", "sub1"],
        prompts,
        seed=3,
        max_new_tokens=48,
        tactics=AcquireTactics(worked=True, worked_by_majority=True, check_labels=True),
    )
    [record] = await run_stage(stack, unique_name, tmp_path, Stage.STAGE_ACQUIRE, [env], timeout=1200)
    acquired = envelopes.decode(record.value).acquire_result
    store = artifact_store(stack)
    rows = [json.loads(line) for line in store.read_file(acquired.samples, "samples.jsonl").splitlines()]
    steps = {r["id"]: r for r in rows[prompts:]}
    assert steps and all(r["meta"]["pick"] == "majority" for r in steps.values())
    worked = [(r, w) for r in rows[:prompts] for w in r["worked"]]
    assert worked, "no worked reply: the base model answers one-digit sub-questions"
    for r, w in worked:  # each step's chosen answer is the majority of that step's own samples
        assert w["pick"] == "majority"
        for k, text in enumerate(w["steps"], start=1):
            step = steps[f"{r['id']}.s{k}"]
            assert step["majority"] is not None and extract_int(text) == step["majority"], (w, step)

    select = SelectCommand(shards=[acquired.samples], label_mode=LabelMode.LABEL_MODE_LABEL_FREE)
    env = envelopes.make(
        run_id=unique_name, iteration=1, stage=Stage.STAGE_SELECT, producer="test", select_command=select
    )
    [record] = await run_stage(stack, unique_name, tmp_path, Stage.STAGE_SELECT, [env], timeout=600)
    result = envelopes.decode(record.value).select_result
    card = json.loads(store.read_file(result.dataset, "card.json"))
    assert card["counts"]["prompts_in"] == len(rows)  # the majority-picked sub-questions are read blind
    sft = [json.loads(x) for x in store.read_file(result.dataset, "sft.jsonl").splitlines()]
    by_id = {r["id"]: r for r in rows}
    trained = [x for x in sft if ", so the answer is" in x["response"]]
    assert card["counts"]["prompts_worked"] == len({x["id"].rsplit("-", 1)[0] for x in trained})
    for x in trained:  # a worked reply is trained only when it gives its prompt's checked label
        row = by_id[x["id"].rsplit("-", 1)[0]]
        assert extract_int(x["response"]) == row["majority"], (x, row)
        assert row["check"] is not None and row["check"]["passed"], row
    assert "label_witness" not in card["dropped"]


async def test_self_judged_selection_on_the_real_model_reports_label_precision(stack, unique_name, tmp_path):
    """Label-free acquisition with the model's own verdicts (``self_judge``), then selection with and
    without ``params.self_judge``: the kept majority labels' precision against the hidden truth is
    reported for both (whether the filter raises it is measured, not asserted), and the judged
    selection keeps a subset of the plain one's prompts. Other filters that could reorder what is kept
    (embedding diversity, category balance) are off, so the two differ by the self-judge alone."""
    prompts = 16
    env = acquire(
        unique_name,
        ["add1", "sub1", "add2", "sub2"],
        prompts,
        seed=2,
        max_new_tokens=48,
        self_judge=True,
        test_sets_json=GPT3_SETS,
    )
    started = time.monotonic()
    [record] = await run_stage(stack, unique_name, tmp_path, Stage.STAGE_ACQUIRE, [env], timeout=1200)
    report = {"prompts": prompts, "acquire_wall_seconds": time.monotonic() - started}
    acquired = envelopes.decode(record.value).acquire_result
    store = artifact_store(stack)
    rows = [json.loads(line) for line in store.read_file(acquired.samples, "samples.jsonl").splitlines()]
    samples = [(r, s) for r in rows for s in r["samples"]]
    assert samples and all(0.0 <= s["judge"] <= 1.0 for _, s in samples)
    right = [s["judge"] for r, s in samples if s["extracted"] == r["answer"]]
    wrong = [s["judge"] for r, s in samples if s["extracted"] != r["answer"]]
    report["mean_p_yes"] = {
        "right_samples": sum(right) / len(right) if right else None,
        "wrong_samples": sum(wrong) / len(wrong) if wrong else None,
    }

    base = {"embed": False, "category_cap": 1000, "band": [0.0, 1.5], "max_per_prompt": 4}
    variants = {1: base, 2: {**base, "self_judge": {"mode": "filter", "min_p_yes": 0.5}}}
    envs = [
        envelopes.make(
            run_id=unique_name,
            iteration=iteration,
            stage=Stage.STAGE_SELECT,
            producer="test",
            select_command=SelectCommand(
                shards=[acquired.samples],
                label_mode=LabelMode.LABEL_MODE_LABEL_FREE,
                params_json=json.dumps(params),
                test_sets_json=GPT3_SETS,
            ),
        )
        for iteration, params in variants.items()
    ]
    records = await run_stage(stack, unique_name, tmp_path, Stage.STAGE_SELECT, envs, timeout=600)
    kept = {}
    for rec in records:
        env = envelopes.decode(rec.value)
        assert env.WhichOneof("payload") == "select_result", env
        name = "plain" if env.iteration == 1 else "self_judged"
        stats = env.select_result.stats
        sft = [json.loads(x) for x in store.read_file(env.select_result.dataset, "sft.jsonl").splitlines()]
        kept[name] = {x["id"].rsplit("-", 1)[0] for x in sft}
        report[name] = {
            "pseudo_label_precision": stats.pseudo_label_precision
            if stats.HasField("pseudo_label_precision")
            else None,
            "prompts_kept": stats.prompts_kept,
            "sft": stats.kept,
            "self_judge_prompts_dropped": stats.self_judge_prompts_dropped,
            "self_judge_responses_dropped": stats.self_judge_responses_dropped,
        }
    print(json.dumps(report, indent=2, sort_keys=True))
    if os.environ.get("SELFJUDGE_E2E_REPORT"):
        with open(os.environ["SELFJUDGE_E2E_REPORT"], "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
    plain, judged = report["plain"], report["self_judged"]
    assert plain["pseudo_label_precision"] is not None and judged["pseudo_label_precision"] is not None
    assert kept["self_judged"] <= kept["plain"]
    assert plain["self_judge_prompts_dropped"] == plain["self_judge_responses_dropped"] == 0
    assert judged["prompts_kept"] == len(kept["self_judged"]) <= plain["prompts_kept"]
