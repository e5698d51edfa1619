"""A second architecture through the whole loop: a tiny randomly initialised Qwen2 model folder
(made here; its generation config ends a turn on a token the tokenizer's eos is not) as the run's
``base_model``, every service as its own process on the real local stack, one iteration on a data
task. The model is random, so its replies are noise: the task's verifier accepts every reply (the
test is of the plumbing: loading, sampling with its stop tokens, LoRA training on its layers,
evaluation), not of quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfimprove.core.local_loop import LocalLoop
from selfimprove.core.stack import LocalStack
from selfimprove.core.topics import Topics
from tests.support.buskit import artifact_store, run_events

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def config(model: Path, data: Path) -> str:
    return f"""
base_model: {model}
label_mode: verified
seed: 3
task:
  name: data
  params: {{path: {data}, answer: answer, verifier: "tests.support.verifiers:any_reply", dev_share: 0.25}}
  dev_size: 8
budget: {{iterations: 1, wall_time_s: 900}}
acquisition: {{shards: 1, prompts_per_shard: 8, samples_per_prompt: 2, max_new_tokens: 12}}
# every reply passes, so no prompt is mastered-and-dropped: the band keeps pass rate 1
selection: {{params: {{band: [0.0, 1.5]}}, min_kept: 1}}
training: {{method: sft, require_loss_drop: false, hparams: {{epochs: 1, batch_size: 4}}}}
evaluation: {{max_new_tokens: 12}}
refinement: {{enabled: false}}
stages:
  acquire: {{timeout_s: 300}}
  select: {{timeout_s: 300}}
  train: {{timeout_s: 300}}
  evaluate: {{timeout_s: 300}}
"""


def teach_short_replies(folder: Path, questions: list[str]) -> None:
    """A few seconds of full fine-tuning so the random model answers in a few tokens and ends its
    turn (selection keeps only replies that end by themselves); then saved back into ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    rows = []
    for q in questions:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(prompt + "It is 7.<|endoftext|>", return_tensors="pt").input_ids[0]
        start = len(tokenizer(prompt).input_ids)
        labels = ids.clone()
        labels[:start] = -100
        rows.append((ids, labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for step in range(80):
        ids, labels = rows[step % len(rows)]
        loss = model(input_ids=ids[None], labels=labels[None]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(str(folder))


def test_a_tiny_qwen2_folder_runs_one_iteration_through_every_service(tmp_path, unique_name):
    from selfimprove.cli.run import follow
    from selfimprove.runtime.tiny import tiny_model_folder

    model = tiny_model_folder(tmp_path / "tiny-qwen2", "qwen2")
    assert json.loads((model / "config.json").read_text())["model_type"] == "qwen2"
    data = tmp_path / "questions.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"What is {i} plus {i + 3}?", "answer": str(2 * i + 3)}) + "\n"
            for i in range(48)
        )
    )
    teach_short_replies(model, [f"What is {i} plus {i + 3}?" for i in range(8)])
    prefix = unique_name
    stack = LocalStack(root=tmp_path / "stack")
    loop = LocalLoop(
        stack,
        env={
            "SELFIMPROVE_KAFKA_TOPIC_PREFIX": prefix,
            "SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "PYTHONPATH": str(ROOT),  # the verifier lives in tests.support
        },
    )
    with loop:
        summary = follow(
            loop.grpc_address("evaluator"), config(model, data), run_id=f"qwen-{unique_name}", quiet=True
        )
        assert summary["state"] == "completed", summary
        assert "budget" in str(summary.get("stop_reason", "budget")), summary
        topics = Topics(prefix)
        events = run_events(
            stack.kafka_bootstrap, [topics.result(s) for s in (1, 2, 3, 4)], summary["run_id"]
        )
        results = {stage: events[topics.result(stage)] for stage in (1, 2, 3, 4)}
        for stage in (1, 2, 3, 4):
            assert results[stage], stage
            assert not any(e.WhichOneof("payload") == "stage_failure" for e in results[stage]), (
                stage,
                results[stage],
            )
        assert results[1][0].acquire_result.stats.samples == 16
        store = artifact_store(stack)
        adapter = results[3][0].train_result.candidate.adapter
        manifest = store.verify(adapter)
        assert "adapter_config.json" in {f.path for f in manifest.files}
        lora = json.loads(store.read_file(adapter, "adapter_config.json"))
        targets = {str(name).rsplit(".", 1)[-1] for name in lora["target_modules"]}
        assert {"q_proj", "v_proj", "down_proj"} <= targets and "lm_head" not in targets, targets
        assert results[4][0].evaluate_result.suites[0].n == 8
