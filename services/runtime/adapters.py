"""Where LoRA adapter folders come from: a local path, or a remote reference fetched by a hook.

The runtime does not depend on the artifact store. A service that has one registers a fetcher,
for example ``set_fetcher(lambda ref, dest: store.get_folder(ref, dest))``, and adapter references
that are not local paths (``s3://...``, ``runs/...`` keys, ``ArtifactRef`` objects) go through it,
into a per-reference folder under the model cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
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


def resolve_adapter(ref: AdapterRef, cache_dir: Path | None = None, fetcher: Fetcher | None = None) -> Path:
    """A local adapter folder for ``ref``, fetching remote references with ``fetcher`` (or the hook)."""
    if isinstance(ref, str | Path) and is_adapter_folder(Path(ref).expanduser()):
        return Path(ref).expanduser()
    fetch = fetcher or _fetcher
    if fetch is None:
        raise FileNotFoundError(
            f"adapter {ref!r} is not a local PEFT folder (no adapter_config.json) and no remote fetcher "
            "is set (selfimprove.runtime.adapters.set_fetcher)"
        )
    if cache_dir is None:
        from selfimprove.runtime.models import default_cache_dir

        cache_dir = default_cache_dir()
    key = getattr(ref, "sha256", "") or hashlib.sha256(str(getattr(ref, "uri", ref)).encode()).hexdigest()
    dest = cache_dir / "adapters" / key
    if not is_adapter_folder(dest):
        dest.mkdir(parents=True, exist_ok=True)
        dest = Path(fetch(ref, dest) or dest)
    if not is_adapter_folder(dest):
        raise FileNotFoundError(f"fetched adapter {ref!r} into {dest}, but it has no adapter_config.json")
    return dest
