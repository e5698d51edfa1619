"""Self-judged selection: the model's own verdict on its majority answers, combined with self-consistency.

In label-free runs a prompt's label is the majority answer of its samples (self-consistency); with
acquisition's ``self_judge`` each sample also carries the model's P(Yes) that it is right
(``judge``). Here that judgement narrows the samples that agree with the label (``filter``: those
judged at least ``min_p_yes``; ``rank``: the ``keep_top`` judged best), and doubts the label itself:
a prompt whose majority samples' mean P(Yes) is below ``min_p_yes`` (with ``drop_prompts``), or whose
every majority sample the filter refused, is dropped. Only the model's own outputs are read, never the
truth. Rows whose samples carry no judge (sub-question rows, restated prompts, or a shard acquired
without it) pass untouched. Pure functions; the pipeline counts the drops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfimprove.contracts.params import SelfJudgeParams

Row = dict[str, Any]


@dataclass(frozen=True)
class Judged:
    """What the self-judge made of one prompt's majority samples."""

    kept: list[Row] = field(default_factory=list)
    """The majority samples kept, in their order."""
    dropped: int = 0
    """Majority samples the judge left out (responses)."""
    drop_prompt: bool = False
    """Whether the prompt's label is doubted and the prompt dropped."""
    judged: bool = False
    """Whether the samples carried judgements (else they passed untouched)."""


def mean_p_yes(samples: Sequence[Row]) -> float | None:
    """The mean P(Yes) of ``samples``; ``None`` unless every one carries a judge.

    >>> mean_p_yes([{"judge": 0.9}, {"judge": 0.5}]), mean_p_yes([{"judge": 0.9}, {"judge": None}]), mean_p_yes([])
    (0.7, None, None)
    """
    scores = [s.get("judge") for s in samples]
    known = [float(p) for p in scores if p is not None]
    if not scores or len(known) < len(scores):
        return None
    return sum(known) / len(known)


def judge_majority(
    samples: Sequence[Row], params: SelfJudgeParams, usable: Callable[[Row], bool] = lambda s: True
) -> Judged:
    """The self-judge on the samples of one prompt that give its majority answer; ``rank`` takes the
    ``usable`` ones (those a later filter would keep, e.g. not cut off) before the others.

    >>> s = [{"text": "a", "judge": 0.9}, {"text": "b", "judge": 0.2}, {"text": "c", "judge": 0.6}]
    >>> j = judge_majority(s, SelfJudgeParams(mode="filter", min_p_yes=0.5, drop_prompts=False))
    >>> [x["text"] for x in j.kept], j.dropped, j.drop_prompt
    (['a', 'c'], 1, False)
    >>> j = judge_majority(s, SelfJudgeParams(mode="rank", keep_top=2))
    >>> [x["text"] for x in j.kept], j.dropped, j.drop_prompt
    (['a', 'c'], 1, False)
    >>> [x["text"] for x in judge_majority(s, SelfJudgeParams(mode="rank"), lambda x: x["text"] != "a").kept]
    ['c']
    >>> judge_majority(s, SelfJudgeParams(mode="rank", min_p_yes=0.7)).drop_prompt  # mean 0.57
    True
    >>> judge_majority(s[1:2], SelfJudgeParams(mode="filter", drop_prompts=False)).drop_prompt  # none left
    True
    >>> j = judge_majority([{"text": "a", "judge": None}], SelfJudgeParams(mode="filter"))
    >>> len(j.kept), j.judged, judge_majority(s, SelfJudgeParams()).dropped
    (1, False, 0)
    """
    mean = mean_p_yes(samples)
    if params.mode == "off" or mean is None:
        return Judged(kept=list(samples))
    if params.mode == "filter":
        kept = [s for s in samples if s["judge"] >= params.min_p_yes]
    else:  # rank: the best judged, ties in sampling order, kept in their order
        order = sorted(range(len(samples)), key=lambda i: (not usable(samples[i]), -samples[i]["judge"]))
        best = order[: params.keep_top]
        kept = [samples[i] for i in sorted(best)]
    doubted = params.drop_prompts and mean < params.min_p_yes
    drop_prompt = bool(samples) and (doubted or not kept)
    return Judged(kept=kept, dropped=len(samples) - len(kept), drop_prompt=drop_prompt, judged=True)


def has_judgements(rows: Sequence[Row]) -> bool:
    """Whether any own sample of ``rows`` carries the model's judgement (acquisition's ``self_judge``).

    >>> has_judgements([{"samples": [{"judge": None}]}, {"samples": [{"judge": 0.4}]}]), has_judgements([{"samples": []}])
    (True, False)
    """
    return any(s.get("judge") is not None for r in rows for s in r.get("samples", ()))
