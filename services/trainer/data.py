"""Read the training data a command names: folder artifacts with ``sft.jsonl`` and/or ``pairs.jsonl``.

The selection service writes each dataset as a folder artifact (``card.json`` plus the files);
``sft.jsonl`` rows are ``{"prompt", "response", ...}``, ``pairs.jsonl`` rows ``{"prompt", "chosen",
"rejected", ...}``. Every read is verified against the manifest; a missing artifact, a sha256
mismatch, a missing file or an empty set is a ``StageInputError`` that names the problem.

>>> parse_rows(b'{"prompt": "p", "response": "r", "x": 1}\\n\\n', ("prompt", "response"), "d")
[{'prompt': 'p', 'response': 'r'}]
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from selfimprove.core.stage import StageInputError
from selfimprove.core.store import ArtifactError, ArtifactStore
from selfimprove.v2.common_pb2 import ArtifactRef

SFT_FILE, PAIRS_FILE = "sft.jsonl", "pairs.jsonl"
SFT_FIELDS, PAIR_FIELDS = ("prompt", "response"), ("prompt", "chosen", "rejected")


def parse_rows(data: bytes, fields: Sequence[str], where: str) -> list[dict[str, str]]:
    """JSON lines with the string ``fields`` each (other keys are dropped; blank lines skipped)."""
    rows = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise StageInputError(f"{where} line {number}: not JSON ({exc})") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(f), str) for f in fields):
            raise StageInputError(f"{where} line {number}: needs string fields {', '.join(fields)}")
        rows.append({f: row[f] for f in fields})
    return rows


def read_rows(store: ArtifactStore, refs: Sequence[ArtifactRef], name: str) -> list[dict[str, str]]:
    """Rows of file ``name`` over every dataset artifact, refused when there are none."""
    if not refs:
        raise StageInputError("train command names no dataset")
    fields = SFT_FIELDS if name == SFT_FILE else PAIR_FIELDS
    rows: list[dict[str, str]] = []
    for ref in refs:
        try:
            manifest = store.manifest(ref)
        except ArtifactError as exc:
            raise StageInputError(f"dataset {ref.uri}: {exc}") from None
        if name not in {e.path for e in manifest.files}:
            have = ", ".join(sorted(e.path for e in manifest.files))
            raise StageInputError(f"dataset {ref.uri} has no {name} (files: {have})")
        try:
            data = store.read_file(ref, name)
        except ArtifactError as exc:
            raise StageInputError(f"dataset {ref.uri}: {exc}") from None
        rows.extend(parse_rows(data, fields, f"{ref.uri} {name}"))
    if not rows:
        raise StageInputError(f"empty dataset: no rows in {name} of {', '.join(r.uri for r in refs)}")
    return rows


def data_refs(refs: Sequence[ArtifactRef], name: str, rows: int) -> dict:
    """What ``data_refs.json`` records: which artifacts and file were trained on."""
    return {
        "file": name,
        "rows": rows,
        "datasets": [{"uri": r.uri, "sha256": r.sha256, "bytes": r.bytes} for r in refs],
    }
