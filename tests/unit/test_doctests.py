"""Run the doctests of the pure modules (the examples in docstrings are tests too)."""

import doctest
import importlib

import pytest

pytestmark = pytest.mark.unit

MODULES = [
    "selfimprove.core.envelope",
    "selfimprove.core.grpcserve",
    "selfimprove.core.settings",
    "selfimprove.core.keys",
    "selfimprove.core.kafka_config",
    "selfimprove.core.retry",
    "selfimprove.core.topics",
    "selfimprove.core.stage",
    "selfimprove.runtime.adapters",
    "selfimprove.runtime.policy",
    "selfimprove.runtime.tasks.arithmetic",
    "selfimprove.runtime.tasks.base",
    "selfimprove.runtime.tasks.worked",
    "selfimprove.cli.report",
    "selfimprove.cli.modelref",
    "selfimprove.cli.control",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no doctests"
    assert result.failed == 0
