"""The evaluator's verdicts on each stage's output, and the stopping rules. Pure: no I/O, no clocks.

Each judges a stage's typed statistics (``AcquireStats``, ``SelectStats``, ``TrainStats``, the
suites' scores) and returns a :class:`Verdict`: ``ok``, the reason, and ``figures``, the numbers it
was based on, written into the decision event for display and never read back by name. What the run
goes on to use (the samples acquired, the selection's diversity, an evaluation's p-value and whether
its candidate is pending) are typed fields of the stage's verdict.

>>> shard = AcquireStats(prompts=10, samples=40, yield_rate=0.5, answered=0.5)
>>> v = data_verdict([shard, AcquireStats()], min_samples=10, min_yield=0.1)
>>> v.ok, v.reason, v.samples, v.yield_rate, v.answered
(True, 'acquired 40 samples, mean yield 0.500', 40.0, 0.5, None)
>>> v.figures
{'samples': 40.0, 'yield': 0.5, 'shards': 2.0}
>>> training_verdict(TrainStats(initial_loss=2.0, final_loss=float("nan"))).reason
'training unhealthy: final loss is not finite (nan)'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfimprove.runtime.tasks.base import HELDOUT_PHRASING
from selfimprove.v2.stages_pb2 import AcquireStats, SelectStats, TrainStats


@dataclass(frozen=True)
class Verdict:
    """Whether a stage's output lets the run go on, and why. ``figures`` are display-only: they go
    into ``Decision.figures`` and no code reads them back by name."""

    ok: bool
    reason: str
    figures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DataVerdict(Verdict):
    """The verdict on the data acquired over every shard."""

    samples: float
    """The model's own samples over every shard (hinted replies not counted)."""
    yield_rate: float
    """Mean fraction of the own samples that verified, weighted by samples."""
    answered: float | None = None
    """Mean fraction of prompts with any verified reply; only when hinted replies were acquired."""


@dataclass(frozen=True, kw_only=True)
class SelectionVerdict(Verdict):
    """The verdict on the selected training set."""

    kept: float
    """SFT rows kept."""
    diversity: float
    """The kept set's diversity, as selection measured it (the collapse rule watches it)."""


@dataclass(frozen=True, kw_only=True)
class EvaluationVerdict(Verdict):
    """The verdict on a candidate's paired evaluation against the incumbent."""

    p_value: float = 1.0
    """The main suite's exact McNemar p-value."""
    pending: bool = False
    """Rejected, but worth training further: a gain not yet significant, or a fall within the
    pending tolerance."""
    phrasing_candidate: float | None = None
    """The candidate's accuracy on the held-out-phrasing split; ``None`` when it was not scored."""
    phrasing_incumbent: float | None = None
    """The incumbent's accuracy on the held-out-phrasing split; ``None`` when it was not scored."""


def weighted(pairs: Sequence[tuple[float, float]]) -> float:
    """Mean of ``(value, weight)`` pairs weighted by the weights (plain mean when they sum to 0).

    >>> weighted([(1.0, 3), (0.0, 1)]), weighted([(1.0, 0), (0.0, 0)]), weighted([])
    (0.75, 0.5, 0.0)
    """
    if not pairs:
        return 0.0
    total = sum(w for _, w in pairs)
    if total <= 0:
        return sum(v for v, _ in pairs) / len(pairs)
    return sum(v * w for v, w in pairs) / total


def data_verdict(
    shards: Sequence[AcquireStats], min_samples: int, min_yield: float, label_free: bool = False
) -> DataVerdict:
    """Enough data after acquisition: replies (the model's own samples and hinted ones) over every
    shard, and the mean fraction of prompts with a verified reply (``answered``, which counts the
    own samples' ``yield_rate`` too). A label-free run judges no verdict of the verifier:
    its share is that of prompts whose samples have a majority answer (``majority_share``); the
    verified ``yield`` is still reported, never judged.

    >>> hinted = AcquireStats(samples=0, hinted_samples=64, yield_rate=0.0, answered=0.8, prompts=32)
    >>> data_verdict([hinted], min_samples=16, min_yield=0.1).reason
    'acquired 0 samples and 64 hinted, mean yield 0.000, answered 0.800'
    >>> free = [AcquireStats(samples=64, yield_rate=0.0, majority_share=0.5, prompts=16)]
    >>> data_verdict(free, 16, 0.1, label_free=True).reason, data_verdict(free, 16, 0.6, label_free=True).reason
    ('acquired 64 samples, majority share 0.500', 'too little data: majority share 0.500 < 0.6')
    """
    samples = float(sum(s.samples for s in shards))
    hinted = float(sum(s.hinted_samples for s in shards))
    yld = weighted([(s.yield_rate, s.samples) for s in shards])
    answered = weighted([(s.answered, s.prompts) for s in shards])
    figures = {"samples": samples, "yield": yld, "shards": float(len(shards))}
    said = f"{samples:.0f} samples"
    if hinted:
        figures.update(hinted_samples=hinted, answered=answered)
        said += f" and {hinted:.0f} hinted"
    share, name = answered, "yield"  # answered counts the own samples' yield too
    if label_free:
        share, name = weighted([(s.majority_share, s.prompts) for s in shards]), "majority share"
        figures["majority_share"] = share
    if samples + hinted < max(1, min_samples):
        ok, reason = False, f"too little data: {said} < {max(1, min_samples)}"
    elif share < min_yield:
        ok, reason = False, f"too little data: {name} {share:.3f} < {min_yield}"
    elif label_free:
        ok, reason = True, f"acquired {said}, majority share {share:.3f}"
    else:
        tail = f", answered {answered:.3f}" if hinted else ""
        ok, reason = True, f"acquired {said}, mean yield {yld:.3f}{tail}"
    return DataVerdict(
        ok, reason, figures, samples=samples, yield_rate=yld, answered=answered if hinted else None
    )


def selection_verdict(stats: SelectStats, min_kept: int) -> SelectionVerdict:
    """Enough data after selection: examples kept (SFT rows, or pairs for preference training).

    >>> selection_verdict(SelectStats(kept=0, pairs=0, diversity=0.3), 1).ok
    False
    """
    kept, pairs = float(stats.kept), float(stats.pairs)
    figures = {"kept": kept, "pairs": pairs, "diversity": stats.diversity}
    said = f"selection kept {kept:.0f} examples and {pairs:.0f} pairs"
    ok = max(kept, pairs) >= max(1, min_kept)
    reason = said if ok else f"too little data: {said}"
    return SelectionVerdict(ok, reason, figures, kept=kept, diversity=stats.diversity)


def training_verdict(
    stats: TrainStats, require_loss_drop: bool = True, heldout_tolerance: float = 0.0
) -> Verdict:
    """Training health: losses are finite and the final loss is below the initial one.

    A held-out loss may rise by at most ``heldout_tolerance`` (relative) before the candidate is
    rejected: on the few held-out examples of one iteration a small rise is noise, and the paired
    dev test still judges the candidate.

    >>> training_verdict(TrainStats(initial_loss=2.0, final_loss=1.5, steps=4)).ok
    True
    >>> training_verdict(TrainStats(initial_loss=2.0, final_loss=2.5, steps=4)).reason
    'training unhealthy: loss did not fall (2.5000 >= 2.0000)'
    >>> training_verdict(TrainStats(initial_loss=2.0, final_loss=2.5, heldout_loss_before=1.0,
    ...                             heldout_loss_after=0.8)).ok
    True
    >>> rise = dict(initial_loss=2.0, final_loss=1.5, heldout_loss_before=0.20, heldout_loss_after=0.22)
    >>> training_verdict(TrainStats(**rise)).ok, training_verdict(TrainStats(**rise), heldout_tolerance=0.25).reason
    (False, 'training healthy: held-out loss 0.2000 -> 0.2200 (within a 25% rise)')
    >>> training_verdict(TrainStats(**{**rise, "heldout_loss_after": 0.3}), heldout_tolerance=0.25).reason
    'training unhealthy: held-out loss rose 50% (0.3000 vs 0.2000, tolerance 25%)'
    """
    final = stats.final_loss if stats.HasField("final_loss") else math.nan
    initial = stats.initial_loss if stats.HasField("initial_loss") else math.nan
    figures = {"steps": float(stats.steps), "tokens": float(stats.tokens)}
    if stats.HasField("initial_loss") and stats.HasField("final_loss"):
        figures.update(initial_loss=initial, final_loss=final)
    if not math.isfinite(final):
        return Verdict(False, f"training unhealthy: final loss is not finite ({final})", figures)
    if not math.isfinite(initial):
        return Verdict(False, f"training unhealthy: initial loss is not finite ({initial})", figures)
    measured = stats.HasField("heldout_loss_before") and stats.HasField("heldout_loss_after")
    before, after = stats.heldout_loss_before, stats.heldout_loss_after
    if measured and math.isfinite(before) and math.isfinite(after):
        # Held-out loss before and after training is the fairer test than two noisy batch losses.
        figures.update(heldout_loss_before=float(before), heldout_loss_after=float(after))
        if require_loss_drop and heldout_tolerance > 0 and after > before * (1 + heldout_tolerance):
            rise = after / before - 1 if before > 0 else math.inf
            return Verdict(
                False,
                f"training unhealthy: held-out loss rose {rise:.0%} ({after:.4f} vs {before:.4f}, "
                f"tolerance {heldout_tolerance:.0%})",
                figures,
            )
        if require_loss_drop and heldout_tolerance <= 0 and after >= before:
            return Verdict(
                False,
                f"training unhealthy: held-out loss did not fall ({after:.4f} >= {before:.4f})",
                figures,
            )
        within = f" (within a {heldout_tolerance:.0%} rise)" if after >= before else ""
        return Verdict(True, f"training healthy: held-out loss {before:.4f} -> {after:.4f}{within}", figures)
    if require_loss_drop and stats.steps < 2:
        return Verdict(
            True, f"training finite after one step (loss {final:.4f}); too few steps to see a fall", figures
        )
    if require_loss_drop and final >= initial:
        return Verdict(
            False, f"training unhealthy: loss did not fall ({final:.4f} >= {initial:.4f})", figures
        )
    return Verdict(True, f"training healthy: loss {initial:.4f} -> {final:.4f}", figures)


def evaluation_verdict(
    suites: Sequence[Mapping[str, Any]],
    alpha: float,
    margin: float,
    pending_tolerance: float = 0.0,
    regression_alpha: float | None = None,
    max_phrasing_gap: float | None = None,
) -> EvaluationVerdict:
    """Promote only a significant gain on the main suite (the first) with no regression beyond
    ``margin`` on any other suite. A rejected candidate is ``pending`` (worth training further) when
    it gained without significance, or fell no more than ``pending_tolerance`` below the incumbent.
    With ``regression_alpha``, a drop beyond the margin is a regression only when it is also
    significant (the suite's exact McNemar p below it): on a small suite a few items either way are
    noise, and the main-suite rules decide.

    The held-out-phrasing suite (``split`` ``heldout_phrasing``: the main suite's problems in wordings
    never trained on) is no regression suite: its accuracies are reported (figures and the verdict's
    ``phrasing_*`` fields), and with ``max_phrasing_gap`` a candidate whose gap (main accuracy minus
    held-out-phrasing accuracy) is wider than the incumbent's by more than that is rejected.

    >>> main = {"name": "dev", "candidate_accuracy": 0.6, "incumbent_accuracy": 0.4, "p_value": 0.01, "n": 100}
    >>> evaluation_verdict([main], 0.05, 0.05).ok
    True
    >>> reg = {"name": "add1", "candidate_accuracy": 0.7, "incumbent_accuracy": 0.9, "p_value": 0.02, "n": 50}
    >>> evaluation_verdict([main, reg], 0.05, 0.05).reason
    'regression on add1: 0.700 < 0.900 - margin 0.05'
    >>> evaluation_verdict([{**main, "p_value": 0.2}], 0.05, 0.05).pending
    True
    >>> lower = {**main, "candidate_accuracy": 0.39, "p_value": 0.8}
    >>> [evaluation_verdict([lower], 0.05, 0.05, t).pending for t in (0.0, 0.01, 0.005)]
    [False, True, False]
    >>> evaluation_verdict([lower], 0.05, 0.05, 0.01).reason
    'no gain: candidate 0.390 <= incumbent 0.400 (within the pending tolerance 0.01)'
    >>> evaluation_verdict([main, reg], 0.05, 0.05, regression_alpha=0.05).reason
    'regression on add1: 0.700 < 0.900 - margin 0.05 (p=0.0200 < 0.05)'
    >>> evaluation_verdict([main, {**reg, "p_value": 0.25}], 0.05, 0.05, regression_alpha=0.05).reason
    'significant gain +0.200 (p=0.0100 < alpha 0.05); add1 fell 0.900 -> 0.700, not significant (p=0.2500)'
    >>> worded = {"name": "heldout_phrasing", "split": "heldout_phrasing", "candidate_accuracy": 0.3,
    ...           "incumbent_accuracy": 0.3, "p_value": 1.0, "n": 100}
    >>> v = evaluation_verdict([main, worded], 0.05, 0.05, max_phrasing_gap=0.1)
    >>> v.ok, v.reason, v.phrasing_candidate, v.phrasing_incumbent
    (False, 'phrasing gap widened: dev 0.600 - held-out phrasing 0.300 = 0.300 > incumbent 0.400 - 0.300 = 0.100 + margin 0.1', 0.3, 0.3)
    >>> evaluation_verdict([main, worded], 0.05, 0.05).ok, evaluation_verdict([main, worded], 0.05, 0.05, max_phrasing_gap=0.2).ok
    (True, True)
    """
    if not suites:
        return EvaluationVerdict(False, "evaluation returned no suites")
    main = suites[0]
    cand, inc = float(main.get("candidate_accuracy", 0)), float(main.get("incumbent_accuracy", 0))
    p = float(main.get("p_value", 1.0))
    figures = {"candidate_accuracy": cand, "incumbent_accuracy": inc, "delta": cand - inc, "p_value": p}
    worded = next((s for s in suites[1:] if s.get("split") == HELDOUT_PHRASING), None)
    w_cand: float | None = None
    w_inc: float | None = None
    if worded is not None:
        w_cand = float(worded.get("candidate_accuracy", 0))
        w_inc = float(worded.get("incumbent_accuracy", 0))
        figures.update(
            heldout_phrasing_candidate_accuracy=w_cand,
            heldout_phrasing_incumbent_accuracy=w_inc,
            phrasing_gap_candidate=cand - w_cand,
            phrasing_gap_incumbent=inc - w_inc,
        )
        gap, was = cand - w_cand, inc - w_inc
        if max_phrasing_gap is not None and gap > was + max_phrasing_gap + 1e-12:
            reason = (
                f"phrasing gap widened: dev {cand:.3f} - held-out phrasing {w_cand:.3f} = {gap:.3f} > "
                f"incumbent {inc:.3f} - {w_inc:.3f} = {was:.3f} + margin {max_phrasing_gap:g}"
            )
            return EvaluationVerdict(
                False, reason, figures, p_value=p, phrasing_candidate=w_cand, phrasing_incumbent=w_inc
            )
    noise = ""  # drops beyond the margin that regression_alpha judged not significant
    for s in suites[1:]:
        if s is worded:
            continue
        c, i = float(s.get("candidate_accuracy", 0)), float(s.get("incumbent_accuracy", 0))
        if c < i - margin - 1e-12:
            reason = f"regression on {s.get('name')}: {c:.3f} < {i:.3f} - margin {margin}"
            p_drop = float(s.get("p_value", 1.0))
            if regression_alpha is None:
                return EvaluationVerdict(
                    False, reason, figures, p_value=p, phrasing_candidate=w_cand, phrasing_incumbent=w_inc
                )
            if p_drop < regression_alpha:
                said = f"{reason} (p={p_drop:.4f} < {regression_alpha:g})"
                return EvaluationVerdict(
                    False, said, figures, p_value=p, phrasing_candidate=w_cand, phrasing_incumbent=w_inc
                )
            noise += f"; {s.get('name')} fell {i:.3f} -> {c:.3f}, not significant (p={p_drop:.4f})"
    if cand <= inc:
        reason = f"no gain: candidate {cand:.3f} <= incumbent {inc:.3f}"
        # within noise of the incumbent: its training is not thrown away
        pending = pending_tolerance > 0 and inc - cand <= pending_tolerance + 1e-9
        if pending:
            figures["pending"] = 1.0
            reason += f" (within the pending tolerance {pending_tolerance:g})"
        return EvaluationVerdict(
            False,
            reason + noise,
            figures,
            p_value=p,
            pending=pending,
            phrasing_candidate=w_cand,
            phrasing_incumbent=w_inc,
        )
    if p >= alpha:
        figures["pending"] = 1.0  # a gain, no regression, not (yet) significant
        said = f"gain {cand - inc:+.3f} not significant (p={p:.4f} >= alpha {alpha}){noise}"
        return EvaluationVerdict(
            False, said, figures, p_value=p, pending=True, phrasing_candidate=w_cand, phrasing_incumbent=w_inc
        )
    said = f"significant gain {cand - inc:+.3f} (p={p:.4f} < alpha {alpha}){noise}"
    return EvaluationVerdict(
        True, said, figures, p_value=p, phrasing_candidate=w_cand, phrasing_incumbent=w_inc
    )


def collapse_verdict(
    history: Sequence[Mapping[str, Any]],
    window: int,
    diversity_drop: float,
    agreement_rise: float,
    accuracy_gain: float,
    min_diversity: float = 0.0,
) -> Verdict:
    """Collapse: over the last ``window`` iterations diversity fell and self-agreement rose while
    accuracy did not, or diversity fell below ``min_diversity``. ``history`` rows have ``diversity``,
    ``agreement`` and ``accuracy`` (the incumbent's accuracy when that iteration's data was made).

    >>> h = [{"diversity": 0.8, "agreement": 0.5, "accuracy": 0.3}, {"diversity": 0.7, "agreement": 0.6, "accuracy": 0.3},
    ...      {"diversity": 0.5, "agreement": 0.8, "accuracy": 0.3}]
    >>> collapse_verdict(h, 2, 0.1, 0.1, 0.01).ok
    False
    >>> collapse_verdict(h[:2], 2, 0.1, 0.1, 0.01).ok
    True
    """
    rows = [r for r in history if "diversity" in r and "agreement" in r]
    if rows and min_diversity > 0 and float(rows[-1]["diversity"]) < min_diversity:
        d = float(rows[-1]["diversity"])
        return Verdict(False, f"collapse: diversity {d:.3f} < {min_diversity}", {"diversity": d})
    if len(rows) < window + 1:
        return Verdict(True, "not enough iterations to judge collapse")
    then, now = rows[-window - 1], rows[-1]
    dd = float(then["diversity"]) - float(now["diversity"])
    da = float(now["agreement"]) - float(then["agreement"])
    acc_then, acc_now = then.get("accuracy"), now.get("accuracy")
    gain = (float(acc_now) - float(acc_then)) if acc_then is not None and acc_now is not None else 0.0
    figures = {"diversity_drop": dd, "agreement_rise": da, "accuracy_gain": gain}
    if dd >= diversity_drop and da >= agreement_rise and gain < accuracy_gain:
        return Verdict(
            False,
            f"collapse: over {window} iterations diversity fell {dd:.3f} and self-agreement rose "
            f"{da:.3f} while accuracy changed {gain:+.3f}",
            figures,
        )
    return Verdict(True, "no collapse", figures)


def plateau(promoted: Sequence[bool], patience: int) -> bool:
    """True when none of the last ``patience`` iterations promoted.

    >>> plateau([True, False, False], 2), plateau([False, True], 2), plateau([False], 2)
    (True, False, False)
    """
    return len(promoted) >= patience and not any(promoted[-patience:])
