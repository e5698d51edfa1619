"""The selection handler: ``select_command`` in, ``sft.jsonl`` + ``pairs.jsonl`` + ``card.json`` and
``select_result`` out.

The three files are one folder artifact (one manifest): ``sft_set``, ``preference_pairs`` and
``data_card`` of the result all point at it. Built once per attempt (``run_once``); unreadable shards,
a verified mode without a verifier, or missing evaluation sets are answered with ``stage_failure``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from selfimprove.core.bus import Outgoing
from selfimprove.core.runner import Context, Runnable
from selfimprove.core.settings import load
from selfimprove.core.stage import StageInputError, failure, result, run_once, stats
from selfimprove.core.store import ArtifactError
from selfimprove.selection import labels
from selfimprove.selection.filters import row_key
from selfimprove.selection.settings import SelectionSettings
from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import LabelMode, SelectResult

log = logging.getLogger(__name__)
MODES = {LabelMode.LABEL_MODE_VERIFIED: labels.VERIFIED, LabelMode.LABEL_MODE_LABEL_FREE: labels.LABEL_FREE}


def dev_keys(task: Any, rows: list[dict]) -> set:
    """Keys of ``rows`` that fall in the task's dev split, when the task's module says (``split_of``)."""
    split_of = getattr(sys.modules.get(type(task).__module__), "split_of", None)
    if split_of is None:
        return set()
    return {k for k in (row_key(r) for r in rows) if k is not None and split_of(k) == "dev"}


def result_stats(card: dict) -> dict[str, float]:
    """The numbers of ``select_result.stats`` (see docs/data.md)."""
    values: dict[str, Any] = {
        "kept": card["counts"]["sft"],
        "pairs": card["counts"]["pairs"],
        "prompts_in": card["counts"]["prompts_in"],
        "prompts_kept": card["counts"]["prompts_kept"],
        "prompts_rationalized": card["counts"].get("prompts_rationalized", 0),
        "prompts_worked": card["counts"].get("prompts_worked", 0),
        "prompts_steps": card["counts"].get("prompts_steps", 0),
        "diversity": card["diversity"],
        "yield": card["yield"],
        "pseudo_label_precision": card["pseudo_label_precision"],
        "sft_answer_precision": card["sft_answer_precision"],
    }
    values.update({f"dropped_{k}": v for k, v in card["dropped"].items()})
    return {k: v for k, v in values.items() if v is not None}


class Selector:
    def __init__(self, ctx: Context, settings: SelectionSettings) -> None:
        self.ctx, self.settings = ctx, settings
        self._embed = None
        m = ctx.metrics
        self.dropped = m.counter("selection_dropped_total", "Items dropped by a selection filter", ["filter"])
        self.kept = m.counter("selection_kept_total", "SFT items kept")
        self.yield_ = m.gauge("data_yield", "Fraction of prompts that gave training data (last selection)")
        self.diversity = m.gauge("data_diversity", "Mean pairwise embedding distance of the last SFT set")

    def embedder(self):
        if self._embed is None:
            from selfimprove.selection.diversity import load_embedder

            self._embed = load_embedder(self.settings.embedder)
        return self._embed

    def eval_keys(self) -> set:
        from selfimprove.runtime.benchmarks import BenchmarkNotFoundError, decontamination_keys

        try:
            return decontamination_keys(self.settings.benchmarks_dir)
        except BenchmarkNotFoundError as exc:
            if self.settings.require_decontamination:
                raise StageInputError(f"cannot decontaminate: {exc}") from exc
            log.warning("decontamination skipped: %s", exc)
            return set()

    def build(self, env: Envelope) -> tuple[dict[str, bytes], dict[str, Any]]:
        from selfimprove.acquisition.shard import from_jsonl
        from selfimprove.runtime.tasks import load_task
        from selfimprove.selection.params import SelectParams
        from selfimprove.selection.pipeline import select

        cmd = env.select_command
        try:
            mode = MODES[cmd.label_mode]
        except KeyError:
            raise StageInputError(f"select_command needs a label_mode, got {cmd.label_mode}") from None
        try:
            params = SelectParams.from_json(cmd.params_json)
            if not cmd.shards:
                raise StageInputError("select_command lists no shards")
            rows, metas = [], []
            for ref in cmd.shards:
                metas.append(self.ctx.store.manifest(ref).meta)
                rows.extend(from_jsonl(self.ctx.store.read_file(ref, "samples.jsonl")))
            spec = metas[0].get("task", {"name": "arithmetic", "params_json": "{}"})
            task = load_task(spec["name"], json.loads(spec.get("params_json") or "{}"))
            refined = []
            if cmd.refined_targets.uri:
                refined = from_jsonl(self.ctx.store.read_file(cmd.refined_targets, "targets.jsonl"))
        except (ValueError, KeyError, ArtifactError) as exc:
            raise StageInputError(f"{type(exc).__name__}: {exc}") from exc
        if not rows:
            raise StageInputError("the shards hold no prompts")
        if mode == labels.VERIFIED and not any(labels.has_verdict(r) for r in rows):
            raise StageInputError("verified mode needs a task with a verifier; use LABEL_MODE_LABEL_FREE")
        keys = self.eval_keys() | dev_keys(task, rows)
        embed = self.embedder() if params.embed else None
        chosen = select(rows, mode, params, keys, embed, task.extract, refined)
        card = {
            **chosen.card,
            "sources": [r.uri for r in cmd.shards],
            "model_version": metas[0].get("model_version"),
        }
        card["decontamination_keys"] = len(keys)
        values = result_stats(card)
        for name, count in card["dropped"].items():
            self.dropped.labels(name).inc(count)
        self.kept.inc(values["kept"])
        self.yield_.set(values["yield"])
        self.diversity.set(values["diversity"])
        log.info("selection of %s iter %d (%s): %s", env.run_id, env.iteration, mode, values)
        files = {
            "sft.jsonl": "".join(json.dumps(x) + "\n" for x in chosen.sft).encode(),
            "pairs.jsonl": "".join(json.dumps(x) + "\n" for x in chosen.pairs).encode(),
            "card.json": json.dumps(card, indent=2, sort_keys=True).encode(),
        }
        return files, {"label_mode": mode, "stats": values, "model_version": card["model_version"]}

    async def handle(self, env: Envelope) -> list[Outgoing]:
        if env.WhichOneof("payload") != "select_command":
            raise ValueError(f"selection expects select_command, got {env.WhichOneof('payload')}")
        topics, producer = self.ctx.bus.topics, f"selection/{self.ctx.settings.instance}"
        try:
            ref, meta = await run_once(self.ctx.store, env, lambda: self.build(env))
        except StageInputError as exc:
            log.warning("select command %s refused: %s", env.event_id, exc)
            return [failure(topics, env, producer, exc)]
        done = SelectResult(
            sft_set=ref, preference_pairs=ref, data_card=ref, stats=stats(meta.get("stats", {}))
        )
        return [result(topics, env, producer, select_result=done)]


async def setup(ctx: Context) -> list[Runnable]:
    settings = load(SelectionSettings)
    selector = Selector(ctx, settings)
    topic = ctx.bus.topics.command(Stage.STAGE_SELECT)
    consumer = ctx.consumer([topic], selector.handle, max_handler_seconds=settings.max_handler_seconds)
    return [consumer.run]
