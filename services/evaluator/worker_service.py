"""Evaluation workers: run candidate and incumbent greedily on the same held-out dev items (the task's
dev split, never the training stream) and publish paired scores per suite.

The command's suites (``EvalSuite``: a name, a task, a dev size, a split) are scored in order; the
first is the run's task, the others its held-out-phrasing split (the same dev problems in the wordings
the task never trains on; skipped for a task without that split) and its regression suites. Per-item
results of each model version are cached in the store (``evalcache``), so an incumbent is evaluated
once per (version, suite, split, dev seed).

With interim looks (``interim_looks``, ``interim_alpha``: ``evaluation.interim_looks``), the main suite is
evaluated in chunks, up to each look in turn, and stops at the first look where the candidate's
gain is already significant at the interim level (:func:`~selfimprove.evaluator.paired.decided_early`);
the suite then scores the items evaluated so far, and the held-out-phrasing suite as many (the same
problems, as the split gives them in the same order).
"""

from __future__ import annotations

import json
import logging
import time

from selfimprove.core import stage as stages
from selfimprove.core.progress import StageReporter
from selfimprove.core.runner import Context, Runnable
from selfimprove.core.settings import load
from selfimprove.core.store import ArtifactError
from selfimprove.core.topics import Topics
from selfimprove.evaluator import evalcache
from selfimprove.evaluator.paired import chunks, decided_early, suite_score, task_params
from selfimprove.evaluator.refs import to_suite
from selfimprove.evaluator.settings import WorkerSettings
from selfimprove.runtime.tasks.base import HELDOUT_PHRASING
from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import EvaluateResult, EvaluateStats

log = logging.getLogger(__name__)


class Evaluation:
    """The model side: engines by version, dev items by suite, cached outcomes."""

    def __init__(self, store, settings: WorkerSettings, threads: int, cache_dir) -> None:
        from selfimprove.runtime.policy import PolicyCache

        self.store, self.settings = store, settings
        self.policies = PolicyCache(
            store,
            settings.backend,
            keep=2,
            cache_dir=cache_dir,
            threads=threads,
            batch_size=settings.batch_size,
        )

    def outcomes(
        self, model, task, items, suite_key: str, seed: int, max_new_tokens: int, progress=None
    ) -> tuple[dict, bool]:
        """Replies and verdicts of ``model`` on ``items`` (cached by model, suite and items);
        ``progress`` is told how many more items are answered (all at once on a cache hit)."""
        from selfimprove.runtime.engine import GenerationRequest, SamplingParams
        from selfimprove.runtime.policy import version_key

        prefix = evalcache.cache_prefix(version_key(model), suite_key, seed, len(items))
        cached = evalcache.get(self.store, prefix)
        if cached is not None and cached.get("ids") == [it.id for it in items]:
            if progress is not None:
                progress(len(items))
            return cached, True
        engine = self.policies.engine(model)
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
        results = engine.generate(GenerationRequest([it.prompt for it in items], params, on_done=progress))
        replies = [r.samples[0].text for r in results]
        out = {
            "ids": [it.id for it in items],
            "replies": replies,
            "ok": [bool(task.verify(it, reply)) for it, reply in zip(items, replies, strict=True)],
            "tokens": sum(r.samples[0].tokens for r in results),
        }
        evalcache.put(self.store, prefix, out)
        return out, False

    def run(self, cmd, report=None) -> tuple[dict, dict]:
        """Every suite of ``cmd``: (files, meta) for ``run_once``; ``report`` (a ``StageReporter``)
        counts the problems answered, each model's answer to an item one."""
        from selfimprove.runtime.tasks import load_task

        if not cmd.suites:
            raise stages.StageInputError("evaluate_command lists no suites")
        suites, lines, tokens, hits = [], [], 0, 0
        start = time.perf_counter()
        max_new = cmd.max_new_tokens or self.settings.max_new_tokens
        planned = []
        for suite in cmd.suites:
            spec = suite.task
            params = task_params(spec.params_json)
            name = suite.name or spec.name
            if suite.dev_size < 1:
                raise stages.StageInputError(
                    f"suite {name}: dev_size must be at least 1, got {suite.dev_size}"
                )
            task = load_task(spec.name, params)
            split = suite.split or "dev"
            if split not in task.splits:  # a task without held-out phrasings (a data file)
                log.info("suite %s skipped: task %s has no %s split", name, spec.name, split)
                continue
            planned.append((suite, spec, params, name, task, split))
        if report is not None:
            report.update(0, 2 * sum(p[0].dev_size for p in planned))
        settled = None  # the main suite's items when it settled at an interim look
        for index, (suite, spec, params, name, task, split) in enumerate(planned):
            items = task.items(split, suite.dev_size, seed=cmd.seed)
            if split == HELDOUT_PHRASING and settled is not None:
                items = items[:settled]  # the same problems the main suite scored, in held-out wordings
            suite_key = json.dumps(
                {"task": spec.name, "params": params, "max_new_tokens": max_new, "split": split},
                sort_keys=True,
            )
            inc, cand = {"replies": [], "ok": []}, {"replies": [], "ok": []}
            looks = list(cmd.interim_looks) if index == 0 else []
            alpha = cmd.interim_alpha
            for lo, hi in chunks(len(items), looks):
                # a chunk short of every item is cached under its own range (an incumbent's chunks
                # are reused by the next candidate with the same looks)
                key = suite_key if (lo, hi) == (0, len(items)) else f"{suite_key}#{lo}-{hi}"
                part = items[lo:hi]
                for model, acc in ((cmd.incumbent, inc), (cmd.candidate, cand)):
                    out, hit = self.outcomes(
                        model, task, part, key, cmd.seed, max_new, report.advance if report else None
                    )
                    hits += hit
                    tokens += 0 if hit else out["tokens"]
                    acc["replies"] += out["replies"]
                    acc["ok"] += out["ok"]
                if hi < len(items) and decided_early(inc["ok"], cand["ok"], alpha):
                    log.info("%s settled at an interim look: %d of %d items", name, hi, len(items))
                    items = items[:hi]
                    settled = hi
                    break
            suites.append({**suite_score(name, inc["ok"], cand["ok"]), "split": suite.split})
            for i, it in enumerate(items):
                lines.append(
                    {
                        "suite": name,
                        "id": it.id,
                        "prompt": it.prompt,
                        "answer": it.answer,
                        "incumbent_reply": inc["replies"][i],
                        "incumbent_ok": inc["ok"][i],
                        "candidate_reply": cand["replies"][i],
                        "candidate_ok": cand["ok"][i],
                    }
                )
        details = "\n".join(json.dumps(x) for x in lines).encode() + b"\n"
        stats = EvaluateStats(
            tokens=tokens, cache_hits=hits, seconds=time.perf_counter() - start, items=len(lines)
        )
        return {"details.jsonl": details, "suites.json": json.dumps(suites).encode()}, {
            "suites": suites,
            "stats": stages.stats_dict(stats),
        }


async def setup(ctx: Context) -> list[Runnable]:
    settings = load(WorkerSettings)
    evaluation = Evaluation(ctx.store, settings, ctx.settings.threads, ctx.settings.cache_dir)
    topics: Topics = ctx.bus.topics
    producer = f"evaluator-worker/{ctx.settings.instance}"

    async def handle(env: Envelope):
        if env.WhichOneof("payload") != "evaluate_command":
            raise ValueError(f"evaluation workers take evaluate_command, got {env.WhichOneof('payload')!r}")
        cmd = env.evaluate_command
        try:
            report = StageReporter(ctx.bus, env, producer, unit="problems")
            ref, meta = await stages.run_once(ctx.store, env, lambda: evaluation.run(cmd, report))
        except (stages.StageInputError, ArtifactError, FileNotFoundError, ValueError) as exc:
            log.warning("evaluation failed: %s", exc)
            return [stages.failure(topics, env, producer, exc)]
        result = EvaluateResult(
            suites=[to_suite(s) for s in meta["suites"]],
            details=ref,
            stats=stages.parse_stats(meta["stats"], EvaluateStats()),
        )
        return [stages.result(topics, env, producer, evaluate_result=result)]

    consumer = ctx.consumer(
        [topics.command(Stage.STAGE_EVALUATE)], handle, max_handler_seconds=settings.max_handler_seconds
    )
    return [consumer.run]
