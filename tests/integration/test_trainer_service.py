"""The trainer service against the real stack with a tiny random Llama: train command in, adapter
artifact and result event out; bad input refused; a SIGKILLed trainer resumes from its checkpoint."""

import json
import math

import pytest

from selfimprove.core.topics import Topics
from selfimprove.v2.common_pb2 import ArtifactRef, Stage
from selfimprove.v2.stages_pb2 import TrainMethod
from tests.support.buskit import artifact_store, eventually, read_topic
from tests.support.trainer_kit import command, publish_dataset, results, send, trainer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny random Llama with the real tokenizer, saved as a Hugging Face folder."""
    from selfimprove.runtime.tiny import tiny_llama

    folder = tmp_path_factory.mktemp("tiny") / "base"
    model, tokenizer = tiny_llama(layers=2, hidden=64)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def other_base(tmp_path) -> str:
    from selfimprove.runtime.tiny import tiny_llama

    model, tokenizer = tiny_llama(layers=2, hidden=64, seed=1)
    model.save_pretrained(tmp_path / "other")
    tokenizer.save_pretrained(tmp_path / "other")
    return str(tmp_path / "other")


def arithmetic_rows(n: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append({"prompt": f"What is {a} + {b}?", "response": f"{a} + {b} = {a + b}", "id": f"{a}+{b}"})
    return rows


async def train(stack, prefix, tmp_path, name, expect):
    """Start a trainer service, collect ``expect`` results on the prefix's topic, stop it."""
    service = trainer(stack, prefix, tmp_path, name)
    try:
        service.wait_ready()
        return await results(stack, prefix, expect=expect)
    finally:
        service.stop()


async def test_train_command_in_adapter_and_result_out(stack, unique_name, tmp_path, tiny_base):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    store = artifact_store(stack)
    good = publish_dataset(store, f"{unique_name}/data/good/", sft=arithmetic_rows(120))
    empty = publish_dataset(store, f"{unique_name}/data/empty/", sft=[])
    pairs_only = publish_dataset(
        store, f"{unique_name}/data/pairs/", pairs=[{"prompt": "p", "chosen": "a", "rejected": "b"}]
    )
    missing = ArtifactRef(uri=f"s3://{stack.bucket}/{unique_name}/nothing/manifest.json", sha256="0" * 64)
    altered = ArtifactRef(uri=good.uri, sha256="f" * 64, bytes=good.bytes)
    hp = {"epochs": 1, "batch_size": 8, "grad_accum": 1, "lr": 1e-3}
    await send(
        stack,
        unique_name,
        command("ok", tiny_base, [good], hp),
        command("empty", tiny_base, [empty], hp),
        command("nofile", tiny_base, [pairs_only], hp),
        command("missing", tiny_base, [missing], hp),
        command("altered", tiny_base, [altered], hp),
        command("otherbase", tiny_base, [good], hp, base_sha256="ab" * 32),
    )
    service = trainer(stack, unique_name, tmp_path, "trainer")
    try:
        service.wait_ready()
        got = await results(stack, unique_name, expect=6)
        steps_metric = service.counter("selfimprove_training_steps_total")
    finally:
        service.stop()
    assert set(got) == {"ok", "empty", "nofile", "missing", "altered", "otherbase"}, got.keys()
    failures = {
        k: e.stage_failure.message for k, e in got.items() if e.WhichOneof("payload") == "stage_failure"
    }
    assert set(failures) == {"empty", "nofile", "missing", "altered", "otherbase"}
    assert "empty dataset" in failures["empty"]
    assert "no sft.jsonl" in failures["nofile"]
    assert "does not exist" in failures["missing"]
    assert "sha256 mismatch" in failures["altered"]
    assert "base sha256 mismatch" in failures["otherbase"]

    res = got["ok"].train_result
    stats = res.stats
    assert res.candidate.base == tiny_base and len(res.candidate.base_sha256) == 64
    assert res.candidate.version == "ok/iter-001"
    assert stats.steps == stats.steps_run == steps_metric > 0
    assert stats.resumed_from_step == 0 and not stats.nan_loss
    assert stats.tokens_per_second > 0 and stats.examples == 108
    assert math.isfinite(stats.heldout_loss_before) and math.isfinite(stats.heldout_loss_after)
    assert stats.final_loss < stats.initial_loss
    manifest = store.verify(res.candidate.adapter)
    names = {e.path for e in manifest.files}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "training_config.json",
        "loss_curve.json",
        "data_refs.json",
    } <= names
    curve = json.loads(store.get_bytes(res.loss_curve))
    assert [p["step"] for p in curve] == list(range(1, int(stats.steps) + 1))
    assert all(p["cpu_seconds"] > 0 and p["seconds"] > 0 for p in curve)
    assert (
        json.loads(store.read_file(res.candidate.adapter, "data_refs.json"))["datasets"][0]["sha256"]
        == good.sha256
    )
    folder = store.get_folder(res.candidate.adapter, tmp_path / "adapter")
    base_model = AutoModelForCausalLM.from_pretrained(tiny_base)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = base_model(ids).logits
        after = PeftModel.from_pretrained(base_model, str(folder))(ids).logits
    assert not torch.allclose(before, after)

    assert stats.frozen_bf16_layers == 0
    # The candidate trained further: the next command continues this adapter, still one adapter on
    # the base, with the frozen base projections in bfloat16.
    bf16 = {**hp, "frozen_dtype": "bfloat16"}
    await send(stack, unique_name, command("next", tiny_base, [good], bf16, adapter=res.candidate.adapter))
    await send(
        stack,
        unique_name,
        command("wrongbase", other_base(tmp_path), [good], hp, adapter=res.candidate.adapter),
    )
    got = await train(stack, unique_name, tmp_path, "trainer2", expect=8)
    nxt = got["next"].train_result
    config = json.loads(store.read_file(nxt.candidate.adapter, "training_config.json"))
    assert config["parent_adapter"]["sha256"] == res.candidate.adapter.sha256
    assert config["hparams"]["frozen_dtype"] == "bfloat16"
    nxt_stats = nxt.stats
    assert nxt_stats.frozen_bf16_layers > 0 and not nxt_stats.nan_loss
    assert nxt_stats.initial_loss < stats.initial_loss
    assert "was trained on base" in got["wrongbase"].stage_failure.message


async def test_killed_trainer_resumes_from_its_checkpoint(stack, unique_name, tmp_path, tiny_base):
    from selfimprove.contracts.params import Hparams
    from selfimprove.trainer.batches import Encoded
    from selfimprove.trainer.sft import schedule

    store = artifact_store(stack)
    rows = arithmetic_rows(300, seed=1)
    data = publish_dataset(store, f"{unique_name}/data/", sft=rows)
    hp = {
        "epochs": 3,
        "batch_size": 4,
        "grad_accum": 2,
        "lr": 1e-3,
        "checkpoint_every": 5,
        "heldout_fraction": 0.1,
    }
    expected = len(schedule([Encoded([0], 0)] * 270, Hparams(**hp), seed=7))
    env = command("resume", tiny_base, [data], hp)
    await send(stack, unique_name, env)
    ckpt_prefix = "runs/resume/iter-001/train/shard-000/attempt-1/checkpoints/"

    def has_checkpoint():
        return any(k.endswith("manifest.json") for k in store.list_keys(ckpt_prefix))

    first = trainer(stack, unique_name, tmp_path, "first")
    try:
        first.wait_ready()
        await eventually(has_checkpoint, timeout=120, every=0.05)
        first.proc.kill()
        assert first.wait_exit(30) == -9
    finally:
        first.stop()
    assert not await read_topic(stack.kafka_bootstrap, Topics(unique_name).result(Stage.STAGE_TRAIN), 1, 2)
    second = trainer(stack, unique_name, tmp_path, "second")
    try:
        second.wait_ready()
        got = await results(stack, unique_name, expect=1, timeout=180)
        ran = second.counter("selfimprove_training_steps_total")
    finally:
        second.stop()
    stats = got["resume"].train_result.stats
    assert stats.steps == expected
    assert 0 < stats.resumed_from_step < expected
    assert stats.steps_run == ran == expected - stats.resumed_from_step
    curve = json.loads(store.get_bytes(got["resume"].train_result.loss_curve))
    assert [p["step"] for p in curve] == list(range(1, expected + 1))


async def test_full_fine_tuning_writes_a_whole_model_that_transformers_loads(
    stack, unique_name, tmp_path, tiny_base
):
    import torch
    from transformers import AutoModelForCausalLM

    store = artifact_store(stack)
    data = publish_dataset(store, f"{unique_name}/data/full/", sft=arithmetic_rows(40))
    hp = {"epochs": 1, "batch_size": 8, "grad_accum": 1, "full_lr": 1e-3}
    await send(
        stack, unique_name, command("full", tiny_base, [data], hp, method=TrainMethod.TRAIN_METHOD_FULL_SFT)
    )
    got = await train(stack, unique_name, tmp_path, "trainer-full", expect=1)
    res = got["full"].train_result
    stats = res.stats
    assert stats.final_loss < stats.initial_loss
    names = {e.path for e in store.verify(res.candidate.adapter).files}
    assert {"config.json", "model.safetensors", "training_config.json"} <= names
    assert "adapter_config.json" not in names
    config = json.loads(store.read_file(res.candidate.adapter, "training_config.json"))
    assert config["method"] == "full_sft" and config["hparams"]["full_lr"] == 1e-3
    folder = store.get_folder(res.candidate.adapter, tmp_path / "full-model")
    base_model, tuned = (
        AutoModelForCausalLM.from_pretrained(tiny_base),
        AutoModelForCausalLM.from_pretrained(folder),
    )
    assert stats.trainable_parameters == sum(p.numel() for p in tuned.parameters())
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert not torch.allclose(base_model(ids).logits, tuned(ids).logits)

    # The loop's next iteration: full fine-tuning continues the whole model; a LoRA on it is refused
    # (it would not be an adapter of the base), and so is a whole model trained on another base.
    full = TrainMethod.TRAIN_METHOD_FULL_SFT
    await send(
        stack,
        unique_name,
        command("again", tiny_base, [data], hp, method=full, adapter=res.candidate.adapter),
        command("lora", tiny_base, [data], hp, adapter=res.candidate.adapter),
        command("wrongbase", other_base(tmp_path), [data], hp, method=full, adapter=res.candidate.adapter),
    )
    got = await train(stack, unique_name, tmp_path, "trainer-full2", expect=4)
    failures = {
        k: e.stage_failure.message for k, e in got.items() if e.WhichOneof("payload") == "stage_failure"
    }
    assert set(failures) == {"lora", "wrongbase"}, failures
    assert "whole model folder (full fine-tuning)" in failures["lora"]
    assert "was trained on base" in failures["wrongbase"]
    again = got["again"].train_result
    assert (
        json.loads(store.read_file(again.candidate.adapter, "training_config.json"))["parent_adapter"][
            "sha256"
        ]
        == res.candidate.adapter.sha256
    )
    continued = AutoModelForCausalLM.from_pretrained(
        store.get_folder(again.candidate.adapter, tmp_path / "again")
    )
    with torch.no_grad():
        assert not torch.allclose(tuned(ids).logits, continued(ids).logits)

    # Every engine of the loop loads the candidate from its reference, as a whole model in place of the base.
    from selfimprove.runtime.engine import GenerationRequest, SamplingParams
    from selfimprove.runtime.policy import PolicyCache

    cache = PolicyCache(store, cache_dir=tmp_path / "models", threads=1)
    engine = cache.engine(again.candidate)
    with torch.no_grad():
        assert torch.allclose(engine.model(ids).logits, continued(ids).logits, atol=1e-5)
    request = GenerationRequest(["What is 2 + 3?"], SamplingParams(max_new_tokens=8))
    assert engine.generate(request)[0].samples[0].tokens > 0
