"""The model-facing part of a shard: self-instruct prompts, K samples per prompt, self-judge scores.

Everything here runs in a worker thread (it is CPU-bound); the rows are built by :mod:`.shard`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from selfimprove.acquisition import prompts
from selfimprove.acquisition.scoring import judge_prompt, judge_score
from selfimprove.acquisition.shard import Row, make_row
from selfimprove.runtime.engine import Engine, GenerationRequest, SamplingParams
from selfimprove.runtime.tasks.base import Item, Task
from selfimprove.runtime.tasks.seedset import SeedExample


@dataclass(frozen=True)
class ShardJob:
    """What one shard asks for, with defaults already applied."""

    items: Sequence[Item]
    sampling: SamplingParams
    self_judge: bool = False
    judge_max_new_tokens: int = 4
    rationalize: bool = False
    worked: bool = False


def self_instruct(
    engine: Engine, seed_set: Sequence[SeedExample], n: int, seed: int, max_new_tokens: int, shots: int = 3
) -> list[Item]:
    """``n`` attempts at new problems written by the model from the seed set (repeats dropped)."""
    demos = prompts.demos_for(seed_set, n, shots, seed)
    request = GenerationRequest(
        [prompts.instruct_prompt(d) for d in demos],
        SamplingParams(n=1, temperature=0.9, top_p=0.95, max_new_tokens=max_new_tokens, seed=seed),
    )
    results = engine.generate(request)
    return prompts.instruct_items([r.samples[0].text for r in results], demos)


def judge_all(
    engine: Engine, items: Sequence[Item], texts: Sequence[Sequence[str]], max_new_tokens: int
) -> list[list[float]]:
    """The model's P(correct) for each sample, from a greedy Yes/No verdict; one call per distinct reply."""
    pairs = sorted({(i, t) for i, ts in enumerate(texts) for t in ts})
    request = GenerationRequest(
        [judge_prompt(items[i].prompt, t) for i, t in pairs],
        SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens, logprobs=True),
    )
    results = engine.generate(request) if pairs else []
    score = {
        p: judge_score(r.samples[0].text, r.samples[0].logprobs) for p, r in zip(pairs, results, strict=True)
    }
    return [[score[(i, t)] for t in ts] for i, ts in enumerate(texts)]


def rationalize(
    engine: Engine,
    task: Task,
    items: Sequence[Item],
    samples: Sequence[Sequence[Any]],
    sampling: SamplingParams,
) -> list[list[Any]]:
    """Hinted samples for each item with a reference answer and no verified sample (else none).

    STaR's rationalization: the model answers again with the answer in its prompt; the replies are
    verified like any other and, if kept, trained on under the plain prompt.
    """
    todo = [
        i
        for i, (item, ss) in enumerate(zip(items, samples, strict=True))
        if item.answer is not None and not any(task.verify(item, s.text) for s in ss)
    ]
    hinted: list[list[Any]] = [[] for _ in items]
    if todo:
        request = GenerationRequest([prompts.hint_prompt(items[i]) for i in todo], sampling)
        for i, r in zip(todo, engine.generate(request), strict=True):
            hinted[i] = list(r.samples)
    return hinted


@dataclass(frozen=True)
class Worked:
    """A worked reply written from the model's answers to its two sub-questions (``steps``)."""

    text: str
    tokens: int
    finish_reason: str
    steps: tuple[str, ...]


def work_out(
    engine: Engine, task: Task, items: Sequence[Item], sampling: SamplingParams
) -> list[list[Worked]]:
    """One worked reply per item the task has a plan for (else none), from greedy answers to the
    plan's sub-questions asked as plain prompts; an item whose first answer has no number gets none.

    The reply is written from the model's own answers, right or wrong: the verifier (final answer
    and every step) decides what is kept.
    """
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=sampling.max_new_tokens, stop=sampling.stop)
    plans = [(i, p) for i, item in enumerate(items) if (p := task.worked_plan(item)) is not None]
    firsts = engine.generate(GenerationRequest([p.first_prompt() for _, p in plans], greedy)) if plans else []
    pending = []
    for (i, p), r in zip(plans, firsts, strict=True):
        mid = task.extract(r.samples[0].text)
        if mid is not None:
            pending.append((i, p, int(mid), r.samples[0]))
    seconds = (
        engine.generate(GenerationRequest([p.second_prompt(m) for _, p, m, _ in pending], greedy))
        if pending
        else []
    )
    out: list[list[Worked]] = [[] for _ in items]
    for (i, p, mid, first), r in zip(pending, seconds, strict=True):
        second = r.samples[0]
        d = task.extract(second.text)
        if d is not None:
            text = p.reply(mid, int(d))
            out[i] = [Worked(text, first.tokens + second.tokens, "stop", (first.text, second.text))]
    return out


def run_shard(engine: Engine, task: Task, job: ShardJob) -> tuple[list[Row], float, float]:
    """Rows of the shard, seconds spent sampling the answers, and seconds in total."""
    started = time.perf_counter()
    results = engine.generate(GenerationRequest([i.prompt for i in job.items], job.sampling))
    samples = [r.samples for r in results]
    worked: list[list[Worked]] = [[] for _ in job.items]
    if job.worked:
        worked = work_out(engine, task, job.items, job.sampling)
    hinted: list[list[Any]] = [[] for _ in job.items]
    if job.rationalize:  # a prompt that a worked reply answered needs no hint
        answered = [[*ss, *ws] for ss, ws in zip(samples, worked, strict=True)]
        hinted = rationalize(engine, task, job.items, answered, job.sampling)
    sampling_seconds = time.perf_counter() - started
    judges: list[list[float]] | list[None] = [None] * len(job.items)
    if job.self_judge:
        texts = [[s.text for s in ss] for ss in samples]
        judges = judge_all(engine, job.items, texts, job.judge_max_new_tokens)
    rows = [
        make_row(item, ss, task.extract, task.verify, j, h, w)
        for item, ss, j, h, w in zip(job.items, samples, judges, hinted, worked, strict=True)
    ]
    return rows, sampling_seconds, time.perf_counter() - started
