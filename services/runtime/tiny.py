"""A tiny randomly initialised Llama with the real SmolLM2 tokenizer, for fast tests of engines and
training code. Its outputs are noise; use it to test plumbing, never quality."""

from __future__ import annotations

from pathlib import Path


def tiny_llama(tokenizer_from: str | Path | None = None, *, seed: int = 0, layers: int = 2, hidden: int = 64):
    """Return ``(model, tokenizer)``: a random Llama sized for milliseconds per step."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfimprove.runtime.models import base_tokenizer

    tokenizer = base_tokenizer(str(tokenizer_from) if tokenizer_from else "smollm2-135m-instruct")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer
