"""Per-item results of a model version on a dev suite, cached in the artifact store so the incumbent is
not re-evaluated every iteration: ``evalcache/<model>/<suite>/seed-<seed>-n-<n>/`` (a folder artifact
with ``results.json``: item ids, replies, outcomes)."""

from __future__ import annotations

import hashlib
import json

from selfimprove.core.store import ArtifactError, ArtifactStore


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_prefix(model_key: str, suite_key: str, seed: int, n: int) -> str:
    """Where the results of a model on a suite and dev seed live.

    >>> cache_prefix("m", "s", 1, 20).startswith("evalcache/")
    True
    """
    return f"evalcache/{_h(model_key)}/{_h(suite_key)}/seed-{seed}-n-{n}/"


def get(store: ArtifactStore, prefix: str) -> dict | None:
    ref = store.find_manifest(prefix)
    if ref is None:
        return None
    try:
        return json.loads(store.read_file(ref, "results.json"))
    except (ArtifactError, ValueError):
        return None  # a damaged entry is recomputed


def put(store: ArtifactStore, prefix: str, results: dict) -> None:
    store.publish(
        prefix, {"results.json": json.dumps(results).encode()}, {"items": len(results.get("ids", []))}
    )
