"""The doctests of the benchmark scripts' pure helpers (the scripts are files, not a package)."""

import doctest
import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize(
    "name",
    [
        "data_volume",
        "dev_breakdown",
        "format_yield",
        "framing",
        "interim_looks",
        "kept_by_category",
        "worked_steps",
        "worked_yield",
        "loop_training",
        "next_iteration",
        "reselect",
        "storekit",
        "substep_curriculum",
        "suitekit",
    ],
)
def test_doctests(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their kits by file name
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
