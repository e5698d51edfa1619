"""Analysis of a soak run (``benchmarks/soak.py``): does any process grow without bound?

Pure functions over samples ``(t, service, pid, rss, fds)``. A killed service comes back with a new
pid and must load its model again, so a service's samples form a sawtooth whatever it leaks; growth
is therefore measured inside each process: the slope is the least-squares slope of all of a service's
processes together, each centred on its own means (a pooled within-process regression), over the
samples taken at least ``warmup_s`` after that process was first seen.

Verdict per service, from the samples in the second half of the soak (after the warm-up):

- ``grows``: RSS rises faster than ``rss_mib_per_h`` MiB per hour AND faster than ``rss_frac_per_h``
  of its warm value per hour (the mean after the warm-up, first half), or the open file descriptors
  rise faster than ``fds_per_h`` per hour. Both RSS conditions, because a large process drifts a few
  MiB with its allocator and a small one may double from nothing without harm.
- ``short``: less than ``min_span_s`` seconds of post-warm-up samples in that half (or fewer than
  four): too little to judge; not a failure, but the soak says nothing about the service.
- ``bounded``: otherwise.

The second half, not the whole soak: a process that grows while its caches fill and then levels off
is bounded; one still rising after hours is not.

>>> hour = [Sample(t, "x", 1, 100 * MIB + int(t / 3600 * 50 * MIB), 10) for t in range(0, 4 * 3600, 60)]
>>> s = summarize(hour, Limits(warmup_s=600))["x"]
>>> s.verdict, round(s.rss.late_slope_per_h / MIB)
('grows', 50)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MIB = 1024 * 1024
VERDICTS = ("bounded", "grows", "short")


@dataclass(frozen=True)
class Sample:
    """One observation of one process: ``t`` seconds since the soak began, RSS in bytes and open
    file descriptors (the process and its descendants)."""

    t: float
    service: str
    pid: int
    rss: int
    fds: int


@dataclass(frozen=True)
class Limits:
    """When a series counts as growing (see the module docstring)."""

    warmup_s: float = 600.0
    rss_mib_per_h: float = 20.0
    rss_frac_per_h: float = 0.10
    fds_per_h: float = 5.0
    min_span_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("warmup_s", "rss_mib_per_h", "rss_frac_per_h", "fds_per_h", "min_span_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"soak limit {name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Trend:
    """One metric of one service: its first, peak and last value over every process, the slope per
    hour after the warm-up (all of it, and its second half) and the warm value."""

    first: int
    peak: int
    last: int
    slope_per_h: float | None
    late_slope_per_h: float | None
    warm: float | None


@dataclass(frozen=True)
class ServiceSummary:
    service: str
    lifetimes_s: list[float]  # per process (pid), first to last sample, in order of appearance
    rss: Trend
    fds: Trend
    late_span_s: float  # post-warm-up seconds in the second half, summed over processes
    verdict: str
    reasons: list[str] = field(default_factory=list)


def slope(points: Iterable[tuple[int, float, float]]) -> float | None:
    """Least-squares slope per second of ``(group, t, value)`` points, each group centred on its own
    means (a process's level does not count, only its rise); None without two distinct times in a group.

    >>> slope([(1, 0, 10), (1, 10, 20), (2, 100, 500), (2, 110, 510)])
    1.0
    >>> slope([(1, 0, 10), (2, 5, 99)]) is None
    True
    """
    groups: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for g, t, v in points:
        groups[g].append((t, v))
    num = den = 0.0
    for pts in groups.values():
        mt = sum(t for t, _ in pts) / len(pts)
        mv = sum(v for _, v in pts) / len(pts)
        num += sum((t - mt) * (v - mv) for t, v in pts)
        den += sum((t - mt) ** 2 for t, _ in pts)
    return num / den if den > 0 else None


def summarize(samples: Sequence[Sample], limits: Limits | None = None) -> dict[str, ServiceSummary]:
    """Every service's trends and verdict (services in order of first appearance)."""
    limits = limits or Limits()
    if not samples:
        raise ValueError("no soak samples to summarize")
    by_service: dict[str, list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: s.t):
        by_service[s.service].append(s)
    return {name: _service(name, rows, limits) for name, rows in by_service.items()}


def _service(name: str, rows: list[Sample], limits: Limits) -> ServiceSummary:
    born: dict[int, float] = {}
    died: dict[int, float] = {}
    for s in rows:
        born.setdefault(s.pid, s.t)
        died[s.pid] = s.t
    warm = [s for s in rows if s.t - born[s.pid] >= limits.warmup_s]
    mid = (warm[0].t + warm[-1].t) / 2 if warm else 0.0
    early, late = [s for s in warm if s.t < mid], [s for s in warm if s.t >= mid]
    late_span = _span(late)
    rss, fds = (_trend(rows, warm, early, late, metric) for metric in ("rss", "fds"))
    reasons = []
    if len(late) < 4 or late_span < limits.min_span_s:
        verdict = "short"
        reasons.append(f"{late_span:.0f} s of samples after the warm-up in the second half")
    else:
        if rss.late_slope_per_h is not None and rss.warm is not None:
            per_h = rss.late_slope_per_h
            if per_h > limits.rss_mib_per_h * MIB and per_h > limits.rss_frac_per_h * rss.warm:
                reasons.append(
                    f"RSS +{per_h / MIB:.1f} MiB/h ({per_h / rss.warm:.0%} of {rss.warm / MIB:.0f} MiB)"
                )
        if fds.late_slope_per_h is not None and fds.late_slope_per_h > limits.fds_per_h:
            reasons.append(f"fds +{fds.late_slope_per_h:.1f}/h")
        verdict = "grows" if reasons else "bounded"
    return ServiceSummary(
        service=name,
        lifetimes_s=[round(died[p] - born[p], 1) for p in born],
        rss=rss,
        fds=fds,
        late_span_s=round(late_span, 1),
        verdict=verdict,
        reasons=reasons,
    )


def _span(rows: list[Sample]) -> float:
    """Seconds covered by each process's samples, summed."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for s in rows:
        first.setdefault(s.pid, s.t)
        last[s.pid] = s.t
    return sum(last[p] - first[p] for p in first)


def _trend(
    rows: list[Sample], warm: list[Sample], early: list[Sample], late: list[Sample], metric: str
) -> Trend:
    values = [getattr(s, metric) for s in rows]
    base = early or warm

    def per_h(part: list[Sample]) -> float | None:
        found = slope((s.pid, s.t, getattr(s, metric)) for s in part)
        return None if found is None else found * 3600

    return Trend(
        first=values[0],
        peak=max(values),
        last=values[-1],
        slope_per_h=per_h(warm),
        late_slope_per_h=per_h(late),
        warm=sum(getattr(s, metric) for s in base) / len(base) if base else None,
    )


def table(summary: dict[str, ServiceSummary]) -> str:
    """The per-service table a soak prints.

    >>> rows = [Sample(t, "trainer", 7, 300 * MIB, 12) for t in range(0, 3000, 30)]
    >>> print(table(summarize(rows, Limits(warmup_s=60, min_span_s=300))))  # doctest: +NORMALIZE_WHITESPACE
    service   procs  longest_s  rss_first/peak/last_MiB  MiB/h(late)  fds_first/peak/last  fds/h(late)  verdict
    trainer   1      2970       300/300/300              +0.0         12/12/12             +0.0         bounded
    """
    head = ("service", "procs", "longest_s", "rss_first/peak/last_MiB", "MiB/h(late)")
    head += ("fds_first/peak/last", "fds/h(late)", "verdict")
    lines = [head]
    for s in summary.values():
        lines.append(
            (
                s.service,
                str(len(s.lifetimes_s)),
                f"{max(s.lifetimes_s):.0f}",
                f"{s.rss.first // MIB}/{s.rss.peak // MIB}/{s.rss.last // MIB}",
                _signed(s.rss.late_slope_per_h, MIB),
                f"{s.fds.first}/{s.fds.peak}/{s.fds.last}",
                _signed(s.fds.late_slope_per_h, 1),
                s.verdict + (f" ({'; '.join(s.reasons)})" if s.reasons and s.verdict == "grows" else ""),
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines
    )


def _signed(value: float | None, unit: float) -> str:
    return "-" if value is None else f"{value / unit:+.1f}"
