"""The deployment files (deploy/, docker-compose*.yml) validate offline and keep the project's contracts:
``deploy/check.sh`` passes, every Deployment is probed, bounded and non-root, every compose service has a
health check, and the KEDA triggers, topics and PromQL use the names the code uses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfimprove.core.topics import STAGES, Topics
from selfimprove.v2.common_pb2 import Stage

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVICES = {"acquisition", "selection", "trainer", "refinement", "evaluator", "evaluator-worker"}
GPU_SERVICES = {
    "acquisition": "acquire",
    "trainer": "train",
    "refinement": "refine",
    "evaluator-worker": "evaluate",
}
GRPC_PORTS = {"refinement": 50051, "evaluator": 50052}
# Every metric the services export (services/core/metrics.py and the evaluator's loop metrics).
METRICS = {
    "selfimprove_last_progress_timestamp_seconds",
    "selfimprove_iteration",
    "selfimprove_stage",
    "selfimprove_incumbent_accuracy",
    "selfimprove_candidate_accuracy",
    "selfimprove_promotions_total",
    "selfimprove_rejections_total",
    "selfimprove_stage_failures_total",
    "selfimprove_stage_retries_total",
    "selfimprove_stage_duration_seconds",
    "selfimprove_dlq_messages_total",
    "selfimprove_consumer_lag",
    "selfimprove_service_up",
    "selfimprove_messages_consumed_total",
    "selfimprove_messages_published_total",
    "selfimprove_handler_seconds",
    "selfimprove_generation_tokens_per_second",
    "selfimprove_training_tokens_per_second",
    "selfimprove_data_yield",
}


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: install the test extra (make install)")
    return str(path)


def _render(overlay: str) -> list[dict]:
    out = subprocess.run(
        [_tool("kubectl"), "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _compose(*files: str) -> dict:
    args = [a for f in files for a in ("-f", str(ROOT / f))]
    out = subprocess.run(
        [_tool("docker-compose"), "--env-file", os.devnull, *args, "config", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return json.loads(out)


def test_check_script_passes() -> None:
    env = {**os.environ, "VENV": str(BIN.parent)}
    run = subprocess.run(
        ["bash", str(ROOT / "deploy/check.sh")], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, f"deploy/check.sh failed:\n{run.stdout}\n{run.stderr}"
    assert "all deployment checks passed" in run.stdout


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_every_deployment_is_probed_bounded_and_non_root(overlay: str) -> None:
    docs = _render(overlay)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == SERVICES
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        mounts_by_volume = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, c["name"], kind)
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            for path in ("/tmp", "/cache"):
                assert "emptyDir" in mounts_by_volume[mounts[path]], (name, path)
            refs = {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in c["env"]
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            assert refs == {"selfimprove-credentials"}, name
        main = pod["containers"][0]
        assert main["livenessProbe"]["httpGet"]["path"] == "/health", name
        assert main["startupProbe"]["httpGet"]["path"] == "/health", name
        if name in GRPC_PORTS:
            assert main["readinessProbe"]["grpc"]["port"] == GRPC_PORTS[name], name
        else:
            assert main["readinessProbe"]["httpGet"]["path"] == "/health", name
    # The Secret is referenced, never rendered with values.
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_gpu_overlay_puts_gpu_services_on_gpus_and_scales_them_on_their_command_lag() -> None:
    docs = _render("gpu")
    settings = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    topics = Topics(settings["SELFIMPROVE_KAFKA_TOPIC_PREFIX"])
    by_stage = {name: stage for stage, name in STAGES.items()}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    assert set(scaled) == set(GPU_SERVICES)
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        name = d["metadata"]["name"]
        pod = d["spec"]["template"]["spec"]
        main = pod["containers"][0]
        if name in GPU_SERVICES:
            assert main["resources"]["limits"]["nvidia.com/gpu"] == 1, name
            assert pod["nodeSelector"] and pod["tolerations"], name
            assert main["image"].endswith("-cuda"), name
            trigger = scaled[name]["spec"]["triggers"][0]
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            assert meta["consumerGroup"] == f"{topics.prefix}.{name}"
            assert meta["topic"] == topics.command(by_stage[GPU_SERVICES[name]])
            assert meta["bootstrapServers"] == settings["SELFIMPROVE_KAFKA_BOOTSTRAP_SERVERS"]
        else:
            assert "nvidia.com/gpu" not in main["resources"]["limits"], name
            assert not main["image"].endswith("-cuda"), name


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.gpu.yml")])
def test_every_compose_service_has_a_healthcheck(files: tuple[str, ...]) -> None:
    services = _compose(*files)["services"]
    assert set(services) >= SERVICES
    for name, svc in services.items():
        if svc.get("restart") == "no":  # one-shot init containers
            continue
        assert svc.get("healthcheck") and not svc["healthcheck"].get("disable"), name
    for name in SERVICES:
        svc = services[name]
        assert svc["read_only"] is True and svc["user"] == "10001:10001", name
        conditions = {dep: spec["condition"] for dep, spec in svc["depends_on"].items()}
        assert conditions == dict.fromkeys(
            ["kafka-init", "minio-init", "models-pull"], "service_completed_successfully"
        )
    if "docker-compose.gpu.yml" in files:
        for name in GPU_SERVICES:
            devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
            assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name


def test_kafka_init_creates_every_topic_of_the_loop() -> None:
    script = "\n".join(_compose("docker-compose.yml")["services"]["kafka-init"]["command"])
    stages = re.search(r"for stage in ([a-z ]+); do", script)
    assert stages and stages.group(1).split() == list(STAGES.values())
    assert "for kind in cmd evt" in script and ".evt.control" in script and ".dlq" in script
    assert Topics().control == "selfimprove.evt.control" and Stage.STAGE_ACQUIRE in STAGES


def test_prometheus_scrapes_every_service_and_promql_uses_known_metrics() -> None:
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in prom["scrape_configs"]
    }
    for name in SERVICES:
        assert targets[name] == [f"{name}:9100"]
    rules = (ROOT / "deploy/prometheus/rules.yml").read_text()
    dashboard = (ROOT / "deploy/grafana/dashboards/selfimprove-loop-health.json").read_text()
    used = set(re.findall(r"selfimprove_[a-z_]+", rules + dashboard))
    used = {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
    assert used <= METRICS, f"unknown metric names: {sorted(used - METRICS)}"
    for needed in (
        "selfimprove_last_progress_timestamp_seconds",
        "selfimprove_dlq_messages_total",
        "selfimprove_consumer_lag",
        "selfimprove_stage_failures_total",
        "selfimprove_incumbent_accuracy",
    ):
        assert needed in rules, needed
