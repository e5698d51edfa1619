"""The transformers engine on a tiny random Llama with the real tokenizer: plumbing, not quality."""

import pytest
import torch

from selfimprove.runtime.engine import GenerationRequest, SamplingParams, make_engine, useful_tokens
from selfimprove.runtime.hf_engine import TransformersEngine
from selfimprove.runtime.tiny import tiny_llama

pytestmark = pytest.mark.unit

PROMPTS = [
    "What is 2 + 3?",
    "What is 48 plus 27?",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compute 7 * 8."}],
    "What is the value of (4 - 7) * 3? Think step by step and explain.",
    "Hi",
]


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return tiny_llama(seed=0)


def _reference(model, tokenizer, prompt, max_new_tokens):
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(
        **enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
    )
    return out[0, enc["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("batch_size", [1, 3, 128])
def test_greedy_matches_plain_generate(tiny, batch_size):
    model, tokenizer = tiny
    engine = TransformersEngine(model, tokenizer, batch_size=batch_size)
    results = engine.generate(GenerationRequest(PROMPTS, SamplingParams(max_new_tokens=12)))
    for prompt, result in zip(PROMPTS, results, strict=True):
        ref = _reference(model, tokenizer, prompt, 12)
        [sample] = result.samples
        assert sample.tokens == len(ref)
        body = ref[:-1] if ref[-1] in engine.end_ids else ref
        assert sample.text == tokenizer.decode(body, skip_special_tokens=True)
        assert result.prompt_tokens == len(engine.encode(prompt))


def test_sampling_shapes_seed_and_logprobs(tiny):
    engine = TransformersEngine(*tiny, batch_size=8)
    params = SamplingParams(n=4, temperature=0.7, top_p=0.95, max_new_tokens=10, seed=1, logprobs=True)
    first = engine.generate(GenerationRequest(PROMPTS, params))
    again = engine.generate(GenerationRequest(PROMPTS, params))
    assert [r.texts for r in first] == [r.texts for r in again]
    for result in first:
        assert len(result.samples) == 4
        for s in result.samples:
            assert 1 <= s.tokens <= 10 and len(s.logprobs) == s.tokens
            assert all(lp <= 0 for lp in s.logprobs)
            assert s.finish_reason == ("length" if s.tokens == 10 else "stop")
    assert useful_tokens(first) == sum(s.tokens for r in first for s in r.samples)


def test_stop_string_cuts_text(tiny):
    engine = TransformersEngine(*tiny)
    [free] = engine.generate(GenerationRequest(["What is 2 + 3?"], SamplingParams(max_new_tokens=16)))
    text = free.samples[0].text
    assert len(text) > 4, "the tiny model should babble"
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    [cut] = engine.generate(
        GenerationRequest(["What is 2 + 3?"], SamplingParams(max_new_tokens=16, stop=(stop,)))
    )
    sample = cut.samples[0]
    assert sample.finish_reason == "stop" and stop not in sample.text
    assert text.startswith(sample.text) and sample.tokens < free.samples[0].tokens


def test_unknown_backend_and_bad_params():
    with pytest.raises(ValueError, match="unknown engine backend"):
        make_engine("onnx")
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)


def test_on_done_tells_each_prompt_once_when_all_its_samples_end(tiny):
    engine = TransformersEngine(*tiny, batch_size=3)
    told = []
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=6, seed=0)
    results = engine.generate(GenerationRequest(PROMPTS, params, on_done=told.append))
    assert len(results) == len(PROMPTS) and told == [1] * len(PROMPTS)
