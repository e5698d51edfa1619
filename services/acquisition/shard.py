"""A shard's rows and statistics from generated samples (pure).

The rows follow the ``samples.jsonl`` schema of :mod:`selfimprove.contracts.samples`, which selection
reads too; this module builds them (:func:`make_row`) and sums a shard's figures, in which
sub-question rows count apart (:func:`shard_stats`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from selfimprove.acquisition.selfjudge import bucket
from selfimprove.contracts.samples import Row, is_paraphrase, is_step, jsonable
from selfimprove.contracts.voting import agreement, majority, pass_rate
from selfimprove.runtime.tasks.base import Item
from selfimprove.v2.stages_pb2 import AcquireStats, CategoryStats


def make_row(
    item: Item,
    samples: Sequence[Any],
    extract: Callable[[str], str | None],
    verify: Callable[[Item, str], bool | None],
    judges: Sequence[float | None] | None = None,
    hinted: Sequence[Any] = (),
    worked: Sequence[Any] = (),
) -> Row:
    """The row of one prompt from its engine samples (``text``, ``tokens``, ``finish_reason``), its
    hinted samples and its worked replies (which also have ``steps``), if any; its label ``check``
    is ``None`` here (acquisition sets it after, from the row's ``majority``)."""

    def checked(s: Any) -> dict[str, Any]:
        return {
            "text": s.text,
            "tokens": s.tokens,
            "finish_reason": s.finish_reason,
            "extracted": extract(s.text),
            "verified": verify(item, s.text),
        }

    own = [checked(s) for s in samples]
    extracted = [o["extracted"] for o in own]
    label = majority(extracted)
    judges = judges or [None] * len(samples)
    return {
        "id": item.id,
        "prompt": item.prompt,
        "category": item.category,
        "difficulty": item.difficulty,
        "meta": jsonable(item.meta),
        "answer": item.answer,
        "samples": [
            {**o, "agrees": label is not None and o["extracted"] == label, "judge": j}
            for o, j in zip(own, judges, strict=True)
        ],
        "majority": label,
        "agreement": agreement(extracted, label),
        "pass_rate": pass_rate([o["verified"] for o in own]),
        "rationales": [checked(s) for s in hinted],
        "worked": [{**checked(s), "steps": list(s.steps), "pick": s.pick} for s in worked],
        "check": None,
    }


def shard_stats(rows: Sequence[Row], seconds: float, extra_tokens: int = 0) -> AcquireStats:
    """The shard's :class:`AcquireStats`: counts, tokens/s, pass-rate histogram (prompt counts), yield,
    agreement, and per category its prompts asked, verified, their pass rate and open labels
    (:func:`open_label`). Sub-question rows (:func:`is_step`) are left out of every prompt figure and
    counted apart (``step_*``); so are restated prompts (:func:`is_paraphrase`, ``paraphrases_kept``;
    the caller sets how many were asked and sampled). ``tokens`` counts every sample generated (see
    the message's comments), with ``extra_tokens`` generated for no stored row.

    >>> row = {"samples": [{"tokens": 5, "verified": True}, {"tokens": 3, "verified": False}],
    ...        "pass_rate": 0.5, "agreement": 0.5}
    >>> s = shard_stats([row], 2.0)
    >>> s.tokens, s.tokens_per_second, s.yield_rate, s.pass_rate_0_50
    (8, 4.0, 1.0, 1)
    >>> s = shard_stats([row, {**row, "paraphrase_of": "a"}], 2.0, extra_tokens=4)
    >>> s.prompts, s.tokens, s.paraphrases_kept
    (1, 20, 1)
    >>> s = shard_stats([{**row, "category": "add2"}, {**row, "category": "add2", "pass_rate": 1.0}], 1.0)
    >>> c = s.categories[0]
    >>> c.category, c.pass_rate, c.verified, c.asked, c.open_labels
    ('add2', 0.75, 2, 2, 0)
    """
    steps = [r for r in rows if is_step(r)]
    restated = [r for r in rows if is_paraphrase(r)]
    tokens = extra_tokens + sum(
        s["tokens"] for r in [*steps, *restated] for s in [*r["samples"], *r.get("rationales", ())]
    )
    rows = [r for r in rows if not is_step(r) and not is_paraphrase(r)]
    samples = [s for r in rows for s in r["samples"]]
    hinted = [s for r in rows for s in r.get("rationales", ())]
    worked = [s for r in rows for s in r.get("worked", ())]
    checks = [r["check"] for r in rows if r.get("check")]
    tokens += sum(s["tokens"] for s in [*samples, *hinted, *checks])
    rates = [r["pass_rate"] for r in rows if r["pass_rate"] is not None]

    def share(hits: Sequence[bool], of: int) -> float:
        return sum(hits) / of if of else 0.0

    def any_verified(replies: Sequence[dict]) -> bool:
        return any(s["verified"] for s in replies)

    categories: dict[str, CategoryStats] = {}
    for r in rows:
        if r.get("category"):
            c = categories.setdefault(r["category"], CategoryStats(category=r["category"]))
            c.asked += 1
            c.open_labels += int(open_label(r))
            if r["pass_rate"] is not None:  # the running mean over the verified prompts
                c.verified += 1
                c.pass_rate += (r["pass_rate"] - c.pass_rate) / c.verified
    return AcquireStats(
        prompts=len(rows),
        samples=len(samples),
        tokens=tokens,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        duration_seconds=seconds,
        pass_rate_mean=sum(rates) / len(rates) if rates else 0.0,
        yield_rate=share([any_verified(r["samples"]) for r in rows], len(rows)),
        agreement_mean=sum(r["agreement"] for r in rows) / len(rows) if rows else 0.0,
        majority_share=share([r.get("majority") is not None for r in rows], len(rows)),
        answered=share(
            [any_verified([*r["samples"], *r.get("rationales", ()), *r.get("worked", ())]) for r in rows],
            len(rows),
        ),
        hinted_samples=len(hinted),
        rationalized=sum(any_verified(r.get("rationales", ())) for r in rows),
        worked_replies=len(worked),
        worked=sum(any_verified(r.get("worked", ())) for r in rows),
        labels_checked=len(checks),
        labels_confirmed=sum(bool(c["passed"]) for c in checks),
        step_prompts=len(steps),
        step_yield=share([any_verified(r["samples"]) for r in steps], len(steps)),
        steps_rationalized=sum(any_verified(r.get("rationales", ())) for r in steps),
        paraphrases_kept=len(restated),
        categories=[categories[k] for k in sorted(categories)],
        **{name: n for name, n in Counter(bucket(rate) for rate in rates).items()},
    )


def open_label(row: Row) -> bool:
    """Whether ``row`` has a label the model is still learning: a majority answer that passed the
    check asked of it (the label check), though not all of its samples gave it. Read from
    the model's own answers only, never the reference: a category whose labels are all unanimous is
    learnt, one with no label teaches nothing; label-free focus shares prompts by this.

    >>> open_label({"majority": "7", "agreement": 0.5, "check": {"passed": True}})
    True
    >>> open_label({"majority": "7", "agreement": 1.0}), open_label({"majority": None, "agreement": 0.0})
    (False, False)
    >>> open_label({"majority": "7", "agreement": 0.5, "check": {"passed": False}})
    False
    """
    check = row.get("check")
    return row.get("majority") is not None and row["agreement"] < 1.0 and (check is None or check["passed"])
