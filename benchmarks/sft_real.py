"""The trainer service with the real SmolLM2 base: LoRA SFT on the model's own verified arithmetic
answers lowers the loss on held-out data, and the adapter beats the base on dev with a paired test.

The training data is made here, the way the loop makes it: the base samples answers to train-split
prompts, and only replies the task's verifier accepts (ended with end-of-turn) are kept. Takes
about ten minutes on two CPU cores.

A measurement, not a CI test (tens of minutes on a 2-core CPU): `make bench-sft`, i.e.
`PYTHONPATH=. .venv/bin/pytest benchmarks/sft_real.py -s -m e2e`.
"""

import json
import time

import pytest
import torch

from selfimprove.core.stage import stats_dict
from selfimprove.runtime.engine import GenerationRequest, SamplingParams
from selfimprove.runtime.hf_engine import TransformersEngine
from selfimprove.runtime.models import load_model
from selfimprove.runtime.stats import accuracy, mcnemar
from selfimprove.runtime.tasks import load_task
from selfimprove.v2.stages_pb2 import TrainMethod
from tests.support.buskit import artifact_store
from tests.support.trainer_kit import command, publish_dataset, results, send, trainer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]
TASK = load_task("arithmetic", {"categories": ["add2"]})
TRAIN_PROMPTS, SAMPLES, DEV, MAX_NEW = 120, 4, 100, 96


def verified_samples(engine) -> list[dict]:
    """The base model's own replies to train prompts that the verifier accepts (three per prompt at most)."""
    items = TASK.items("train", TRAIN_PROMPTS, seed=11)
    params = SamplingParams(n=SAMPLES, temperature=0.5, top_p=0.95, max_new_tokens=MAX_NEW, seed=11)
    rows = []
    for item, result in zip(
        items, engine.generate(GenerationRequest([i.prompt for i in items], params)), strict=True
    ):
        kept = {s.text for s in result.samples if s.finish_reason == "stop" and TASK.verify(item, s.text)}
        rows.extend({"prompt": item.prompt, "response": t, "item": item.id} for t in sorted(kept)[:3])
    return rows


def dev_outcomes(engine) -> list[bool]:
    items = TASK.items("dev", DEV, seed=5)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=MAX_NEW)
    replies = engine.generate(GenerationRequest([i.prompt for i in items], params))
    return [bool(TASK.verify(i, r.samples[0].text)) for i, r in zip(items, replies, strict=True)]


async def test_sft_on_own_verified_answers_beats_base(stack, unique_name, tmp_path):
    torch.set_num_threads(2)
    model, tokenizer = load_model()
    engine = TransformersEngine(model, tokenizer, threads=2)
    tic = time.perf_counter()
    rows = verified_samples(engine)
    print(f"{len(rows)} verified samples in {time.perf_counter() - tic:.0f} s", flush=True)
    base_dev = dev_outcomes(engine)
    print(f"base dev {sum(base_dev)}/{len(base_dev)} at {time.perf_counter() - tic:.0f} s", flush=True)
    del engine, model
    assert len(rows) >= 80, f"only {len(rows)} verified samples"

    store = artifact_store(stack)
    data = publish_dataset(store, f"{unique_name}/sft/", sft=rows)
    hp = {"epochs": 2, "batch_size": 8, "grad_accum": 1, "heldout_fraction": 0.15}
    await send(
        stack,
        unique_name,
        command("real", "smollm2-135m-instruct", [data], hp, method=TrainMethod.TRAIN_METHOD_SFT),
    )
    service = trainer(stack, unique_name, tmp_path, "trainer", SELFIMPROVE_THREADS="2")
    try:
        service.wait_ready(120)
        got = await results(stack, unique_name, expect=1, timeout=600)
    finally:
        service.stop()
    assert got["real"].WhichOneof("payload") == "train_result", got["real"]
    res = got["real"].train_result
    stats = res.stats
    figures = stats_dict(stats)

    folder = store.get_folder(res.candidate.adapter, tmp_path / "adapter")
    model, tokenizer = load_model(adapters=[folder])
    tuned_dev = dev_outcomes(TransformersEngine(model, tokenizer, threads=2))
    paired = mcnemar(base_dev, tuned_dev)
    report = {
        "verified_samples": len(rows),
        "base_dev": accuracy(base_dev).value,
        "adapter_dev": accuracy(tuned_dev).value,
        "delta": paired.delta,
        "p_value": paired.p_value,
        "n": paired.n,
        **{
            k: figures[k]
            for k in (
                "heldout_loss_before",
                "heldout_loss_after",
                "initial_loss",
                "final_loss",
                "steps",
                "tokens_per_second",
                "train_seconds",
            )
        },
    }
    print("E2E SFT", json.dumps(report, indent=1))
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert stats.heldout_loss_after < stats.heldout_loss_before
    assert paired.delta > 0 and paired.p_value < 0.05, report
