"""A causal LM other than SmolLM2 as the base: a tiny random Qwen2 folder (its own chat template, two
end-of-turn ids in generation_config.json) through the real engine and one SFT job of the trainer
on the real object store, whose adapter then loads on the base with ``load_model``."""

import pytest
import torch

from selfimprove.runtime.engine import GenerationRequest, SamplingParams, make_engine
from tests.support.buskit import artifact_store
from tests.support.trainer_kit import command, publish_dataset

pytestmark = pytest.mark.integration

PROMPTS = ["What is 2 + 3?", "What is 48 plus 27?", "Hi"]


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    from selfimprove.runtime.tiny import tiny_model_folder

    return tiny_model_folder(tmp_path_factory.mktemp("qwen2") / "base", "qwen2")


def test_engine_stops_on_every_end_of_turn_token(qwen2, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = make_engine("transformers", base=str(qwen2), threads=1)
    tok = engine.tokenizer
    turn_end = tok.convert_tokens_to_ids("<|endoftext|>")
    assert engine.end_ids == {tok.eos_token_id, turn_end}
    assert type(engine.model).__name__ == "Qwen2ForCausalLM"

    # greedy decoding agrees with transformers' own generate, which reads the same generation config
    results = engine.generate(GenerationRequest(PROMPTS, SamplingParams(max_new_tokens=12)))
    for prompt, result in zip(PROMPTS, results, strict=True):
        enc = tok.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        ref = engine.model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)
        ref = ref[0, enc["input_ids"].shape[1] :].tolist()
        assert result.samples[0].tokens == len(ref)

    # a stop string cuts the text
    text = results[0].samples[0].text
    assert len(text) > 4, "the tiny model should babble"
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    [cut] = engine.generate(GenerationRequest(PROMPTS[:1], SamplingParams(max_new_tokens=12, stop=(stop,))))
    assert cut.samples[0].finish_reason == "stop" and stop not in cut.samples[0].text

    # with every logit equal, greedy picks id 0, <|endoftext|>: the end of turn that only
    # generation_config.json names (the tokenizer's eos is <|im_end|>) ends every sample at once
    assert turn_end == 0 != tok.eos_token_id
    with torch.no_grad():
        engine.model.get_output_embeddings().weight.zero_()
    ended = engine.generate(GenerationRequest(PROMPTS, SamplingParams(n=2, max_new_tokens=12)))
    assert [(s.tokens, s.finish_reason, s.text) for r in ended for s in r.samples] == [(1, "stop", "")] * 6


def test_one_sft_job_gives_an_adapter_that_loads_on_the_base(
    stack, unique_name, tmp_path, qwen2, monkeypatch
):
    import json

    from selfimprove.runtime.models import load_model
    from selfimprove.trainer.job import JobOptions, run_job

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = artifact_store(stack)
    rows = [
        {"prompt": f"What is {a} + 3?", "response": f"{a} + 3 = {a + 3}", "id": str(a)} for a in range(40)
    ]
    data = publish_dataset(store, f"{unique_name}/data/", sft=rows)
    hp = {"epochs": 1, "batch_size": 8, "grad_accum": 1, "lr": 1e-3}
    env = command(unique_name, str(qwen2), [data], hp)
    files, meta = run_job(store, env, JobOptions(work_dir=tmp_path / "work"), on_step=lambda point: None)

    assert meta["stats"]["steps"] > 0 and meta["base_sha256"]
    adapter = tmp_path / "adapter"
    for name, content in files.items():
        (adapter / name).parent.mkdir(parents=True, exist_ok=True)
        (adapter / name).write_bytes(content if isinstance(content, bytes) else content.read_bytes())
    config = json.loads((adapter / "adapter_config.json").read_text())
    targets = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert {"q_proj", "down_proj"} <= targets and "lm_head" not in targets

    base, _ = load_model(str(qwen2))
    tuned, tok = load_model(str(qwen2), [adapter])
    user = [{"role": "user", "content": "What is 5 + 3?"}]
    ids = tok.apply_chat_template(user, add_generation_prompt=True, return_tensors="pt", return_dict=True)[
        "input_ids"
    ]
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, tuned(ids).logits)
    engine = make_engine("transformers", base=str(qwen2), adapters=[adapter], threads=1)
    [result] = engine.generate(GenerationRequest(["What is 5 + 3?"], SamplingParams(max_new_tokens=8)))
    assert 1 <= result.samples[0].tokens <= 8
