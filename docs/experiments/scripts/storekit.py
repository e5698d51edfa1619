"""A finished run's stored files, read from a local stack folder after the run (the scripts that look
back at a run share it: candidate, pseudo_labels, reselect, ...). The reading itself is
:mod:`selfimprove.cli.runstore`, shared with ``selfimprove inspect``; this adds the scripts' common
arguments and fetching a trained candidate. While the run is going its stack holds the folder, and
these scripts are refused."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfimprove.cli import runstore
from selfimprove.cli.runstore import latest_attempts
from selfimprove.core.stack import LocalStack

__all__ = ["fetch_candidate", "latest_attempts", "read_latest", "run_parser"]


def read_latest(
    data_dir: Path, run_id: str, stage: str, filename: str, iteration: int | None = None
) -> dict[tuple[int, int], bytes]:
    """:func:`selfimprove.cli.runstore.read_latest`, a missing file ending the script with its message."""
    try:
        return runstore.read_latest(data_dir, run_id, stage, filename, iteration)
    except LookupError as e:
        raise SystemExit(str(e)) from None


def fetch_candidate(data_dir: Path, run_id: str, iteration: int, dest: Path) -> Path:
    """The candidate folder iteration ``iteration`` trained (its latest train attempt; an adapter, or
    a whole model), copied from the store and verified against its manifest into ``dest``."""
    from selfimprove.core.store import ArtifactStore

    prefix = f"runs/{run_id}/iter-{iteration:03d}/"
    with LocalStack(root=data_dir) as stack:
        client = stack.s3_client()
        names = (o.object_name for o in client.list_objects(stack.bucket, prefix=prefix, recursive=True))
        # training_config.json lies only in the attempt's own folder, never in a checkpoint's
        chosen = latest_attempts(names, "train", "training_config.json")
        if not chosen:
            raise SystemExit(f"no trained candidate under s3://{stack.bucket}/{prefix} in {data_dir}")
        name = chosen[min(chosen)]
        store = ArtifactStore(client, stack.bucket)
        ref = store.find_manifest(name.removesuffix("training_config.json"))
        if ref is None:
            raise SystemExit(f"{name}: its attempt has no manifest (training did not finish)")
        return store.get_folder(ref, dest)


def run_parser(doc: str | None) -> argparse.ArgumentParser:
    """The scripts' common arguments: the run's id and its stack folder (``--data-dir``)."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("run_id")
    ap.add_argument("--data-dir", type=Path, default=Path(".stack"))
    return ap
