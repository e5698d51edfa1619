"""Shared fixtures of every suite and the benchmarks (registered by the root ``conftest.py``). The
local stack (object store + broker) is started once per session, on loopback with free ports, and
only by tests that ask for it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from selfimprove.core.stack import LocalStack, prometheus_bin


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """SeaweedFS (S3) and Tansu (Kafka) for the whole session; no Prometheus (see ``prometheus``)."""
    with LocalStack(root=tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture(scope="session")
def prometheus(stack: LocalStack) -> str:
    """Prometheus on the session stack (started on first use); its URL. ``make test`` installs it."""
    if prometheus_bin() is None:
        pytest.fail("prometheus is not installed: run `make system-deps` (Debian package prometheus)")
    return stack.start_prometheus()


@pytest.fixture
def unique_name() -> str:
    """A fresh short name for topics, groups and key prefixes: ``t`` + 10 hex digits."""
    return "t" + uuid.uuid4().hex[:10]
