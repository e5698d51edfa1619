"""The real SmolLM2 model: greedy arithmetic, the safetensors cache, and a LoRA adapter on top."""

import pytest
import torch

from selfimprove.runtime.engine import GenerationRequest, SamplingParams
from selfimprove.runtime.extract import last_integer
from selfimprove.runtime.hf_engine import TransformersEngine
from selfimprove.runtime.models import apply_adapters, load_model, resolve_base, smollm2_gguf

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base():
    torch.set_num_threads(2)
    return load_model()


def test_greedy_answers_an_easy_sum(base):
    engine = TransformersEngine(*base)
    [result] = engine.generate(GenerationRequest(["What is 2 + 3?"], SamplingParams(max_new_tokens=48)))
    sample = result.samples[0]
    assert sample.finish_reason == "stop"
    assert last_integer(sample.text) == 5, sample.text


def test_cache_matches_gguf_logits(base):
    from selfimprove.runtime.gguf_cache import load_gguf

    model, tokenizer = base
    assert resolve_base().name.startswith("gguf-")
    gguf_model, _ = load_gguf(smollm2_gguf())
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 48 plus 27?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        cached = model(**ids).logits
        direct = gguf_model(**ids).logits
    assert torch.allclose(cached, direct, atol=1e-4, rtol=1e-4)


def test_lora_adapter_loads_on_top(base, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model()
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    base_model, _ = base
    merged = apply_adapters(load_model()[0], [tmp_path / "adapter"])
    ids = tokenizer("What is 2 + 3?", return_tensors="pt")
    with torch.inference_mode():
        assert not torch.allclose(merged(**ids).logits, base_model(**ids).logits)
        assert torch.allclose(merged(**ids).logits, peft_model(**ids).logits, atol=1e-4)
