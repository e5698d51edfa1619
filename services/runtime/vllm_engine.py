"""The vLLM backend of the engine interface, for GPUs. An optional extra (``pip install
selfimprove[vllm]`` on CUDA images); ``vllm`` is imported only when this backend is built.

A LoRA adapter is served through a ``LoRARequest`` (vLLM applies one adapter per request, so at
most one adapter folder is accepted); a fully fine-tuned candidate (a whole model folder) is loaded
as the model itself. Chat prompts go through ``LLM.chat``, which applies the
model's chat template as the transformers backend does, and every sample stops on the same
end-of-turn tokens (:func:`~selfimprove.runtime.models.stop_token_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from selfimprove.runtime.engine import GenerationRequest, PromptResult, Sample, to_messages


class VLLMEngine:
    """Engine over an in-process ``vllm.LLM``."""

    def __init__(self, llm, lora_request=None, stop_ids: Sequence[int] = ()) -> None:
        self.llm = llm
        self.lora_request = lora_request
        self.stop_ids = list(stop_ids)

    @classmethod
    def load(
        cls,
        base: str = "smollm2-135m-instruct",
        adapters: Sequence[str | Path] = (),
        *,
        gpu_memory_utilization: float = 0.85,
        max_lora_rank: int = 64,
        dtype: str = "auto",
        cache_dir: Path | None = None,
        **llm_options,
    ) -> VLLMEngine:
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError as exc:
            raise RuntimeError("the vllm backend needs the 'vllm' extra on a CUDA machine") from exc
        from selfimprove.runtime.adapters import split_model
        from selfimprove.runtime.models import load_tokenizer, resolve_base, stop_token_ids

        base, adapters = split_model(base, adapters, cache_dir)  # a fully fine-tuned model is the base
        if len(adapters) > 1:
            raise ValueError("the vllm backend applies one LoRA adapter per request; merge the others first")
        folder = resolve_base(base, cache_dir)
        llm = LLM(
            model=str(folder),
            tokenizer=str(folder),
            dtype=dtype,
            enable_lora=bool(adapters),
            max_lora_rank=max_lora_rank,
            gpu_memory_utilization=gpu_memory_utilization,
            **llm_options,
        )
        lora = None
        if adapters:
            lora = LoRARequest(adapters[0].name or "adapter", 1, str(adapters[0]))
        return cls(llm, lora, stop_token_ids(folder, load_tokenizer(folder)))

    def generate(self, request: GenerationRequest) -> list[PromptResult]:
        from vllm import SamplingParams as VSamplingParams

        p = request.params
        params = VSamplingParams(
            n=p.n,
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_new_tokens,
            stop=list(p.stop) or None,
            stop_token_ids=self.stop_ids or None,
            seed=p.seed,
            logprobs=0 if p.logprobs else None,
        )
        conversations = [to_messages(prompt) for prompt in request.prompts]
        outputs = self.llm.chat(conversations, params, use_tqdm=False, lora_request=self.lora_request)
        return [_convert(out, p.logprobs) for out in outputs]


def _convert(out, want_logprobs: bool) -> PromptResult:
    samples = []
    for c in out.outputs:
        logprobs = None
        if want_logprobs and c.logprobs is not None:
            logprobs = tuple(step[tok].logprob for tok, step in zip(c.token_ids, c.logprobs, strict=False))
        reason = "length" if c.finish_reason == "length" else "stop"
        samples.append(Sample(text=c.text, tokens=len(c.token_ids), finish_reason=reason, logprobs=logprobs))
    return PromptResult(samples=tuple(samples), prompt_tokens=len(out.prompt_token_ids or ()))
