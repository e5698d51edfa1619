"""docker-compose.yml run without Docker: every service on one of our images becomes a local process
from the project's venv, with its compose ``command`` and ``environment`` (compose names mapped to the
local stack: Tansu for Kafka, SeaweedFS for the S3 gateway, Prometheus), in ``depends_on`` order. The
one-shot jobs must exit 0, every long-running service must pass its own compose healthcheck, and a
small run started through the compose file's evaluator (``selfimprove run --address``) completes one
iteration with the real model. The infrastructure services are named with what replaces them.

    .venv/bin/pytest -m e2e tests/e2e/test_compose_processes.py --timeout=1800 -s
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from selfimprove.core.procs import free_ports
from selfimprove.core.stack import LocalStack
from tests.support.compose_plan import Addresses, plan
from tests.support.compose_runner import ComposeProcesses, base_env, wait_for
from tests.support.deploykit import BIN, ROOT, compose_images, local_copy, render_compose
from tests.support.manifest_check import code_facts

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 1500
CONFIG = ROOT / "configs" / "small.yaml"  # one iteration, a few prompts


def compose_setting(config: dict, var: str) -> str:
    """The value every service of ours that sets ``var`` gives it (they must agree)."""
    values = {
        str(s["environment"][var]) for s in config["services"].values() if var in (s.get("environment") or {})
    }
    assert len(values) == 1, f"services disagree on {var}: {values}"
    return values.pop()


def targets_up(prometheus_url: str, expected: int) -> bool:
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/targets", timeout=5) as response:
        active = json.load(response)["data"]["activeTargets"]
    return len(active) == expected and all(t["health"] == "up" for t in active)


def test_the_compose_file_runs_as_processes_and_completes_an_iteration(tmp_path, unique_name) -> None:
    config = render_compose(("docker-compose.yml",))
    images = compose_images(config)
    facts = code_facts()
    ports = {k: int(s.default) for k, s in facts.settings.items() if k.endswith("_PORT") and s.default}
    stack = LocalStack(
        root=tmp_path / "stack",
        access_key=compose_setting(config, "SELFIMPROVE_S3_ACCESS_KEY"),
        secret_key=compose_setting(config, "SELFIMPROVE_S3_SECRET_KEY"),
        bucket=compose_setting(config, "SELFIMPROVE_S3_BUCKET"),
        prometheus=True,
    )
    with stack:
        assert stack.prometheus_url
        local = Addresses(
            stack.kafka_bootstrap, stack.s3_endpoint, stack.prometheus_url.removeprefix("http://")
        )
        scratch = tmp_path / "scratch"
        steps = plan(config, images, local, ports, iter(free_ports(64)), BIN, scratch, ROOT, local_copy)
        for step in steps:  # what replaces each infrastructure service, for the log
            print(
                f"{step.name}: {step.kind}"
                + (f" -> {step.note}" if step.note else f": {' '.join(step.argv)}")
            )
        services = [s for s in steps if s.kind == "service"]
        jobs = [s for s in steps if s.kind == "job"]
        assert services and jobs, "expected long-running services and one-shot jobs on our images"
        with ComposeProcesses(steps, tmp_path / "logs", base_env(BIN), scratch) as procs:
            procs.up()
            assert procs.completed == {s.name for s in jobs}
            assert procs.healthy == {s.name for s in services}
            stack.set_prometheus_targets(
                [f"127.0.0.1:{s.ports['SELFIMPROVE_METRICS_PORT']}" for s in services]
            )

            controller = [s for s in services if s.argv[1:3] == ["-m", "selfimprove.evaluator"]]
            assert len(controller) == 1, "the compose file runs one evaluator controller"
            address = f"127.0.0.1:{controller[0].ports['SELFIMPROVE_EVALUATOR_GRPC_PORT']}"
            run_id = f"compose-{unique_name}"
            done = subprocess.run(
                [str(BIN / "selfimprove"), "run", "--config", str(CONFIG), "--address", address]
                + ["--run-id", run_id, "--json", "--no-report"],
                env=base_env(BIN),
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
                check=False,
            )
            assert done.returncode == 0, f"selfimprove run failed:\n{done.stderr[-4000:]}"
            summary = json.loads(done.stdout)
            assert summary["state"] == "completed", summary
            assert summary["iteration"] >= 1 and len(summary["accuracy"]) >= 1, summary
            assert not procs.dead(), f"service processes died: {procs.dead()}"
            wait_for(
                lambda: targets_up(str(stack.prometheus_url), len(services)),
                60,
                "Prometheus scraping every service",
            )
