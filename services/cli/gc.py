"""``selfimprove gc RUN``: delete a run's abandoned attempts (artifacts no accepted result points to);
``--old`` also deletes what an ended run no longer needs. Never deleted: the run's state, the adapters
of promoted models and the data that trained them (with the candidates they continued).

selfimprove gc run-1a2b3c4d --dry-run
selfimprove gc run-1a2b3c4d --old
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

_ATTEMPT = re.compile(r"^(runs/[^/]+/iter-\d+/[^/]+/shard-\d+/attempt-\d+/)")


def attempt_of(key_or_uri: str) -> str:
    """The attempt prefix of an object key or ``s3://`` uri, or ``""``.

    >>> attempt_of("s3://b/runs/r/iter-001/train/shard-000/attempt-2/manifest.json")
    'runs/r/iter-001/train/shard-000/attempt-2/'
    """
    key = key_or_uri.split("/", 3)[3] if key_or_uri.startswith("s3://") else key_or_uri
    m = _ATTEMPT.match(key)
    return m.group(1) if m else ""


def ancestry(models: list[dict]) -> list[dict]:
    """Promoted models and the unpromoted candidates they were trained from (``parent`` links;
    ``training.continue_pending``), so a promoted model's whole training history is kept.

    >>> ms = [{"version": "a", "parent": ""}, {"version": "b", "parent": "a"}, {"version": "c", "parent": "b", "promoted": True}]
    >>> [m["version"] for m in ancestry(ms)]
    ['c', 'b', 'a']
    """
    by_version = {m.get("version"): m for m in models}
    out: list[dict] = []
    for m in models:
        if not m.get("promoted"):
            continue
        while m is not None and m not in out:
            out.append(m)
            parent = by_version.get(m.get("parent"))
            m = parent if parent is not None and not parent.get("promoted") else None
    return out


def plan(keys: list[str], lineage: dict, old: bool) -> tuple[list[str], set[str]]:
    """Keys to delete and the attempt prefixes protected, from the run's lineage. Pure.

    >>> lin = {"artifacts": [{"refs": {"samples": {"uri": "s3://b/runs/r/iter-001/acquire/shard-000/attempt-2/manifest.json"}}}],
    ...        "models": []}
    >>> keys = ["runs/r/iter-001/acquire/shard-000/attempt-1/a", "runs/r/iter-001/acquire/shard-000/attempt-2/a",
    ...         "runs/r/state/snapshot.json"]
    >>> plan(keys, lin, old=False)[0]
    ['runs/r/iter-001/acquire/shard-000/attempt-1/a']
    >>> plan(keys, lin, old=True)[0]
    ['runs/r/iter-001/acquire/shard-000/attempt-1/a', 'runs/r/iter-001/acquire/shard-000/attempt-2/a']
    """
    accepted = {
        attempt_of(ref["uri"]) for a in lineage.get("artifacts", []) for ref in a.get("refs", {}).values()
    }
    protected: set[str] = set()
    for m in ancestry(lineage.get("models", [])):
        protected.add(attempt_of(m.get("adapter", {}).get("uri", "")))
        protected.update(attempt_of(u) for u in m.get("trained_from", []))
    protected.discard("")
    keep = protected if old else accepted | protected
    return [k for k in keys if (p := attempt_of(k)) and p not in keep], protected


def gc_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    old: Annotated[
        bool, typer.Option("--old", help="Also delete accepted artifacts no promoted model needs.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted.")] = False,
) -> None:
    """Delete artifacts of abandoned attempts (and with --old, of an ended run), keeping promoted models."""
    from selfimprove.core.keys import run_prefix
    from selfimprove.core.settings import StoreSettings, load
    from selfimprove.core.store import ArtifactStore
    from selfimprove.evaluator import snapshot

    store = ArtifactStore.from_settings(load(StoreSettings))
    state = snapshot.load(store, run_id)
    if state is None:
        typer.echo(f"no run {run_id!r} (no snapshot at {snapshot.snapshot_key(run_id)})", err=True)
        raise typer.Exit(1)
    if old and state.status == "running":
        typer.echo(f"run {run_id} is running: stop it before --old", err=True)
        raise typer.Exit(1)
    keys = sorted(store.list_keys(run_prefix(run_id)))
    doomed, protected = plan(keys, state.lineage, old)
    for key in doomed:
        if dry_run:
            typer.echo(f"would delete {key}")
        else:
            store.client.remove_object(store.bucket, key)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {len(doomed)} objects of run {run_id}; kept {len(protected)} attempt(s) promoted models need"
    )
