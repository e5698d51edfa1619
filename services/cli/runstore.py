"""A finished run's stored files, read from a stopped local stack folder: the latest attempt of a
stage's file per iteration and shard. Shared by ``selfimprove inspect`` and the experiment scripts
that look back at a run. While the run is going its stack holds the folder, and reading is refused."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

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
    """The files :func:`latest_attempts` picks for ``run_id`` (one iteration, or all of them).

    Raises ``LookupError`` naming the prefix and folder when the run stored no such file."""
    from selfimprove.core.stack import LocalStack

    prefix = f"runs/{run_id}/" + ("" if iteration is None else f"iter-{iteration:03d}/")
    with LocalStack(root=data_dir) as stack:
        client = stack.s3_client()
        names = (o.object_name for o in client.list_objects(stack.bucket, prefix=prefix, recursive=True))
        chosen = latest_attempts(names, stage, filename)
        if not chosen:
            raise LookupError(f"no {stage} {filename} under s3://{stack.bucket}/{prefix} in {data_dir}")
        return {slot: client.get_object(stack.bucket, name).read() for slot, name in chosen.items()}
