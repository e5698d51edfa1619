"""A new run's input files, put in the artifact store by the evaluator when the run starts.

The stages never read the evaluator's disk: a file the run config names (``acquisition.seed_set``) is
read once, here, and stored as a folder artifact under the run's prefix, whose reference every command
that needs it carries (``TaskSpec.seed_set``). The key holds the file's hash and an existing artifact
is reused, so a redelivered start, or one repeated after an evaluator restart, stores nothing twice.
"""

from __future__ import annotations

from selfimprove.core.keys import run_prefix
from selfimprove.core.store import ArtifactStore, sha256_bytes
from selfimprove.evaluator.config import RunConfig, read_seed_set
from selfimprove.v2.common_pb2 import ArtifactRef

SEED_SET_FILE = "seed_set.jsonl"


def seed_set_prefix(run_id: str, digest: str) -> str:
    """Where a run's seed set is stored, by the file's sha256.

    >>> seed_set_prefix("r1", "ab" * 32)
    'runs/r1/inputs/seed-set/abababababababab/'
    """
    return f"{run_prefix(run_id)}inputs/seed-set/{digest[:16]}/"


def put_seed_set(store: ArtifactStore, run_id: str, path: str) -> ArtifactRef:
    """The run's seed set as a folder artifact (``seed_set.jsonl`` + manifest), stored unless it is
    there already. Raises ``ValueError`` naming the config field and the file when it cannot be read
    or is not a seed set."""
    try:
        data = read_seed_set(path)
    except ValueError as exc:
        raise ValueError(f"acquisition.seed_set: {exc}") from None
    prefix = seed_set_prefix(run_id, sha256_bytes(data))
    found = store.find_manifest(prefix)
    if found is not None:
        return found
    return store.publish(prefix, {SEED_SET_FILE: data}, meta={"source": path, "kind": "seed_set"})


def put_inputs(store: ArtifactStore, run_id: str, cfg: RunConfig) -> dict[str, ArtifactRef]:
    """Every input file of a new run, stored: ``{"seed_set": ref}`` for a self-instruct run, else
    nothing."""
    a = cfg.acquisition
    if a.self_instruct and a.seed_set:
        return {"seed_set": put_seed_set(store, run_id, a.seed_set)}
    return {}
