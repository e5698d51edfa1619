"""Protobuf messages <-> plain dicts, so the run state is JSON (snapshots) and stays readable.

>>> ref = ArtifactRef(uri="s3://b/k", sha256="ab", bytes=3)
>>> to_ref(ref_dict(ref)) == ref
True
>>> model_dict(ModelRef(base="m"))["adapter"]
{}
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from selfimprove.v2.common_pb2 import ArtifactRef, ModelRef
from selfimprove.v2.stages_pb2 import SuiteScore


def base_version(run_id: str) -> str:
    """The version a run gives its base model (the incumbent before any promotion).

    >>> base_version("r1")
    'r1/base'
    """
    return f"{run_id}/base"


def ref_dict(ref: ArtifactRef) -> dict[str, Any]:
    if not ref.uri:
        return {}
    return {"uri": ref.uri, "sha256": ref.sha256, "bytes": int(ref.bytes), "media_type": ref.media_type}


def to_ref(data: dict[str, Any] | None) -> ArtifactRef:
    return ArtifactRef(**data) if data else ArtifactRef()


def model_dict(ref: ModelRef) -> dict[str, Any]:
    return {
        "base": ref.base,
        "base_sha256": ref.base_sha256,
        "adapter": ref_dict(ref.adapter),
        "version": ref.version,
    }


def to_model(data: dict[str, Any] | None) -> ModelRef:
    if not data:
        return ModelRef()
    return ModelRef(
        base=data.get("base", ""),
        base_sha256=data.get("base_sha256", ""),
        adapter=to_ref(data.get("adapter")),
        version=data.get("version", ""),
    )


def suite_dict(s: SuiteScore) -> dict[str, Any]:
    return json_format.MessageToDict(
        s, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def to_suite(data: dict[str, Any]) -> SuiteScore:
    """A suite's score as :func:`suite_dict` stored it; a field added by a newer version (a snapshot
    read during a rolling upgrade) is ignored.

    >>> to_suite({"name": "dev", "n": 8, "added_later": "x"}).n
    8
    """
    return json_format.ParseDict(data, SuiteScore(), ignore_unknown_fields=True)
