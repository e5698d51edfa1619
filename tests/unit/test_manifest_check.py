"""The manifest checker (tests/support/manifest_check.py) catches what a deployment would only show at
start-up: a renamed command, a module without an entry point, a variable no code reads, a setting
without a default left unset. Fake manifests, the real code facts (settings classes, the CLI)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from tests.support import dockerfile
from tests.support.manifest_check import (
    CodeFacts,
    Setting,
    check_containers,
    code_facts,
    compose_containers,
    configmap_problems,
    dockerfile_problems,
    k8s_containers,
)

pytestmark = pytest.mark.unit

OURS = re.compile(r"(^|/)selfimprove([/-]|$)")


def deployment(command: list[str], env: dict[str, str] | None = None, init: list[str] | None = None) -> dict:
    """A rendered Deployment of one of our images, with an optional init container."""
    container = {
        "name": "trainer",
        "image": "selfimprove/trainer:latest",
        "command": command,
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
    }
    pod: dict = {"containers": [container]}
    if init:
        pod["initContainers"] = [{"name": "prepare", "image": "selfimprove/trainer:latest", "command": init}]
    return {"kind": "Deployment", "metadata": {"name": "trainer"}, "spec": {"template": {"spec": pod}}}


def configmap(**data: str) -> dict:
    return {"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": data}


def problems_of(docs: list[dict], facts: CodeFacts | None = None) -> list[str]:
    facts = facts or code_facts()
    return check_containers(k8s_containers(docs, "fake", None), facts, OURS) + configmap_problems(
        docs, "fake", facts
    )


def test_a_manifest_of_existing_commands_and_read_variables_passes() -> None:
    docs = [
        configmap(SELFIMPROVE_KAFKA_BOOTSTRAP_SERVERS="kafka:9092", SELFIMPROVE_S3_SECRET_KEY_FILE="/s/key"),
        deployment(
            ["python", "-m", "selfimprove.trainer"],
            {"SELFIMPROVE_TRAINER_CHECKPOINT_EVERY": "5", "SELFIMPROVE_BENCHMARKS_DIR": "/b"},
            init=["selfimprove", "init", "store", "--wait-s", "30"],
        ),
    ]
    assert problems_of(docs) == []


def test_a_renamed_cli_command_is_reported_by_name() -> None:
    problems = problems_of(
        [
            configmap(),
            deployment(["python", "-m", "selfimprove.trainer"], init=["selfimprove", "models", "pull"]),
        ]
    )
    assert len(problems) == 1
    assert "container prepare" in problems[0] and "`selfimprove models` does not exist" in problems[0]


def test_an_unknown_option_and_a_missing_subcommand_are_reported() -> None:
    problems = problems_of(
        [
            configmap(),
            deployment(["selfimprove", "init"]),
            deployment(["selfimprove", "run", "--engine", "x"]),
        ]
    )
    assert "`selfimprove init` needs a subcommand" in problems[0]
    assert "No such option: --engine" in problems[1]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["python", "-m", "selfimprove.trainers"], "no module selfimprove.trainers"),
        (["python", "-m", "selfimprove.core"], "package selfimprove.core has no __main__.py"),
        (["python", "-m", "selfimprove.core.settings"], "has no `if __name__"),
        (["/bin/sh", "-c", "exec python -m selfimprove.trainerx"], "no module selfimprove.trainerx"),
        (["train-forever"], "neither the selfimprove CLI nor a python module"),
    ],
)
def test_a_module_without_an_entry_point_is_reported(command: list[str], expected: str) -> None:
    problems = problems_of([configmap(), deployment(command)])
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_dead_variable_is_reported_in_the_container_and_the_configmap() -> None:
    docs = [
        configmap(SELFIMPROVE_ENGINE="vllm", SELFIMPROVE_LOG_LEVEL="INFO"),
        deployment(["python", "-m", "selfimprove.trainer"], {"SELFIMPROVE_GPU_MEMORY_UTILIZATION": "0.2"}),
    ]
    problems = problems_of(docs)
    assert problems == [
        "fake Deployment/trainer container trainer: sets SELFIMPROVE_GPU_MEMORY_UTILIZATION, which no code "
        "reads (a dead variable)",
        "fake ConfigMap/settings: sets SELFIMPROVE_ENGINE, which no code reads (a dead variable)",
    ]


def test_a_variable_its_own_shell_command_reads_is_not_dead() -> None:
    command = ["/bin/sh", "-c", 'exec python -m "$SELFIMPROVE_SERVICE_MODULE"']
    env = {"SELFIMPROVE_SERVICE_MODULE": "selfimprove.trainer"}
    assert problems_of([configmap(), deployment(command, env)]) == []
    env = {"SELFIMPROVE_SERVICE_MODULE": "selfimprove.trainr"}
    assert "no module selfimprove.trainr" in problems_of([configmap(), deployment(command, env)])[0]


def test_a_setting_without_a_default_must_be_set_where_its_service_runs() -> None:
    real = code_facts()
    token = Setting("SELFIMPROVE_TRAINER_TOKEN", "trainer", True, "fake.TrainerSettings")
    other = Setting("SELFIMPROVE_SELECTION_TOKEN", "selection", True, "fake.SelectionSettings")
    facts = dataclasses.replace(real, settings={**real.settings, token.var: token, other.var: other})
    problems = problems_of([configmap(), deployment(["python", "-m", "selfimprove.trainer"])], facts)
    assert problems == [
        "fake Deployment/trainer container trainer: does not set SELFIMPROVE_TRAINER_TOKEN, a setting "
        "without a default (fake.TrainerSettings)"
    ]
    assert (
        problems_of(
            [configmap(SELFIMPROVE_TRAINER_TOKEN="t"), deployment(["python", "-m", "selfimprove.trainer"])],
            facts,
        )
        == []
    )


def test_compose_services_are_checked_the_same_way() -> None:
    config = {
        "services": {
            "kafka": {"image": "apache/kafka:4.1.0", "command": ["/etc/kafka/run"]},
            "trainer": {
                "image": "selfimprove/trainer:latest",
                "command": ["python", "-m", "selfimprove.trainer"],
                "environment": {"SELFIMPROVE_ENGINE": "vllm", "SELFIMPROVE_THREADS": "2"},
                "healthcheck": {"test": ["CMD-SHELL", "curl localhost:$$SELFIMPROVE_HEALTH_PORT"]},
            },
            "seed": {"image": "selfimprove/evaluator:latest", "command": ["selfimprove", "models", "upload"]},
        }
    }
    config["services"]["trainer"]["environment"]["SELFIMPROVE_HEALTH_PORT"] = "9100"
    problems = check_containers(compose_containers(config, "compose", {}), code_facts(), OURS)
    assert problems == [
        "compose service seed: `selfimprove models` does not exist (commands: "
        + ", ".join(sorted(code_facts().cli.commands))
        + ")",
        "compose service trainer: sets SELFIMPROVE_ENGINE, which no code reads (a dead variable)",
    ]


def test_a_compose_service_without_a_command_runs_its_image_default() -> None:
    text = (
        "FROM python AS runtime\nARG SERVICE=evaluator\nENV SELFIMPROVE_SERVICE_MODULE=selfimprove.${SERVICE}\n"
        'CMD ["/bin/sh", "-c", "exec python -m \\"${SELFIMPROVE_SERVICE_MODULE}\\""]\n'
    )
    config = {
        "services": {"trainer": {"image": "selfimprove/trainer"}, "nope": {"image": "selfimprove/nope"}}
    }
    images = {
        "trainer": dockerfile.parse(text, {"SERVICE": "trainer"}),
        "nope": dockerfile.parse(text, {"SERVICE": "nope"}),
    }
    problems = check_containers(compose_containers(config, "compose", images), code_facts(), OURS)
    assert problems == ["compose service nope: no module selfimprove.nope (no services/nope.py or package)"]


def test_a_dockerfile_env_nothing_reads_is_reported_unless_its_command_reads_it() -> None:
    text = (
        "FROM python\nENV SELFIMPROVE_ENGINE=vllm \\\n    SELFIMPROVE_SERVICE_MODULE=selfimprove.trainer \\\n"
        '    SELFIMPROVE_THREADS=4\nCMD ["/bin/sh", "-c", "exec python -m \\"$SELFIMPROVE_SERVICE_MODULE\\""]\n'
    )
    assert dockerfile_problems("Dockerfile", dockerfile.parse(text), code_facts()) == [
        "Dockerfile: sets SELFIMPROVE_ENGINE, which no code reads (a dead variable)"
    ]
