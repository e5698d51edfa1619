import pytest

from selfimprove.runtime.stats import accuracy, mcnemar, paired_bootstrap, wilson

pytestmark = pytest.mark.unit


def test_wilson_bounds():
    low, high = wilson(200, 200)
    assert 0.98 < low < 1 and high == pytest.approx(1.0)
    low, high = wilson(0, 50)
    assert low == pytest.approx(0.0) and 0.05 < high < 0.08


def test_accuracy_interval_contains_value():
    a = accuracy([True] * 30 + [False] * 70)
    assert a.low < a.value == 0.3 < a.high


def test_mcnemar_identical_models():
    outcomes = [True, False] * 20
    r = mcnemar(outcomes, outcomes)
    assert r.delta == 0 and r.p_value == 1.0


def test_paired_tests_agree_on_a_clear_win():
    a = [False] * 60 + [True] * 40
    b = [True] * 30 + [False] * 30 + [True] * 40
    exact, boot = mcnemar(a, b), paired_bootstrap(a, b)
    assert exact.delta == boot.delta == 0.3
    assert exact.p_value < 0.001 and boot.p_value < 0.01 and boot.low > 0


def test_paired_needs_equal_lengths():
    with pytest.raises(ValueError):
        mcnemar([True], [True, False])
