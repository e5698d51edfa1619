"""Model references on the command line: a base name or folder, or a run's model.

``run:RUN_ID`` is the run's incumbent, ``run:RUN_ID@ITER`` the candidate trained in iteration ITER.
They are looked up through the evaluator's control plane and the adapter is fetched (and verified)
from the artifact store named by the ``SELFIMPROVE_S3_*`` settings.
"""

from __future__ import annotations

import json
from pathlib import Path

from selfimprove.cli.control import control_stub


class ModelRefError(ValueError):
    pass


def parse(ref: str) -> tuple[str, int | None] | None:
    """``(run_id, iteration)`` of a ``run:`` reference, or None for a base name or folder.

    >>> parse("run:abc"), parse("run:abc@2"), parse("smollm2-135m-instruct")
    (('abc', None), ('abc', 2), None)
    >>> parse("run:abc@x")
    Traceback (most recent call last):
    ...
    selfimprove.cli.modelref.ModelRefError: bad model reference 'run:abc@x': use run:RUN_ID or run:RUN_ID@ITERATION
    """
    if not ref.startswith("run:"):
        return None
    body = ref[4:]
    run_id, _, iteration = body.partition("@")
    if not run_id or (iteration and not iteration.isdigit()):
        raise ModelRefError(f"bad model reference {ref!r}: use run:RUN_ID or run:RUN_ID@ITERATION")
    return run_id, int(iteration) if iteration else None


def model_dict(run_id: str, iteration: int | None, address: str | None = None) -> dict:
    """The run's incumbent (or the iteration's candidate) as the lineage records it."""
    import grpc

    from selfimprove.v2 import control_pb2

    stub, target = control_stub(address)
    try:
        status = stub.GetRunStatus(control_pb2.GetRunStatusRequest(run_id=run_id), timeout=15).status
    except grpc.RpcError as exc:
        raise ModelRefError(f"run {run_id} from {target}: {exc.code().name}: {exc.details()}") from None
    lineage = json.loads(status.lineage_json or "{}")
    if iteration is None:
        incumbent = lineage.get("incumbent") or {}
        for model in lineage.get("models", []):  # the incumbent's entry says which iteration made it
            if incumbent.get("version") and model.get("version") == incumbent["version"]:
                return {**incumbent, "iteration": model.get("iteration")}
        return incumbent
    for model in lineage.get("models", []):
        if model.get("iteration") == iteration:
            return model
    raise ModelRefError(f"run {run_id} has no model from iteration {iteration}")


def local_model(model: dict, cache_dir: Path | None = None) -> tuple[str, Path | None]:
    """``(base, adapter folder or None)`` of a lineage model, fetching the adapter from the store."""
    base = model.get("base") or "smollm2-135m-instruct"
    adapter = model.get("adapter") or {}
    if not adapter.get("uri"):
        return base, None
    from selfimprove.core.settings import StoreSettings, load
    from selfimprove.core.store import ArtifactStore
    from selfimprove.runtime.adapters import resolve_adapter
    from selfimprove.v2.common_pb2 import ArtifactRef

    store = ArtifactStore.from_settings(load(StoreSettings))
    folder = resolve_adapter(ArtifactRef(**adapter), cache_dir, fetcher=store.get_folder)
    return base, folder


def resolve(ref: str, address: str | None = None) -> tuple[str, Path | None]:
    parsed = parse(ref)
    if parsed is None:
        return ref, None
    return local_model(model_dict(*parsed, address=address))
