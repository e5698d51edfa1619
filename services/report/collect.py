"""Gather a report's facts: the run's status and lineage, the data cards, loss curves and
refinement tables of its artifacts (verified on read), and per-stage wall times from manifests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from selfimprove.core.store import ArtifactError, ArtifactStore
from selfimprove.report.summary import summarize
from selfimprove.v2.common_pb2 import ArtifactRef


@dataclass
class RunFacts:
    run_id: str
    state: str
    stop_reason: str
    lineage: dict[str, Any]
    decisions: list[dict[str, Any]]
    cards: dict[int, dict[str, Any]] = field(default_factory=dict)
    losses: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    refine_tables: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    stage_seconds: dict[int, dict[str, float]] = field(default_factory=dict)
    benchmark: dict[str, dict[str, Any]] = field(default_factory=dict)  # model label -> set -> score
    # set -> the final model minus the base on the same items: delta, low, high, p_value, final
    paired: dict[str, dict[str, Any]] = field(default_factory=dict)
    # why there is no benchmark table (e.g. the run declares no test sets); empty: nothing to say
    benchmark_note: str = ""
    # iteration -> restated prompts asked, sampled and kept by acquisition over its shards
    paraphrases: dict[int, dict[str, int]] = field(default_factory=dict)


def _json_file(store: ArtifactStore, ref: dict, names: tuple[str, ...]) -> Any | None:
    """The first of ``names`` inside a folder artifact, parsed; None when absent."""
    if not ref.get("uri"):
        return None
    aref = ArtifactRef(**ref)
    try:
        if not aref.uri.endswith("/manifest.json"):  # a single JSON file
            return json.loads(store.get_bytes(aref))
        manifest = store.manifest(aref)
        present = {e.path for e in manifest.files}
        for name in names:
            if name in present:
                return json.loads(store.read_file(aref, name))
    except (ArtifactError, ValueError):
        return None
    return None


def collect(status, store: ArtifactStore | None) -> RunFacts:
    summary = summarize(status)
    facts = RunFacts(
        run_id=status.run_id,
        state=status.state,
        stop_reason=status.stop_reason,
        lineage=summary["lineage"],
        decisions=[{"line": line} for line in summary["decisions"]],
    )
    if store is None:
        return facts
    created: dict[int, dict[str, float]] = {}
    restated: dict[tuple[int, int], dict[str, int]] = {}  # the last accepted acquisition of each shard
    for art in facts.lineage.get("artifacts", []):
        iteration, stage, refs = art.get("iteration", 0), art.get("stage", ""), art.get("refs", {})
        for ref in refs.values():
            try:
                manifest = store.manifest(ArtifactRef(**ref))
            except (ArtifactError, ValueError, TypeError):
                continue
            when = manifest.created
            if stage == "acquire" and (counts := paraphrase_counts(manifest.meta)):
                restated[(iteration, art.get("shard", 0))] = counts
            slot = created.setdefault(iteration, {})
            slot[stage] = max(slot.get(stage, 0.0), when)
        if stage == "select":
            card = _json_file(store, refs.get("dataset") or {}, ("card.json",))
            if card:
                facts.cards[iteration] = card
        elif stage == "train":
            curve = _json_file(
                store, refs.get("loss_curve") or refs.get("candidate") or {}, ("loss_curve.json",)
            )
            if curve is None:
                for ref in refs.values():
                    curve = curve or _json_file(store, ref, ("loss_curve.json",))
            if curve:
                facts.losses[iteration] = curve if isinstance(curve, list) else curve.get("points", [])
        elif stage == "refine":
            for ref in refs.values():
                table = _json_file(store, ref, ("table.json",))
                if table:
                    facts.refine_tables[iteration] = (
                        table if isinstance(table, list) else table.get("table", [])
                    )
    for (iteration, _), counts in sorted(restated.items()):
        total = facts.paraphrases.setdefault(iteration, dict.fromkeys(counts, 0))
        for name, n in counts.items():
            total[name] += n
    started = facts.lineage.get("started_at") or 0.0
    order = ("acquire", "select", "train", "evaluate", "refine")
    for iteration in sorted(created):
        times = created[iteration]
        previous = max(created.get(iteration - 1, {}).values(), default=started)
        seconds = {}
        for stage in order:
            if stage in times:
                seconds[stage] = max(0.0, times[stage] - previous)
                previous = times[stage]
        facts.stage_seconds[iteration] = seconds
    return facts


def paraphrase_counts(meta: dict[str, Any]) -> dict[str, int]:
    """Restated prompts asked, sampled and kept, from an acquisition manifest's stats (empty when the
    shard asked none).

    >>> paraphrase_counts({"stats": {"paraphrases_asked": 8, "paraphrases_sampled": 5, "paraphrases_kept": 3}})
    {'asked': 8, 'sampled': 5, 'kept': 3}
    >>> paraphrase_counts({"stats": {"prompts": 4}}), paraphrase_counts({})
    ({}, {})
    """
    stats = meta.get("stats") or {}
    counts = {k: int(stats.get(f"paraphrases_{k}") or 0) for k in ("asked", "sampled", "kept")}
    return counts if counts["asked"] else {}
