"""Where a model's trained weights come from: a local path, or a remote reference fetched by a hook.

The weights are a LoRA adapter folder (``adapter_config.json``) or, from full fine-tuning, a whole
model folder (``config.json`` and safetensors weights), which then replaces the base
(:func:`split_model`).

The runtime does not depend on the artifact store. A service that has one registers a fetcher,
for example ``set_fetcher(lambda ref, dest: store.get_folder(ref, dest))``, and adapter references
that are not local paths (``s3://...``, ``runs/...`` keys, ``ArtifactRef`` objects) go through it,
into a per-reference folder under the model cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

AdapterRef = str | Path | Any  # a local folder, a URI string, or a store ``ArtifactRef``
Fetcher = Callable[[Any, Path], Path | None]

_fetcher: Fetcher | None = None


def set_fetcher(fetcher: Fetcher | None) -> None:
    """Install the function that copies a remote adapter ``ref`` into folder ``dest``."""
    global _fetcher
    _fetcher = fetcher


def is_adapter_folder(path: Path) -> bool:
    """A PEFT adapter folder has ``adapter_config.json``."""
    return (path / "adapter_config.json").is_file()


def is_model_folder(path: Path) -> bool:
    """A whole Hugging Face model folder (full fine-tuning's output): ``config.json`` and safetensors
    weights, and no adapter config."""
    return (
        (path / "config.json").is_file() and any(path.glob("*.safetensors")) and not is_adapter_folder(path)
    )


def is_weights_folder(path: Path) -> bool:
    return is_adapter_folder(path) or is_model_folder(path)


def resolve_adapter(ref: AdapterRef, cache_dir: Path | None = None, fetcher: Fetcher | None = None) -> Path:
    """A local weights folder for ``ref`` (an adapter, or a whole model), fetching remote references
    with ``fetcher`` (or the hook)."""
    if isinstance(ref, str | Path) and is_weights_folder(Path(ref).expanduser()):
        return Path(ref).expanduser()
    fetch = fetcher or _fetcher
    if fetch is None:
        raise FileNotFoundError(
            f"adapter {ref!r} is not a local PEFT or model folder (no adapter_config.json, no config.json "
            "with safetensors weights) and no remote fetcher "
            "is set (selfimprove.runtime.adapters.set_fetcher)"
        )
    if cache_dir is None:
        from selfimprove.runtime.models import default_cache_dir

        cache_dir = default_cache_dir()
    key = getattr(ref, "sha256", "") or hashlib.sha256(str(getattr(ref, "uri", ref)).encode()).hexdigest()
    dest = cache_dir / "adapters" / key
    if not is_weights_folder(dest):
        dest.mkdir(parents=True, exist_ok=True)
        dest = Path(fetch(ref, dest) or dest)
    if not is_weights_folder(dest):
        raise FileNotFoundError(
            f"fetched adapter {ref!r} into {dest}, but it is neither a PEFT folder (adapter_config.json) "
            "nor a model folder (config.json and safetensors weights)"
        )
    return dest


def split_model(
    base: str | Path, adapters: Sequence[AdapterRef], cache_dir: Path | None = None
) -> tuple[str, list[Path]]:
    """``(base, adapter folders)`` to load: the references resolved to local folders, and a whole
    model folder among them (a fully fine-tuned candidate) taking the base's place. Only the first
    may be a whole model: an adapter cannot become a base after the fact.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "full").mkdir(); (root / "full" / "config.json").write_text("{}") and None
    >>> (root / "full" / "model.safetensors").write_bytes(b"") or None
    >>> (root / "lora").mkdir(); (root / "lora" / "adapter_config.json").write_text("{}") and None
    >>> split_model("b", [root / "full", root / "lora"]) == (str(root / "full"), [root / "lora"])
    True
    >>> split_model("b", [root / "lora"]) == ("b", [root / "lora"])
    True
    >>> split_model("b", [root / "lora", root / "full"])
    Traceback (most recent call last):
    ...
    ValueError: adapter ... is a whole model folder (full fine-tuning): it can only come first, in place of the base
    """
    folders = [resolve_adapter(ref, cache_dir) for ref in adapters]
    if folders and is_model_folder(folders[0]):
        base, folders = str(folders[0]), folders[1:]
    for folder in folders:
        if is_model_folder(folder):
            raise ValueError(
                f"adapter {folder} is a whole model folder (full fine-tuning): it can only come first, "
                "in place of the base"
            )
    return str(base), folders
