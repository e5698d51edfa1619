"""A finished run's stored files, read from a local stack folder after the run (the scripts that look
back at a run share it: candidate, dev_breakdown, loop_training, pseudo_labels). While the run is
going its stack holds the folder, and these scripts are refused."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from pathlib import Path

from selfimprove.core.stack import LocalStack

ATTEMPT = re.compile(r"/iter-(\d+)/([\w-]+)/shard-(\d+)/attempt-(\d+)/(.+)$")


def latest_attempts(names: Iterable[str], stage: str, filename: str) -> dict[tuple[int, int], str]:
    """Per ``(iteration, shard)``, the object named ``filename`` in the stage's latest attempt
    (attempts compare as numbers).

    >>> latest_attempts(["runs/r/iter-001/train/shard-000/attempt-9/loss_curve.json",
    ...                  "runs/r/iter-001/train/shard-000/attempt-10/loss_curve.json",
    ...                  "runs/r/iter-002/evaluate/shard-000/attempt-1/details.jsonl"], "train", "loss_curve.json")
    {(1, 0): 'runs/r/iter-001/train/shard-000/attempt-10/loss_curve.json'}
    """
    best: dict[tuple[int, int], tuple[int, str]] = {}
    for name in names:
        m = ATTEMPT.search(name)
        if not m or m.group(2) != stage or not ("/" + m.group(5)).endswith("/" + filename):
            continue
        slot, attempt = (int(m.group(1)), int(m.group(3))), int(m.group(4))
        if attempt > best.get(slot, (0, ""))[0]:
            best[slot] = (attempt, name)
    return {slot: name for slot, (_, name) in sorted(best.items())}


def read_latest(
    data_dir: Path, run_id: str, stage: str, filename: str, iteration: int | None = None
) -> dict[tuple[int, int], bytes]:
    """The files :func:`latest_attempts` picks for ``run_id`` (one iteration, or all of them)."""
    prefix = f"runs/{run_id}/" + ("" if iteration is None else f"iter-{iteration:03d}/")
    with LocalStack(root=data_dir) as stack:
        client = stack.s3_client()
        names = (o.object_name for o in client.list_objects(stack.bucket, prefix=prefix, recursive=True))
        chosen = latest_attempts(names, stage, filename)
        if not chosen:
            raise SystemExit(f"no {stage} {filename} under s3://{prefix} in {data_dir}")
        return {slot: client.get_object(stack.bucket, name).read() for slot, name in chosen.items()}


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
