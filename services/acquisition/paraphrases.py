"""Paraphrased training prompts: the model restates each task prompt in its own words (pure parts).

A model that learns only the task generator's wordings learns the wordings as much as the skill. So
acquisition asks the incumbent to restate each training prompt (:data:`RESTATE`, asked by
:func:`selfimprove.acquisition.generate.paraphrase`), cleans each restatement (:func:`clean`), drops
repeats and evaluation problems (:func:`screen`), samples answers to the rest like any prompt, and
keeps a restatement only when its meaning survived (:func:`survived`): verified runs, a sampled
answer the task's verifier accepts against the *source* item's reference answer; label-free runs,
which read no truth, the same majority answer as the source prompt. A kept restatement is a new
prompt for the same item (same id stem, category, reference answer and problem key), stored as a row
marked ``paraphrase_of`` (:mod:`selfimprove.contracts.samples`).

The cleaning also keeps the restatement's numbers those of the source, so the restated problem is
the source's (its problem key, which selection decontaminates by, still holds) and an answer
written into it is caught.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from selfimprove.contracts.samples import BY_MAJORITY
from selfimprove.runtime.decontam import words
from selfimprove.runtime.tasks.base import Item
from selfimprove.runtime.tasks.datafile import text_key

# The one instruction the model restates a prompt by. The example, of no task's kind, shows a small
# model the form of the reply (a bare instruction gets more answers and chatter than restatements).
RESTATE = (
    "Rewrite the question below in other words. Keep every number, do not answer it, and reply with "
    "the rewritten question only.\n\nExample: What is the capital of France?\nRewritten: Which city "
    "is the capital of France?\n\nQuestion: {prompt}\nRewritten:"
)
# A label before the restatement ("Rewritten question: ...", "Q: ...").
_LABEL = re.compile(r"^(?P<head>[A-Za-z][\w ]{0,40}?)\s*:\s*(?P<rest>.+)$")
_LABEL_WORDS = ("question", "rewrit", "restat", "rephras", "paraphras")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_QUOTES = "\"'`*“”‘’ "
# (prompt, problem key) -> why it is an evaluation problem, or None (EvalGuard.rule)
Rule = Callable[[str, tuple | None], str | None]


def restate_prompt(prompt: str) -> str:
    """The request to restate ``prompt``.

    >>> print(restate_prompt("What is 48 + 27?").splitlines()[-2])
    Question: What is 48 + 27?
    """
    return RESTATE.format(prompt=prompt.strip())


def numbers(text: str) -> Counter[str]:
    """The numbers written in ``text`` as digits, signs left off, with their counts.

    >>> sorted(numbers("What is 9 - 12? 12 apples, 2.5 kg").items())
    [('12', 2), ('2.5', 1), ('9', 1)]
    """
    return Counter(_NUMBER.findall(text))


def clean(text: str, source: str, answer: str | None = None, max_chars: int = 300) -> tuple[str | None, str]:
    """The restatement in a reply, and why it was refused (``""`` when kept).

    The first line that is not a bare preamble ("Here is the rewritten question:"), without a label
    ("Rewritten question: ...") or enclosing quotes. Refused as ``empty``; ``too_long`` (over
    ``max_chars`` or three times the source); ``identical`` (the source, or a part of it, in the same
    words once normalised: a re-framed copy is no new wording); ``answer`` (the answer, given by the
    caller: the reference in verified runs, the source's majority answer in label-free ones, written
    more often than the source writes it); ``numbers`` (a number of the source left out or one added,
    which changes the problem).

    >>> src = "Q: What is 48 + 27?\\n\\nA:"
    >>> clean('Sure! Here is the rewritten question:\\n"What do you get when you add 48 and 27?"', src, "75")
    ('What do you get when you add 48 and 27?', '')
    >>> clean("Rewritten question: How much is 48 plus 27?", src)
    ('How much is 48 plus 27?', '')
    >>> clean("What is 48 + 27?", src), clean("What is 48 + 27? It is 75.", src, "75")
    ((None, 'identical'), (None, 'answer'))
    >>> clean("What is 48 + 28?", src), clean("  \\n ", src), clean("Add 48 and 27. " * 40, src)
    ((None, 'numbers'), (None, 'empty'), (None, 'too_long'))
    """
    line = ""
    for candidate in text.strip().splitlines():
        candidate = candidate.strip()
        if not candidate or (candidate.endswith(":") and not _NUMBER.search(candidate)):
            continue
        line = candidate
        break
    if (m := _LABEL.match(line)) and (
        m["head"].lower() == "q" or any(w in m["head"].lower() for w in _LABEL_WORDS)
    ):
        line = m["rest"]
    line = line.strip(_QUOTES).strip()
    if not line:
        return None, "empty"
    if len(line) > max(max_chars, 0) or len(line) > 3 * max(len(source.strip()), 1):
        return None, "too_long"
    said, asked = " ".join(words(line)), " ".join(words(source))
    if not said or f" {said} " in f" {asked} ":
        return None, "identical"
    have, want = numbers(line), numbers(source)
    bare = (answer or "").strip().lstrip("-")
    if bare and _NUMBER.fullmatch(bare) and have[bare] > want[bare]:
        return None, "answer"
    if have != want:
        return None, "numbers"
    return line, ""


def screen(
    replies: Sequence[str], source: str, answer: str | None = None, rule: Rule | None = None
) -> tuple[list[str], Counter[str]]:
    """The distinct usable restatements of ``replies`` in order, and why the others were refused:
    a :func:`clean` reason, ``repeat`` (another restatement's text once normalised), or
    ``contaminated`` (``rule``, the evaluation sets' guard, names it an evaluation problem by its text
    key or by n-gram overlap).

    >>> guard = lambda prompt, key: "ngram" if "sum" in prompt else None
    >>> kept, why = screen(["Add 4 and 5.", "add 4 and 5", "The sum of 4 and 5?", "4 + 5"], "What is 4 + 5?", "9", guard)
    >>> kept, sorted(why.items())
    (['Add 4 and 5.'], [('contaminated', 1), ('identical', 1), ('repeat', 1)])
    """
    seen: set[tuple] = set()
    kept: list[str] = []
    why: Counter[str] = Counter()
    for reply in replies:
        text, reason = clean(reply, source, answer)
        if text is None:
            why[reason] += 1
            continue
        key = text_key(" ".join(words(text)))
        if key in seen:
            why["repeat"] += 1
            continue
        seen.add(key)
        if rule is not None and rule(text, text_key(text)) is not None:
            why["contaminated"] += 1
            continue
        kept.append(text)
    return kept, why


def restated(source: Item, text: str, k: int, by_majority: bool = False) -> Item:
    """The ``k``-th restatement of ``source`` as an item: the same item (category, reference answer,
    problem key) asked in other words, id ``<source id>.p<k>``; ``meta["pick"]`` is ``majority`` when it
    is kept by agreement (label-free), as worked sub-questions are marked.

    >>> src = Item(id="ab", prompt="What is 4 + 5?", category="add1", difficulty=1, answer="9", meta={"key": ("+", (4, 5))})
    >>> p = restated(src, "Add 4 and 5.", 1, by_majority=True)
    >>> p.id, p.prompt, p.answer, p.meta["key"], p.meta["pick"]
    ('ab.p1', 'Add 4 and 5.', '9', ('+', (4, 5)), 'majority')
    """
    meta = {**source.meta, "pick": BY_MAJORITY} if by_majority else dict(source.meta)
    return replace(source, id=f"{source.id}.p{k}", prompt=text, meta=meta)


def answer_for(source: Item, row: Mapping[str, Any], by_majority: bool) -> str | None:
    """What a restatement of ``source`` must answer to be kept: the source's majority answer when kept
    by agreement (label-free: the reference is never read), else its reference answer; ``None``: no
    restatement of it could be kept, so none is asked.

    >>> src = Item(id="a", prompt="p", category="c", difficulty=1, answer="9")
    >>> answer_for(src, {"majority": "8"}, False), answer_for(src, {"majority": "8"}, True), answer_for(src, {"majority": None}, True)
    ('9', '8', None)
    """
    return row.get("majority") if by_majority else source.answer


def survived(source: Mapping[str, Any], row: Mapping[str, Any], by_majority: bool) -> bool:
    """Whether a restatement kept its source's meaning, from the rows of both: with ``by_majority``
    (label-free) the restatement's majority answer is the source's; else one of its samples is
    verified (its item carries the source's reference answer).

    >>> src, ok = {"majority": "9"}, {"majority": "9", "samples": [{"verified": True}, {"verified": False}]}
    >>> survived(src, ok, False), survived(src, ok, True), survived({"majority": "8"}, ok, True)
    (True, True, False)
    >>> survived(src, {"majority": None, "samples": [{"verified": None}]}, True), survived(src, {"samples": [{"verified": False}]}, False)
    (False, False)
    """
    if by_majority:
        return row.get("majority") is not None and row.get("majority") == source.get("majority")
    return any(s.get("verified") for s in row.get("samples", ()))


@dataclass(frozen=True)
class Paraphrased:
    """A shard's paraphrase counts: restatements asked, sampled (past :func:`screen`), kept (rows);
    tokens spent that no stored row holds (the restatements, and the samples of those not kept); why
    restatements were refused before sampling; and the seconds it all took."""

    asked: int = 0
    sampled: int = 0
    kept: int = 0
    tokens: int = 0
    refused: Mapping[str, int] | None = None
    seconds: float = 0.0
