"""Object keys of the artifact store: one prefix per run, iteration, stage, shard and attempt.

A slow attempt and its retry never write the same object because the attempt is part of the key.

>>> attempt_prefix("run-1", 2, "train", 0, 3)
'runs/run-1/iter-002/train/shard-000/attempt-3/'
>>> attempt_prefix("../x", 0, "train", 0, 1)
Traceback (most recent call last):
...
ValueError: invalid run id '../x': use 1-64 letters, digits, '.', '_' or '-', not starting with '.'
"""

from __future__ import annotations

import re

_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
MANIFEST = "manifest.json"


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"invalid {kind} {value!r}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'"
        )
    return value


def run_prefix(run_id: str) -> str:
    return f"runs/{check_name('run id', run_id)}/"


def run_state_key(run_id: str) -> str:
    """The evaluator's snapshot of a run: the evaluator's own, read by nothing else (stage services
    read :func:`run_end_key`).

    >>> run_state_key("r1")
    'runs/r1/state/snapshot.json'
    """
    return run_prefix(run_id) + "state/snapshot.json"


def incumbent_key(topic_prefix: str) -> str:
    """The deployment's last promotion (:mod:`selfimprove.core.incumbent`): written by the evaluator,
    read by a serving replica when it starts.

    >>> incumbent_key("selfimprove")
    'serving/selfimprove/promotion.pb'
    """
    return f"serving/{check_name('topic prefix', topic_prefix)}/promotion.pb"


def run_end_key(run_id: str) -> str:
    """Whether a run has ended, as stage services read it (:mod:`selfimprove.core.runend`).

    >>> run_end_key("r1")
    'runs/r1/ended.json'
    """
    return run_prefix(run_id) + "ended.json"


def attempt_prefix(run_id: str, iteration: int, stage: str, shard: int, attempt: int) -> str:
    if iteration < 0 or shard < 0 or attempt < 1:
        raise ValueError(
            f"iteration, shard must be >= 0 and attempt >= 1, got {iteration}, {shard}, {attempt}"
        )
    return f"{run_prefix(run_id)}iter-{iteration:03d}/{check_name('stage', stage)}/shard-{shard:03d}/attempt-{attempt}/"


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` to ``(bucket, key)``.

    >>> split_uri("s3://b/runs/x/manifest.json")
    ('b', 'runs/x/manifest.json')
    """
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an artifact uri (s3://bucket/key): {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    if not bucket or not key:
        raise ValueError(f"not an artifact uri (s3://bucket/key): {uri!r}")
    return bucket, key
