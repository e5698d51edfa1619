"""The selection handler: ``select_command`` in, ``sft.jsonl`` + ``pairs.jsonl`` + ``card.json`` and
``select_result`` out.

The three files are one folder artifact (one manifest), the result's ``dataset``. Built once per attempt (``run_once``); unreadable shards,
a verified mode without a verifier, or a declared evaluation set that cannot be read are answered
with ``stage_failure``. Training rows are decontaminated against exactly the evaluation sets the
command declares (``test_sets_json``, :mod:`selfimprove.runtime.evalguard`); GPT-3 files are read
from ``benchmarks_dir`` only when a declared set is a GPT-3 one.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from selfimprove.core.outgoing import Outgoing
from selfimprove.core.runner import Context, Runnable
from selfimprove.core.settings import SettingsError, load
from selfimprove.core.stage import StageInputError, failure, parse_stats, result, run_once, stats_dict
from selfimprove.core.store import ArtifactError
from selfimprove.selection import labels, selfjudge
from selfimprove.selection.filters import row_key
from selfimprove.selection.settings import SelectionSettings
from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import FilterDrops, LabelMode, SelectResult, SelectStats

log = logging.getLogger(__name__)
MODES = {LabelMode.LABEL_MODE_VERIFIED: labels.VERIFIED, LabelMode.LABEL_MODE_LABEL_FREE: labels.LABEL_FREE}


def dev_keys(task: Any, rows: list[dict]) -> set:
    """Keys of ``rows`` that fall in the task's dev split, when the task's module says (``split_of``)."""
    split_of = getattr(sys.modules.get(type(task).__module__), "split_of", None)
    if split_of is None:
        return set()
    return {k for k in (row_key(r) for r in rows) if k is not None and split_of(k) == "dev"}


def result_stats(card: dict) -> SelectStats:
    """The :class:`SelectStats` of a data card (see docs/data.md).

    >>> card = {"counts": {"sft": 3, "pairs": 1, "prompts_in": 4, "prompts_kept": 2}, "diversity": 0.5,
    ...         "yield": 0.5, "pseudo_label_precision": None, "sft_answer_precision": 1.0,
    ...         "dropped": {"format": 2, "self_judge_prompt": 1}, "drop_units": {"format": "responses"}}
    >>> s = result_stats(card)
    >>> s.kept, s.HasField("pseudo_label_precision"), [(d.filter, d.count, d.unit) for d in s.dropped][0]
    (3, False, ('format', 2, 'responses'))
    >>> s.self_judge_prompts_dropped, s.self_judge_responses_dropped
    (1, 0)
    """
    counts = card["counts"]
    out = SelectStats(
        kept=counts["sft"],
        pairs=counts["pairs"],
        prompts_in=counts["prompts_in"],
        prompts_kept=counts["prompts_kept"],
        prompts_rationalized=counts.get("prompts_rationalized", 0),
        prompts_worked=counts.get("prompts_worked", 0),
        prompts_steps=counts.get("prompts_steps", 0),
        paraphrases_in=counts.get("paraphrases_in", 0),
        paraphrases_kept=counts.get("paraphrases_kept", 0),
        self_judge_prompts_dropped=card["dropped"].get("self_judge_prompt", 0),
        self_judge_responses_dropped=card["dropped"].get("self_judge", 0),
        diversity=card["diversity"],
        yield_rate=card["yield"],
        dropped=[
            FilterDrops(filter=name, count=n, unit=card["drop_units"].get(name, ""))
            for name, n in card["dropped"].items()
        ],
    )
    if card["pseudo_label_precision"] is not None:
        out.pseudo_label_precision = card["pseudo_label_precision"]
    if card["sft_answer_precision"] is not None:
        out.sft_answer_precision = card["sft_answer_precision"]
    return out


class Selector:
    def __init__(self, ctx: Context, settings: SelectionSettings) -> None:
        self.ctx, self.settings = ctx, settings
        self._embed = None
        self.series = r = ctx.metrics.per_run  # every series labelled with the command's run_id
        self.dropped = r.counter("selection_dropped_total", "Items dropped by a selection filter", ["filter"])
        self.kept = r.counter("selection_kept_total", "SFT items kept")
        self.yield_ = r.gauge("data_yield", "Fraction of prompts that gave training data (last selection)")
        self.diversity = r.gauge("data_diversity", "Mean pairwise embedding distance of the last SFT set")

    def embedder(self):
        if self._embed is None:
            from selfimprove.selection.diversity import load_embedder

            self._embed = load_embedder(self.settings.embedder)
        return self._embed

    def guard(self, sets_json: str):
        """What the command's evaluation sets forbid (:class:`~selfimprove.runtime.evalguard.EvalGuard`)."""
        from selfimprove.runtime.evalguard import EvalGuard, TestSetError, guard_for

        try:
            return guard_for(sets_json, self.settings.benchmarks_dir)
        except TestSetError as exc:
            if self.settings.require_decontamination:
                raise StageInputError(f"cannot decontaminate: {exc}") from exc
            log.warning("decontamination skipped: %s", exc)
            return EvalGuard()

    def build(self, env: Envelope) -> tuple[dict[str, bytes], dict[str, Any]]:
        from selfimprove.contracts.params import SelectParams
        from selfimprove.contracts.samples import from_jsonl
        from selfimprove.runtime.tasks import load_task
        from selfimprove.selection.pipeline import select

        cmd = env.select_command
        try:
            mode = MODES[cmd.label_mode]
        except KeyError:
            raise StageInputError(f"select_command needs a label_mode, got {cmd.label_mode}") from None
        try:
            params = SelectParams.model_validate_json(cmd.params_json or "{}")
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
        judging = params.self_judge.mode != "off" and mode == labels.LABEL_FREE
        if judging and not selfjudge.has_judgements(rows):
            raise StageInputError(
                f"params self_judge.mode {params.self_judge.mode} needs the model's judgements, and no "
                "sample of the shards has one: turn on acquisition.self_judge"
            )
        guard = self.guard(cmd.test_sets_json)
        keys = guard.keys | dev_keys(task, rows)
        embed = self.embedder() if params.embed else None
        chosen = select(rows, mode, params, keys, embed, task.extract, refined, guard.index.contaminated)
        card = {
            **chosen.card,
            "sources": [r.uri for r in cmd.shards],
            "model_version": metas[0].get("model_version"),
        }
        card["decontamination_keys"] = len(keys)
        card["decontamination_sets"] = list(guard.labels)
        figures = result_stats(card)
        run = env.run_id
        for drop in figures.dropped:
            self.series.labels(self.dropped, run, drop.filter).inc(drop.count)
        self.series.labels(self.kept, run).inc(figures.kept)
        self.series.labels(self.yield_, run).set(figures.yield_rate)
        self.series.labels(self.diversity, run).set(figures.diversity)
        values = stats_dict(figures)
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
        done = SelectResult(dataset=ref, stats=parse_stats(meta.get("stats"), SelectStats()))
        return [result(topics, env, producer, select_result=done)]


def check_benchmarks(settings: SelectionSettings) -> None:
    """Refuse to start when ``benchmarks_dir`` is set to a folder that does not exist (a typo would
    otherwise fail the first run that declares a GPT-3 set). An unset folder needs no files: runs that
    declare no GPT-3 set read none, and a run whose declared set is missing gets a ``stage_failure``
    naming the set and file."""
    folder = settings.benchmarks_dir
    if folder is not None and not folder.is_dir():
        raise SettingsError(
            f"SELFIMPROVE_SELECTION_BENCHMARKS_DIR: {folder} is not a folder (it is where the GPT-3 sets a "
            "run declares in evaluation.test_sets are read; leave it unset for the default)"
        )


async def setup(ctx: Context) -> list[Runnable]:
    settings = load(SelectionSettings)
    check_benchmarks(settings)
    selector = Selector(ctx, settings)
    topic = ctx.bus.topics.command(Stage.STAGE_SELECT)
    consumer = ctx.consumer([topic], selector.handle, max_handler_seconds=settings.max_handler_seconds)
    return [consumer.run]
