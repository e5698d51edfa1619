"""Every deployment manifest runs what the code has: each Kubernetes overlay (rendered with ``kubectl
kustomize``), the compose file (alone and with the GPU override, rendered with ``docker-compose
config``), both Dockerfiles and ``.env.example``. A container's command must be a ``selfimprove`` CLI
command or a ``python -m`` entry point; no manifest may set a ``SELFIMPROVE_*`` variable that no code
reads; every setting without a default must be set where a service reading it runs (the checks:
tests/support/manifest_check.py). And the compose file plans as local processes (every service has a
local stand-in or a command, every long-running one a healthcheck, nothing mounted from outside the
repository): the plan tests/e2e/test_compose_processes.py runs. Fast: no model, no stack."""

from __future__ import annotations

import itertools

import pytest

from tests.support import dockerfile
from tests.support.compose_plan import Addresses, plan
from tests.support.deploykit import (
    BIN,
    COMPOSE_SETS,
    DOCKER,
    OURS,
    OVERLAYS,
    ROOT,
    compose_images,
    k8s_image,
    local_copy,
    render_compose,
    render_overlay,
)
from tests.support.manifest_check import (
    check_containers,
    code_facts,
    compose_containers,
    configmap_problems,
    dockerfile_problems,
    env_example_problems,
    k8s_containers,
    namespace_problems,
)

pytestmark = pytest.mark.integration


def report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_overlay_runs_existing_commands_and_reads_every_variable(overlay: str) -> None:
    docs = render_overlay(overlay)
    where = f"deploy/k8s/overlays/{overlay}"
    containers = k8s_containers(docs, where, k8s_image)
    assert [c for c in containers if OURS.search(c.image)], f"{where}: no container runs a selfimprove image"
    facts = code_facts()
    problems = check_containers(containers, facts, OURS) + configmap_problems(docs, where, facts)
    assert not problems, report(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_an_overlay_lands_in_one_namespace(overlay: str) -> None:
    problems = namespace_problems(render_overlay(overlay), f"deploy/k8s/overlays/{overlay}")
    assert not problems, report(problems)


@pytest.mark.parametrize("files", COMPOSE_SETS.values(), ids=COMPOSE_SETS.keys())
def test_compose_runs_existing_commands_and_reads_every_variable(files: tuple[str, ...]) -> None:
    config = render_compose(files)
    containers = compose_containers(config, " + ".join(files), compose_images(config))
    problems = check_containers(containers, code_facts(), OURS)
    assert not problems, report(problems)


def test_dockerfiles_and_env_example_set_no_dead_variable() -> None:
    facts = code_facts()
    problems = []
    for path in sorted(DOCKER.glob("Dockerfile*")):
        image = dockerfile.parse(path.read_text())
        problems += dockerfile_problems(str(path.relative_to(ROOT)), image, facts)
    composes = [(ROOT / f).read_text() for f in COMPOSE_SETS["gpu"]]
    problems += env_example_problems(".env.example", (ROOT / ".env.example").read_text(), composes)
    assert not problems, report(problems)


@pytest.mark.parametrize("files", COMPOSE_SETS.values(), ids=COMPOSE_SETS.keys())
def test_compose_plans_as_local_processes(files: tuple[str, ...], tmp_path) -> None:
    config = render_compose(files)
    ports = {k: int(s.default) for k, s in code_facts().settings.items() if k.endswith("_PORT") and s.default}
    local = Addresses("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
    steps = plan(
        config, compose_images(config), local, ports, itertools.count(20000), BIN, tmp_path, ROOT, local_copy
    )
    kinds = {s.name: s.kind for s in steps}
    assert "service" in kinds.values() and set(kinds) == set(config["services"])
    for step in steps:
        for value in step.env.values():  # no compose name left: every address is a local one
            assert not any(f"{name}:" in value for name in config["services"]), (step.name, value)
