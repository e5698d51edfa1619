"""The soak verdicts on synthetic series: a flat process is bounded, a linear leak grows (RSS or file
descriptors), restarts that each load a model again (a sawtooth) are bounded, a process that levels
off is bounded, and too little time after the warm-up is ``short``."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "soakkit.py"
spec = importlib.util.spec_from_file_location("soakkit", PATH)
assert spec is not None and spec.loader is not None
soakkit = importlib.util.module_from_spec(spec)
sys.modules["soakkit"] = soakkit  # dataclasses look their module up by name
spec.loader.exec_module(soakkit)
MIB, Limits, Sample, summarize = soakkit.MIB, soakkit.Limits, soakkit.Sample, soakkit.summarize

HOURS = 3
EVERY = 30
LIMITS = Limits(warmup_s=600)


def series(rss, fds=lambda t, age: 40, pid=lambda t: 1, service="svc"):
    """Samples every ``EVERY`` s for ``HOURS`` h; ``rss``/``fds`` get the time and the process's age."""
    out, born = [], {}
    for t in range(0, HOURS * 3600, EVERY):
        p = pid(t)
        born.setdefault(p, t)
        out.append(Sample(t, service, p, int(rss(t, t - born[p])), int(fds(t, t - born[p]))))
    return out


def wobble(t):
    """Allocator noise: +-8 MiB, deterministic."""
    return 8 * MIB * math.sin(t / 97.0)


def test_a_flat_process_is_bounded():
    [s] = summarize(series(lambda t, age: 400 * MIB + wobble(t)), LIMITS).values()
    assert s.verdict == "bounded", s
    assert abs(s.rss.late_slope_per_h) < 5 * MIB
    assert s.lifetimes_s == [HOURS * 3600 - EVERY]


def test_a_linear_rss_leak_grows():
    [s] = summarize(series(lambda t, age: 400 * MIB + 60 * MIB * t / 3600 + wobble(t)), LIMITS).values()
    assert s.verdict == "grows" and "RSS" in s.reasons[0]
    assert 55 * MIB < s.rss.late_slope_per_h < 65 * MIB


def test_a_file_descriptor_leak_grows():
    [s] = summarize(series(lambda t, age: 400 * MIB, fds=lambda t, age: 30 + t // 360), LIMITS).values()
    assert s.verdict == "grows" and s.reasons == [f"fds +{s.fds.late_slope_per_h:.1f}/h"]
    assert 9 < s.fds.late_slope_per_h < 11


def test_a_small_rise_under_either_rss_threshold_is_bounded():
    # 30 MiB/h on 2 GiB is over 20 MiB/h but under 10 %/h; 15 MiB/h on 100 MiB is over 10 % but under 20.
    big = series(lambda t, age: 2048 * MIB + 30 * MIB * t / 3600, service="big")
    small = series(lambda t, age: 100 * MIB + 15 * MIB * t / 3600, service="small")
    out = summarize(big + small, LIMITS)
    assert out["big"].verdict == "bounded" and out["small"].verdict == "bounded"


def test_restarts_that_load_a_model_again_are_a_bounded_sawtooth():
    # A kill every 20 min; each process climbs 500 MiB in its first 5 min, then stays flat.
    def load(t, age):
        return 100 * MIB + 500 * MIB * min(age, 300) / 300 + wobble(t)

    rows = series(load, fds=lambda t, age: 20 + min(age, 300) // 10, pid=lambda t: 1000 + t // 1200)
    [s] = summarize(rows, LIMITS).values()
    assert s.verdict == "bounded", s
    assert len(s.lifetimes_s) == HOURS * 3
    assert s.rss.peak > 590 * MIB and s.rss.first == 100 * MIB


def test_restarted_processes_that_each_leak_grow():
    rows = series(lambda t, age: 300 * MIB + 120 * MIB * age / 3600, pid=lambda t: 1000 + t // 1800)
    [s] = summarize(rows, LIMITS).values()
    assert s.verdict == "grows"
    assert 115 * MIB < s.rss.late_slope_per_h < 125 * MIB


def test_a_process_that_levels_off_is_bounded():
    # Caches fill during the first hour (+200 MiB), then nothing more.
    [s] = summarize(series(lambda t, age: 300 * MIB + 200 * MIB * min(t, 3600) / 3600), LIMITS).values()
    assert s.verdict == "bounded"
    assert s.rss.slope_per_h > s.rss.late_slope_per_h


def test_too_little_time_after_the_warm_up_is_short():
    rows = [Sample(t, "svc", 1, 300 * MIB + t * MIB, 10) for t in range(0, 900, 30)]
    [s] = summarize(rows, LIMITS).values()
    assert s.verdict == "short" and "second half" in s.reasons[0]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no soak samples"):
        summarize([], LIMITS)
    with pytest.raises(ValueError, match="warmup_s"):
        Limits(warmup_s=-1)
