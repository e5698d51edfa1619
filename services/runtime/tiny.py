"""Tiny randomly initialised causal LMs with the real SmolLM2 tokenizer, for fast tests of engines and
training code: a Llama in memory (:func:`tiny_llama`), or a Llama, Qwen2 or GPT-NeoX written as a
model folder (:func:`tiny_model_folder`). Their outputs are noise; use them to test plumbing, never
quality."""

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


# A template unlike SmolLM2's: each turn ends with <|endoftext|>, not the tokenizer's eos
# <|im_end|>, so only a model folder's generation_config.json tells where an answer ends.
TINY_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a tiny test model.<|endoftext|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ARCHITECTURES = ("llama", "qwen2", "gpt_neox")


def tiny_model_folder(
    dest: str | Path,
    arch: str = "qwen2",
    *,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 64,
    chat_template: str = TINY_CHAT_TEMPLATE,
) -> Path:
    """Write a tiny random causal LM of ``arch`` as a Hugging Face folder at ``dest`` and return it:
    ``config.json``, weights, the SmolLM2 tokenizer with ``chat_template``, and a
    ``generation_config.json`` whose ``eos_token_id`` lists two ids (the tokenizer's eos and the
    template's end-of-turn ``<|endoftext|>``). Nothing is downloaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from selfimprove.runtime.models import base_tokenizer

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    tokenizer = base_tokenizer()
    tokenizer.chat_template = chat_template
    turn_end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    eos = [tokenizer.eos_token_id, turn_end]
    # GPT-NeoX rotates a quarter of each head and has no grouped key/value heads
    own = {"rotary_pct": 0.25} if arch == "gpt_neox" else {"num_key_value_heads": 2}
    config = AutoConfig.for_model(
        arch,
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        **own,
        max_position_embeddings=2048,
        tie_word_embeddings=arch != "gpt_neox",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    folder = Path(dest)
    model.save_pretrained(folder)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
