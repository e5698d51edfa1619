"""DPO through the trainer service (TRL's DPOTrainer on a tiny random Llama): preference pairs in,
PEFT adapter out, and the preference margin on held-out pairs goes up."""

import json
import random

import pytest

from selfimprove.core.stage import stats_dict
from selfimprove.v2.stages_pb2 import TrainMethod
from tests.support.buskit import artifact_store
from tests.support.trainer_kit import command, publish_dataset, results, send, trainer

from .test_trainer_service import tiny_base  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def preference_pairs(n: int, seed: int = 0) -> list[dict]:
    """Chosen replies state the sum; rejected ones decline (a pattern a tiny model can pick up)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        pairs.append(
            {
                "prompt": f"What is {a} + {b}?",
                "chosen": f"{a} + {b} = {a + b}. The answer is {a + b}.",
                "rejected": "I am not sure, sorry.",
            }
        )
    return pairs


async def test_dpo_pairs_in_adapter_out_margin_up(stack, unique_name, tmp_path, tiny_base):  # noqa: F811
    store = artifact_store(stack)
    data = publish_dataset(store, f"{unique_name}/pairs/", pairs=preference_pairs(120))
    hp = {
        "epochs": 1,
        "batch_size": 8,
        "grad_accum": 1,
        "dpo_lr": 1e-3,
        "checkpoint_every": 4,
        "heldout_fraction": 0.2,
    }
    await send(stack, unique_name, command("dpo", tiny_base, [data], hp, method=TrainMethod.TRAIN_METHOD_DPO))
    service = trainer(stack, unique_name, tmp_path, "dpo")
    try:
        service.wait_ready()
        got = await results(stack, unique_name, expect=1, timeout=240)
        ran = service.counter("selfimprove_training_steps_total", method="dpo")
    finally:
        service.stop()
    assert got["dpo"].WhichOneof("payload") == "train_result", got["dpo"]
    res = got["dpo"].train_result
    stats = res.stats
    print("DPO stats", json.dumps(stats_dict(stats), indent=1))
    assert stats.steps == 12 == ran
    assert stats.heldout_pairs == 24
    assert stats.heldout_margin_after > stats.heldout_margin_before + 1.0
    assert stats.final_loss < stats.initial_loss
    names = {e.path for e in store.verify(res.candidate.adapter).files}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "training_config.json",
        "loss_curve.json",
    } <= names
    assert not any(n.startswith("ref/") for n in names), names
    assert json.loads(store.read_file(res.candidate.adapter, "training_config.json"))["method"] == "dpo"
    checkpoints = [k for k in store.list_keys("runs/dpo/iter-001/train/shard-000/attempt-1/checkpoints/")]
    assert any(k.endswith("manifest.json") for k in checkpoints)
