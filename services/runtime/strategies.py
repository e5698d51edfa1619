"""Inference-time strategies: small compositions of engine calls that turn prompts into answers.

A strategy is named by a spec ``name@k``: ``greedy``, ``self_consistency@k`` (majority vote of the
extracted answers of ``k`` samples), ``best_of_n@n`` (the sample the model itself judges best),
``best_of_n_verifier@n`` (the sample the task verifier accepts; data generation only, never served),
``self_refine@r`` (draft, then ``r`` rounds of critique and revision) and ``prompt_ensemble@k``
(majority vote of ``k`` greedy replies, each under a different system prompt; the first is the
prompt as given, so a tie keeps the greedy answer). Every strategy sends all
prompts to the engine at once per phase (the engine batches; ``n`` samples of a prompt are one
request), and returns one :class:`Answer` per prompt plus the cost. ``progress``, when given, is told
how many more prompts are answered as they are (see :class:`Ticker`).

    outcome = run(engine, "self_consistency@5", ["What is 48 + 27?"], task.extract)
    outcome.answers[0].answer, outcome.tokens, outcome.seconds
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from selfimprove.runtime.engine import (
    Engine,
    GenerationRequest,
    Prompt,
    Sample,
    SamplingParams,
    to_messages,
)

Extract = Callable[[str], str | None]
Verify = Callable[[str], bool | None]  # one per prompt: does this reply answer it correctly?
Progress = Callable[[int], None]  # told how many more problems are done
KINDS = ("greedy", "self_consistency", "best_of_n", "best_of_n_verifier", "self_refine", "prompt_ensemble")
VERIFIER_KINDS = frozenset({"best_of_n_verifier"})
JUDGE_PROMPT = (
    "Question: {question}\nProposed answer: {answer}\n"
    "Is the proposed answer correct? Reply with Yes or No only."
)
CRITIQUE_PROMPT = "Check your answer above step by step. Is it correct? Point out any mistake."
REVISE_PROMPT = "Using your check, give your final answer to the original question."
# prompt_ensemble's voters after the first (the prompt as given): generic, about no task in particular
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a careful assistant. Answer precisely.",
    "You are an expert. Give the correct answer.",
    "Answer the question accurately and briefly.",
    "You are a knowledgeable and reliable assistant.",
    "Think carefully, then answer.",
    "You are a concise assistant.",
)


@dataclass(frozen=True)
class Spec:
    """A parsed strategy spec."""

    kind: str
    k: int = 1

    @property
    def name(self) -> str:
        return self.kind if self.kind == "greedy" else f"{self.kind}@{self.k}"

    @property
    def uses_verifier(self) -> bool:
        return self.kind in VERIFIER_KINDS


@dataclass(frozen=True)
class Settings:
    """Sampling settings every strategy shares (T = 0.7, top-p 0.95 work for SmolLM2)."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 128
    seed: int | None = 0


@dataclass(frozen=True)
class Answer:
    text: str
    answer: str | None
    tokens: int  # generated tokens this prompt cost, over every call


@dataclass(frozen=True)
class Outcome:
    strategy: str
    answers: tuple[Answer, ...]
    tokens: int
    seconds: float


def parse(spec: str, serving: bool = False) -> Spec:
    """Parse ``name@k``; with ``serving``, refuse strategies that need a verifier.

    >>> parse("self_consistency@5")
    Spec(kind='self_consistency', k=5)
    >>> parse("greedy").name, parse("self_refine").k
    ('greedy', 1)
    >>> parse("best_of_n_verifier@4", serving=True)
    Traceback (most recent call last):
    ...
    ValueError: strategy 'best_of_n_verifier@4' uses the task verifier: data generation only, never served
    """
    m = re.fullmatch(r"([a-z_]+)(?:@(\d+))?", spec.strip())
    if not m or m.group(1) not in KINDS:
        raise ValueError(
            f"unknown strategy {spec!r}: use one of {', '.join(KINDS)}, with @k where it takes one"
        )
    kind, k = m.group(1), int(m.group(2) or 1)
    if k < 1 or (kind == "greedy" and k != 1):
        raise ValueError(f"strategy {spec!r}: k must be >= 1 (and greedy takes none)")
    if kind == "prompt_ensemble" and k > len(SYSTEM_PROMPTS) + 1:
        raise ValueError(
            f"strategy {spec!r}: k is at most {len(SYSTEM_PROMPTS) + 1} (one voter per system prompt)"
        )
    parsed = Spec(kind, k)
    if serving and parsed.uses_verifier:
        raise ValueError(f"strategy {spec!r} uses the task verifier: data generation only, never served")
    return parsed


def majority(answers: Sequence[str | None]) -> int:
    """Index of the first sample whose answer is the most common one (``None`` never wins; 0 when
    no sample has an answer).

    >>> majority(["3", "5", "5", None])
    1
    >>> majority([None, "7", "8"]), majority([None, None])
    (1, 0)
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 0
    top = max(counts.values())
    return next(i for i, a in enumerate(answers) if a is not None and counts[a] == top)


def judge_score(token_text: str, logprob: float | None) -> float:
    """P("Yes") from a one-token greedy verdict and its log-probability (0.5 when it is neither).

    >>> round(judge_score(" Yes", math.log(0.8)), 2), round(judge_score("No", math.log(0.9)), 2)
    (0.8, 0.1)
    >>> judge_score("Maybe", -0.1)
    0.5
    """
    p = math.exp(logprob) if logprob is not None else 1.0
    word = token_text.strip().lower()
    if word.startswith("yes"):
        return p
    if word.startswith("no"):
        return 1 - p
    return 0.5


class Ticker:
    """Problems done, counted from engine work: answering one problem costs ``per`` prompts over all
    of the strategy's engine calls (``1 + n`` for best-of-n judged by the model: n samples, n
    verdicts). Engines report prompts as they finish (``GenerationRequest.on_done``); what one did
    not report is counted when its call returns. Without ``progress`` it counts nothing.

    >>> told = []
    >>> t = Ticker(told.append, per=3)
    >>> t.add(2); t.add(2); t.add(5)
    >>> told, sum(told)
    ([1, 2], 3)
    """

    def __init__(self, progress: Progress | None = None, per: int = 1) -> None:
        self.progress, self.per = progress, per
        self.units = self.told = 0

    def add(self, units: int) -> None:
        if self.progress is None or units <= 0:
            return
        self.units += units
        whole = self.units // self.per
        if whole > self.told:
            self.progress(whole - self.told)
            self.told = whole

    def generate(self, engine: Engine, prompts: Sequence[Prompt], params: SamplingParams):
        """``engine.generate`` with its finished prompts counted."""
        if self.progress is None:
            return engine.generate(GenerationRequest(list(prompts), params))
        seen = [0]

        def on_done(k: int) -> None:
            seen[0] += k
            self.add(k)

        results = engine.generate(GenerationRequest(list(prompts), params, on_done=on_done))
        self.add(len(prompts) - seen[0])
        return results


NO_TICK = Ticker()


def units_per_problem(spec: Spec) -> int:
    """Engine prompts one problem costs under ``spec`` (what :class:`Ticker` counts in).

    >>> units_per_problem(parse("best_of_n@4")), units_per_problem(parse("self_refine@2"))
    (5, 5)
    """
    if spec.kind == "best_of_n":
        return 1 + spec.k
    if spec.kind == "self_refine":
        return 1 + 2 * spec.k
    if spec.kind == "prompt_ensemble":
        return spec.k
    return 1


def _sample(
    engine: Engine,
    prompts: Sequence[Prompt],
    s: Settings,
    n: int,
    greedy: bool = False,
    tick: Ticker = NO_TICK,
):
    params = SamplingParams(
        n=n,
        temperature=0.0 if greedy else s.temperature,
        top_p=1.0 if greedy else s.top_p,
        max_new_tokens=s.max_new_tokens,
        seed=s.seed,
    )
    return tick.generate(engine, prompts, params)


def _question(prompt: Prompt) -> str:
    return to_messages(prompt)[-1]["content"]


def greedy(
    engine: Engine, prompts: Sequence[Prompt], extract: Extract, s: Settings, tick: Ticker = NO_TICK
) -> list[Answer]:
    results = _sample(engine, prompts, s, 1, greedy=True, tick=tick)
    return [Answer(r.samples[0].text, extract(r.samples[0].text), r.samples[0].tokens) for r in results]


def vote_answers(samples: Sequence[Sample], extract: Extract) -> list[str | None]:
    """Answers that vote: only samples that ended on their own (a reply cut at the token limit ends
    on an arbitrary number); every sample when none did.

    >>> vote_answers([Sample("so 5", 3, "stop"), Sample("it is 7 and 8", 9, "length")], lambda t: t[-1])
    ['5', None]
    """
    finished = [extract(x.text) if x.finish_reason == "stop" else None for x in samples]
    return finished if any(a is not None for a in finished) else [extract(x.text) for x in samples]


def self_consistency(
    engine: Engine, prompts: Sequence[Prompt], extract: Extract, s: Settings, k: int, tick: Ticker = NO_TICK
) -> list[Answer]:
    out = []
    for r in _sample(engine, prompts, s, k, tick=tick):
        answers = vote_answers(r.samples, extract)
        best = majority(answers)
        text = r.samples[best].text
        out.append(Answer(text, extract(text), sum(x.tokens for x in r.samples)))
    return out


def judge(
    engine: Engine, pairs: Sequence[tuple[Prompt, str]], tick: Ticker = NO_TICK
) -> tuple[list[float], list[int]]:
    """The model's own verdict on each (prompt, reply): P(Yes) and the tokens it cost."""
    prompts = [JUDGE_PROMPT.format(question=_question(p), answer=reply) for p, reply in pairs]
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=1, logprobs=True)
    results = tick.generate(engine, prompts, params)
    scores = [judge_score(r.samples[0].text, (r.samples[0].logprobs or (None,))[0]) for r in results]
    return scores, [r.samples[0].tokens for r in results]


def best_of_n(
    engine: Engine,
    prompts: Sequence[Prompt],
    extract: Extract,
    s: Settings,
    n: int,
    verify: Sequence[Verify] | None = None,
    tick: Ticker = NO_TICK,
) -> list[Answer]:
    """The best of ``n`` samples by the model's own judge, or by ``verify`` (data generation only)."""
    results = _sample(engine, prompts, s, n, tick=tick)
    pairs = [(p, x.text) for p, r in zip(prompts, results, strict=True) for x in r.samples]
    if verify is None:
        scores, judge_tokens = judge(engine, pairs, tick)
    else:
        checks = [verify[i] for i, r in enumerate(results) for _ in r.samples]
        scores = [float(bool(check(text))) for check, (_, text) in zip(checks, pairs, strict=True)]
        judge_tokens = [0] * len(pairs)
    out = []
    for i, r in enumerate(results):
        mine = scores[i * n : (i + 1) * n]
        best = max(range(n), key=lambda j: (mine[j], -j))
        cost = sum(x.tokens for x in r.samples) + sum(judge_tokens[i * n : (i + 1) * n])
        out.append(Answer(r.samples[best].text, extract(r.samples[best].text), cost))
    return out


def self_refine(
    engine: Engine,
    prompts: Sequence[Prompt],
    extract: Extract,
    s: Settings,
    rounds: int,
    tick: Ticker = NO_TICK,
) -> list[Answer]:
    """A greedy draft, then ``rounds`` of critique and revision in the same conversation."""
    drafts = _sample(engine, prompts, s, 1, greedy=True, tick=tick)
    texts = [r.samples[0].text for r in drafts]
    tokens = [r.samples[0].tokens for r in drafts]
    for _ in range(rounds):
        talks = [
            [*to_messages(p), {"role": "assistant", "content": t}]
            for p, t in zip(prompts, texts, strict=True)
        ]
        critiques = _sample(
            engine, [[*c, {"role": "user", "content": CRITIQUE_PROMPT}] for c in talks], s, 1, True, tick
        )
        revise = [
            [
                *c,
                {"role": "user", "content": CRITIQUE_PROMPT},
                {"role": "assistant", "content": r.samples[0].text},
                {"role": "user", "content": REVISE_PROMPT},
            ]
            for c, r in zip(talks, critiques, strict=True)
        ]
        revised = _sample(engine, revise, s, 1, greedy=True, tick=tick)
        texts = [r.samples[0].text for r in revised]
        tokens = [
            t + c.samples[0].tokens + r.samples[0].tokens
            for t, c, r in zip(tokens, critiques, revised, strict=True)
        ]
    return [Answer(t, extract(t), n) for t, n in zip(texts, tokens, strict=True)]


def with_system(prompt: Prompt, system: str) -> list[dict[str, str]]:
    """``prompt`` under the system message ``system`` (replacing one it has).

    >>> with_system("What is 2 + 3?", "Be brief.")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'What is 2 + 3?'}]
    """
    return [{"role": "system", "content": system}, *(m for m in to_messages(prompt) if m["role"] != "system")]


def prompt_ensemble(
    engine: Engine, prompts: Sequence[Prompt], extract: Extract, s: Settings, k: int, tick: Ticker = NO_TICK
) -> list[Answer]:
    """Greedy replies to each prompt as given and under ``k - 1`` other system prompts; the majority
    answer among finished replies wins, ties going to the earliest voter (the prompt as given)."""
    variants = [list(prompts), *([with_system(p, sys) for p in prompts] for sys in SYSTEM_PROMPTS[: k - 1])]
    flat = [p for variant in variants for p in variant]
    results = _sample(engine, flat, s, 1, greedy=True, tick=tick)
    out = []
    for i in range(len(prompts)):
        replies = [results[v * len(prompts) + i].samples[0] for v in range(k)]
        best = majority(vote_answers(replies, extract))
        out.append(Answer(replies[best].text, extract(replies[best].text), sum(x.tokens for x in replies)))
    return out


def run(
    engine: Engine,
    spec: str | Spec,
    prompts: Sequence[Prompt],
    extract: Extract,
    settings: Settings = Settings(),
    verify: Sequence[Verify] | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Answer every prompt with strategy ``spec``; ``verify`` (one per prompt) only for verifier
    strategies, which refuse to run without it. ``progress`` is told how many more prompts are
    answered as the engine finishes them (their sum is ``len(prompts)``)."""
    sp = parse(spec) if isinstance(spec, str) else spec
    if sp.uses_verifier and (verify is None or len(verify) != len(prompts)):
        raise ValueError(f"strategy {sp.name!r} needs one verifier per prompt (data generation only)")
    tick = Ticker(progress, units_per_problem(sp))
    start = time.perf_counter()
    if sp.kind == "greedy":
        answers = greedy(engine, prompts, extract, settings, tick)
    elif sp.kind == "self_consistency":
        answers = self_consistency(engine, prompts, extract, settings, sp.k, tick)
    elif sp.kind == "best_of_n":
        answers = best_of_n(engine, prompts, extract, settings, sp.k, tick=tick)
    elif sp.kind == "best_of_n_verifier":
        answers = best_of_n(engine, prompts, extract, settings, sp.k, verify=verify, tick=tick)
    elif sp.kind == "prompt_ensemble":
        answers = prompt_ensemble(engine, prompts, extract, settings, sp.k, tick)
    else:
        answers = self_refine(engine, prompts, extract, settings, sp.k, tick)
    seconds = time.perf_counter() - start
    return Outcome(sp.name, tuple(answers), sum(a.tokens for a in answers), seconds)
