"""The model-facing part of a shard: self-instruct prompts, K samples per prompt, self-judge scores,
restated prompts (:func:`paraphrase`).

Everything here runs in a worker thread (it is CPU-bound); the rows are built by :mod:`.shard`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from selfimprove.acquisition import paraphrases, prompts
from selfimprove.acquisition.selfjudge import judge_prompt, judge_score
from selfimprove.acquisition.shard import make_row
from selfimprove.contracts.samples import BY_MAJORITY, BY_VERIFIER, Row
from selfimprove.contracts.voting import majority
from selfimprove.runtime.engine import Engine, GenerationRequest, SamplingParams
from selfimprove.runtime.tasks.base import Item, Task
from selfimprove.runtime.tasks.seedset import SeedExample


@dataclass(frozen=True)
class ShardJob:
    """What one shard asks for, with defaults already applied; the flags after ``judge_max_new_tokens``
    are the command's task tactics (docs/tasks.md)."""

    items: Sequence[Item]
    sampling: SamplingParams
    self_judge: bool = False
    judge_max_new_tokens: int = 4
    rationalize: bool = False
    worked: bool = False
    worked_by_majority: bool = False  # label-free: sub-answers by the samples' majority, never the verifier
    rationalize_steps: bool = False  # verified: a sub-question no sample answered is asked with its hint
    check_labels: bool = False  # label-free: each majority answer checked by the task's check question


def self_instruct(
    engine: Engine, seed_set: Sequence[SeedExample], n: int, seed: int, max_new_tokens: int, shots: int = 3
) -> list[Item]:
    """``n`` attempts at new problems written by the model from the seed set (empty replies dropped;
    repeats and evaluation problems are screened after, :func:`selfimprove.acquisition.instruct.screen`)."""
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
    """A worked reply written from the model's answers to its two sub-questions (``steps``), chosen
    by ``pick``: ``"verifier"`` (verified runs) or ``"majority"`` (label-free runs)."""

    text: str
    tokens: int
    finish_reason: str
    steps: tuple[str, ...]
    pick: str = BY_VERIFIER


# a sub-question as an item, the model's samples for it, and its hinted samples (``rationalize_steps``)
Step = tuple[Item, Sequence[Any], Sequence[Any]]


def _pick(task: Task, item: Item, samples: Sequence[Any], by_majority: bool = False) -> Any | None:
    """The sample a worked reply is written from: the first the verifier accepts, else the first
    with an answer (the reply is then wrong, and selection does not keep it), else ``None``. With
    ``by_majority`` (label-free) the verifier never chooses: the first sample giving the samples'
    majority answer (any share), ``None`` when there is none (no answer, or a tie).
    """
    answered = [(s, a) for s in samples if (a := task.extract(s.text)) is not None]
    if by_majority:
        top = majority([a for _, a in answered])
        return next((s for s, a in answered if a == top), None)
    return next((s for s, _ in answered if task.verify(item, s.text)), answered[0][0] if answered else None)


def work_out(
    engine: Engine,
    task: Task,
    items: Sequence[Item],
    sampling: SamplingParams,
    by_majority: bool = False,
    hint: bool = False,
) -> tuple[list[list[Worked]], list[Step]]:
    """One worked reply per item the task has a plan for, and the sub-questions asked on the way.

    Each sub-question is asked as a plain prompt with ``sampling`` (``n`` samples): the first step
    ("What is 61 - 20?"), then the second on the model's chosen first answer ("What is 41 - 3?"),
    choosing a sample the verifier accepts when there is one, or with ``by_majority`` (label-free) the
    samples' majority answer, so that nothing here reads the truth; the sub-questions' items are then
    marked ``meta["pick"] = "majority"``. The reply is written from the model's own answers, right or
    wrong: the verifier (verified mode) or the label (label-free) decides what is kept.
    With ``hint`` (verified runs only: the hint is the sub-question's reference answer), a
    sub-question none of whose samples is right is asked again with its answer as a hint
    (:func:`rationalize`), and a verified hinted answer is chosen, so a step the model cannot yet do
    on its own (a borrow, a carry) still gets a worked reply, written from the model's hinted answer.
    An item whose first answer has no number, or a negative one, gets no reply. The sub-questions
    come back as ``(item, samples, hinted)`` steps (:meth:`Task.step_item`), for the shard to store as rows.
    """
    if hint and by_majority:
        raise ValueError(
            "hinted sub-questions read the reference answer, so a label-free run cannot ask them"
        )
    plans = [(i, p) for i, item in enumerate(items) if (p := task.worked_plan(item)) is not None]
    pick = BY_MAJORITY if by_majority else BY_VERIFIER

    def step_item(parent: Item, expression: str, n: int) -> Item:
        sub = task.step_item(parent, expression, n)
        return replace(sub, meta={**sub.meta, "pick": pick}) if by_majority else sub

    def ask(subs: Sequence[Item]) -> list[Step]:
        if not subs:
            return []
        samples = [r.samples for r in engine.generate(GenerationRequest([s.prompt for s in subs], sampling))]
        hinted = rationalize(engine, task, subs, samples, sampling) if hint else [[] for _ in subs]
        return list(zip(subs, samples, hinted, strict=True))

    firsts = ask([step_item(items[i], p.first_expression(), 1) for i, p in plans])
    pending = []
    for (i, p), (first, samples, hinted) in zip(plans, firsts, strict=True):
        chosen = _pick(task, first, [*samples, *hinted], by_majority)
        if chosen is not None and (mid := int(task.extract(chosen.text) or 0)) >= 0:
            pending.append((i, p, mid, chosen, step_item(items[i], p.second_expression(mid), 2)))
    seconds = ask([s for *_, s in pending])
    out: list[list[Worked]] = [[] for _ in items]
    for (i, p, mid, first, _), (second_item, samples, hinted) in zip(pending, seconds, strict=True):
        second = _pick(task, second_item, [*samples, *hinted], by_majority)
        if second is not None:
            text = p.reply(mid, int(task.extract(second.text) or 0))
            out[i] = [Worked(text, first.tokens + second.tokens, "stop", (first.text, second.text), pick)]
    return out, [*firsts, *seconds]


def check_labels(
    engine: Engine, task: Task, items: Sequence[Item], labels: Sequence[str | None], max_new_tokens: int
) -> list[dict[str, Any] | None]:
    """Each item's label (its row's majority answer) checked by the task's check question
    (:meth:`Task.check_item`), asked greedily: ``{"label", "prompt", "expects", "text", "tokens", "extracted", "passed"}``, or
    ``None`` for an item with no majority or no check question. ``passed`` compares the reply's
    extracted answer with the one the label predicts, and nothing else: the task's verifier is never
    asked (the arithmetic one also judges every equation a reply states, which would tell a wrong
    label from a right one), so the check is the model's consistency alone.
    """
    out: list[dict[str, Any] | None] = [None] * len(items)
    asked = []
    for i, (item, label) in enumerate(zip(items, labels, strict=True)):
        if label is not None and (check := task.check_item(item, label)) is not None:
            asked.append((i, label, check))
    if not asked:
        return out
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    results = engine.generate(GenerationRequest([c.prompt for *_, c in asked], greedy))
    for (i, label, check), r in zip(asked, results, strict=True):
        reply = r.samples[0]
        out[i] = {
            "label": label,
            "prompt": check.prompt,
            "expects": check.answer,
            "text": reply.text,
            "tokens": reply.tokens,
            "extracted": task.extract(reply.text),
            "passed": task.extract(reply.text) == check.answer,
        }
    return out


def run_shard(
    engine: Engine, task: Task, job: ShardJob, progress: Callable[[int], None] | None = None
) -> tuple[list[Row], float, float]:
    """Rows of the shard, seconds spent sampling the answers, and seconds in total; ``progress`` is
    told how many more prompts have all their samples as the engine finishes them."""
    started = time.perf_counter()
    results = engine.generate(
        GenerationRequest([i.prompt for i in job.items], job.sampling, on_done=progress)
    )
    samples: list[Sequence[Any]] = [r.samples for r in results]
    worked: list[list[Worked]] = [[] for _ in job.items]
    steps: list[Step] = []
    if job.worked:
        worked, steps = work_out(
            engine, task, job.items, job.sampling, job.worked_by_majority, job.rationalize_steps
        )
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
    if job.check_labels:
        checks = check_labels(
            engine, task, job.items, [r["majority"] for r in rows], job.sampling.max_new_tokens
        )
        for row, check in zip(rows, checks, strict=True):
            row["check"] = check
    rows += [make_row(item, ss, task.extract, task.verify, hinted=hs) for item, ss, hs in steps]
    return rows, sampling_seconds, time.perf_counter() - started


@dataclass(frozen=True)
class ParaphraseJob:
    """What a shard's paraphrasing asks for (the command's ``AcquireParaphrase``); ``rule`` is the
    evaluation sets' guard a restatement must pass (:meth:`~selfimprove.runtime.evalguard.EvalGuard.rule`)."""

    per_prompt: int
    max_new_tokens: int = 64
    by_majority: bool = False
    rule: paraphrases.Rule | None = None


def paraphrase(
    engine: Engine,
    task: Task,
    items: Sequence[Item],
    rows: Sequence[Row],
    job: ParaphraseJob,
    sampling: SamplingParams,
) -> tuple[list[Row], paraphrases.Paraphrased]:
    """Rows of the restated prompts of ``items`` (whose rows are ``rows``) that kept their meaning,
    and the counts (:mod:`selfimprove.acquisition.paraphrases`).

    ``per_prompt`` restatements are sampled per item in one batch (temperature 0.9, for variety);
    the usable ones are answered in a second batch with the shard's ``sampling``, like any prompt.
    An item none of whose restatements could be kept gets none asked: without a reference answer in
    a verified run, without a majority answer in a label-free one.
    """
    by_id = {r["id"]: r for r in rows}
    sources = [
        (item, answer)
        for item in items
        if (answer := paraphrases.answer_for(item, by_id[item.id], job.by_majority)) is not None
    ]
    if job.per_prompt < 1 or not sources:
        return [], paraphrases.Paraphrased()
    seed = None if sampling.seed is None else sampling.seed + 1
    restate = SamplingParams(
        n=job.per_prompt, temperature=0.9, top_p=0.95, max_new_tokens=job.max_new_tokens, seed=seed
    )
    replies = engine.generate(
        GenerationRequest([paraphrases.restate_prompt(item.prompt) for item, _ in sources], restate)
    )
    tokens = sum(s.tokens for r in replies for s in r.samples)
    refused: Counter[str] = Counter()
    asked: list[tuple[Item, Item]] = []
    for (item, answer), reply in zip(sources, replies, strict=True):
        texts, why = paraphrases.screen([s.text for s in reply.samples], item.prompt, answer, job.rule)
        # the held-out wordings stay untrained, whoever writes them (the transfer measurement)
        held = [text for text in texts if task.heldout_wording(text)]
        if held:
            why["heldout_wording"] += len(held)
            texts = [text for text in texts if text not in held]
        refused.update(why)
        asked += [(item, paraphrases.restated(item, t, k, job.by_majority)) for k, t in enumerate(texts, 1)]
    answers = engine.generate(GenerationRequest([p.prompt for _, p in asked], sampling)) if asked else []
    kept: list[Row] = []
    for (item, restated), result in zip(asked, answers, strict=True):
        row = make_row(restated, result.samples, task.extract, task.verify)
        row["paraphrase_of"] = item.id
        if paraphrases.survived(by_id[item.id], row, job.by_majority):
            kept.append(row)
        else:
            tokens += sum(s.tokens for s in result.samples)
    counts = paraphrases.Paraphrased(
        asked=len(sources) * job.per_prompt,
        sampled=len(asked),
        kept=len(kept),
        tokens=tokens,
        refused=dict(refused),
    )
    return kept, counts
