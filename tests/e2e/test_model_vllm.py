"""The vLLM backend on a GPU (deselected on CPU machines: needs the vllm extra and CUDA)."""

import pytest

from selfimprove.runtime.engine import GenerationRequest, SamplingParams, make_engine
from selfimprove.runtime.extract import last_integer

pytestmark = [pytest.mark.e2e, pytest.mark.gpu]


def test_vllm_greedy_and_samples():
    pytest.importorskip("vllm")
    engine = make_engine("vllm", gpu_memory_utilization=0.3)
    greedy, sampled = (
        engine.generate(
            GenerationRequest(["What is 2 + 3?", "What is 48 + 27?"], SamplingParams(max_new_tokens=48))
        ),
        engine.generate(
            GenerationRequest(
                ["What is 48 + 27?"],
                SamplingParams(n=4, temperature=0.7, top_p=0.95, max_new_tokens=48, seed=0, logprobs=True),
            )
        ),
    )
    assert last_integer(greedy[0].samples[0].text) == 5
    [result] = sampled
    assert len(result.samples) == 4
    assert all(len(s.logprobs) == s.tokens for s in result.samples)
