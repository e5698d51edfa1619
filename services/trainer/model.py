"""The model a train command starts from: the policy's base, its adapter made trainable or a new LoRA,
or (full fine-tuning) every weight.

A LoRA candidate is again base + one adapter: with ``policy.adapter`` set, that adapter is fetched
from the store (verified by sha256) and trained further; otherwise a fresh LoRA is added. Full
fine-tuning starts from the base with the policy's adapter merged in, or from the policy's own
whole model folder (an earlier full fine-tuning), and writes a whole model folder that the
candidate's ``adapter`` reference names. The base's identity is the sha256 of its weight files; a
command or a policy that names another base is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from selfimprove.contracts.params import Hparams
from selfimprove.core.stage import StageInputError
from selfimprove.core.store import ArtifactError, ArtifactStore, sha256_file_cached
from selfimprove.runtime.adapters import is_model_folder, is_weights_folder
from selfimprove.runtime.models import DEFAULT_BASE, ModelNotFoundError, resolve_base
from selfimprove.v2.common_pb2 import ModelRef

TRAINING_CONFIG = "training_config.json"


def weights_sha256(folder: Path) -> str:
    """sha256 of a model folder's weights: the one safetensors file's hash, or a hash over all of them."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise StageInputError(f"base model folder {folder} has no weight files")
    digests = [(f.name, sha256_file_cached(f)) for f in files]
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256("".join(f"{n}:{d}\n" for n, d in digests).encode()).hexdigest()


def resolve_policy_base(policy: ModelRef, cache_dir: Path | None) -> tuple[Path, str]:
    """The base folder and its weights' sha256, checked against ``policy.base_sha256`` when given."""
    try:
        folder = resolve_base(policy.base or DEFAULT_BASE, cache_dir)
    except ModelNotFoundError as exc:
        raise StageInputError(str(exc)) from None
    sha = weights_sha256(folder)
    if policy.base_sha256 and policy.base_sha256 != sha:
        raise StageInputError(
            f"base sha256 mismatch: the command names {policy.base_sha256} but {policy.base or DEFAULT_BASE} "
            f"has weights {sha}"
        )
    return folder, sha


def fetch_adapter(store: ArtifactStore, policy: ModelRef, base_sha: str, dest: Path) -> Path | None:
    """The policy's trained weights (None for the bare base): a PEFT adapter folder, or a whole model
    folder from full fine-tuning; refused if trained on another base."""
    if not policy.adapter.uri:
        return None
    try:
        folder = store.get_folder(policy.adapter, dest)
    except ArtifactError as exc:
        raise StageInputError(f"policy adapter {policy.adapter.uri}: {exc}") from None
    if not is_weights_folder(folder):
        raise StageInputError(
            f"policy adapter {policy.adapter.uri} is neither a PEFT folder nor a whole model folder"
        )
    config = folder / TRAINING_CONFIG
    trained_on = json.loads(config.read_text()).get("base_sha256") if config.is_file() else None
    if trained_on and trained_on != base_sha:
        raise StageInputError(
            f"adapter {policy.adapter.uri} was trained on base {trained_on}, not on this base ({base_sha})"
        )
    return folder


def check_targets(wanted: str | list[str], available: set[str], arch: str) -> str | list[str]:
    """``wanted`` LoRA target modules, checked against the short names of ``arch``'s linear layers.

    ``all-linear`` (PEFT: every linear layer but the output head) fits any architecture that has
    one; another string is a regular expression PEFT matches itself; a list must name layers the
    model has (a Llama's ``q_proj`` is a GPT-NeoX's ``query_key_value``).

    >>> check_targets("all-linear", {"q_proj", "v_proj"}, "LlamaForCausalLM")
    'all-linear'
    >>> check_targets(["q_proj"], {"query_key_value", "dense"}, "GPTNeoXForCausalLM")
    Traceback (most recent call last):
    ...
    selfimprove.core.stage.StageInputError: target_modules ['q_proj'] are not linear layers of GPTNeoXForCausalLM; its linear layers: dense, query_key_value
    """
    if not available:
        raise StageInputError(f"{arch} has no linear layer a LoRA adapter could target")
    if isinstance(wanted, str):
        return wanted
    if not wanted:
        raise StageInputError("target_modules is an empty list; name layers or use 'all-linear'")
    missing = [name for name in wanted if name not in available]
    if missing:
        raise StageInputError(
            f"target_modules {missing} are not linear layers of {arch}; "
            f"its linear layers: {', '.join(sorted(available))}"
        )
    return wanted


def linear_names(model) -> set[str]:
    """Short names of ``model``'s linear layers (``q_proj``, ``dense_h_to_4h``, ...) but its output
    layer: what a LoRA ``target_modules`` list may name."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return {
        name.rsplit(".", 1)[-1]
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear | Conv1D) and m is not head
    }


def trainable_model(base: Path, adapter: Path | None, hp: Hparams, seed: int, full: bool = False):
    """``(model, tokenizer)`` in train mode: the adapter continued, a new LoRA, or every weight
    (``full``: from the base with the adapter merged, or from a whole model folder)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from selfimprove.runtime.models import load_model

    if adapter is not None and is_model_folder(adapter) and not full:
        raise StageInputError(
            f"the policy {adapter.name} is a whole model folder (full fine-tuning); a LoRA on it would "
            "not be an adapter of the base: train it with method full (training.method: full)"
        )
    model, tokenizer = load_model(str(base), [adapter] if adapter and full else [], merge=True)
    torch.manual_seed(seed)
    if full:
        model.requires_grad_(True)
    elif adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    else:
        config = LoraConfig(
            r=hp.lora_r,
            lora_alpha=hp.lora_alpha,
            lora_dropout=hp.lora_dropout,
            target_modules=check_targets(hp.target_modules, linear_names(model), type(model).__name__),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    model.train()
    return model, tokenizer
