"""Accuracy with confidence intervals, and paired comparisons of two models on the same items.

Pure functions over lists of booleans (one per item), standard library only.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Accuracy:
    correct: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else 0.0


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default).

    >>> [round(x, 3) for x in wilson(50, 100)]
    [0.404, 0.596]
    >>> wilson(0, 0)
    (0.0, 1.0)
    >>> all(lo <= c / n <= hi for n in (1, 3, 200) for c in (0, n) for lo, hi in [wilson(c, n)])
    True
    """
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At p = 0 or 1 the bound equals p up to rounding: clamp so that low <= p <= high always holds.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def accuracy(outcomes: Sequence[bool]) -> Accuracy:
    """Accuracy of a list of outcomes with its Wilson 95 % interval.

    >>> a = accuracy([True, False, True, True])
    >>> a.correct, a.n, a.value
    (3, 4, 0.75)
    """
    correct = sum(bool(x) for x in outcomes)
    low, high = wilson(correct, len(outcomes))
    return Accuracy(correct, len(outcomes), low, high)


@dataclass(frozen=True)
class PairedResult:
    """``delta`` = accuracy(b) - accuracy(a) with a 95 % interval and a two-sided p-value."""

    delta: float
    low: float
    high: float
    p_value: float
    n: int
    a_only: int  # items only model a got right
    b_only: int  # items only model b got right


def _binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> PairedResult:
    """Exact McNemar test of two models on the same items, with a Wald interval on the paired delta.

    >>> r = mcnemar([True] * 10 + [False] * 10, [True] * 10 + [True] * 8 + [False] * 2)
    >>> round(r.delta, 2), r.a_only, r.b_only, round(r.p_value, 4)
    (0.4, 0, 8, 0.0078)
    """
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    if n == 0:
        return PairedResult(0.0, 0.0, 0.0, 1.0, 0, 0, 0)
    delta = (b_only - a_only) / n
    var = ((a_only + b_only) / n - delta * delta) / n
    half = Z95 * math.sqrt(max(var, 0.0))
    return PairedResult(
        delta, delta - half, delta + half, _binom_two_sided(a_only, a_only + b_only), n, a_only, b_only
    )


def paired_bootstrap(
    a: Sequence[bool], b: Sequence[bool], resamples: int = 2000, seed: int = 0
) -> PairedResult:
    """Paired bootstrap of ``accuracy(b) - accuracy(a)``: percentile 95 % interval, and a two-sided
    p-value from how often the resampled delta falls on the other side of zero.

    >>> r = paired_bootstrap([False] * 50 + [True] * 50, [True] * 100, resamples=500)
    >>> r.delta, r.low > 0, r.p_value < 0.01
    (0.5, True, True)
    """
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    diffs = [int(bool(y)) - int(bool(x)) for x, y in zip(a, b, strict=True)]
    a_only, b_only = diffs.count(-1), diffs.count(1)
    if n == 0:
        return PairedResult(0.0, 0.0, 0.0, 1.0, 0, 0, 0)
    rng = random.Random(seed)
    stats = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    delta = sum(diffs) / n
    low, high = stats[int(0.025 * resamples)], stats[min(resamples - 1, int(0.975 * resamples))]
    below = sum(s <= 0 for s in stats) / resamples
    above = sum(s >= 0 for s in stats) / resamples
    return PairedResult(delta, low, high, min(1.0, 2 * min(below, above)), n, a_only, b_only)
