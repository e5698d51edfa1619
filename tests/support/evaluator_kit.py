"""Helpers for the evaluator's integration tests: start the controller and the fake stages, talk to
the control plane, read the control topic."""

from __future__ import annotations

import json
import time

import grpc

from selfimprove.core import envelope as envelopes
from selfimprove.v2 import control_pb2, control_pb2_grpc

from .buskit import ServiceProcess, free_port, read_topic

FAST = {
    "SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "SELFIMPROVE_THREADS": "1",
    "SELFIMPROVE_LOG_JSON": "false",
}


def start_evaluator(stack, prefix, tmp_path, port: int, name: str = "evaluator", **env) -> ServiceProcess:
    proc = ServiceProcess(
        "-m selfimprove.evaluator",
        stack,
        prefix,
        tmp_path / f"{name}.log",
        SELFIMPROVE_EVALUATOR_GRPC_PORT=str(port),
        SELFIMPROVE_EVALUATOR_STARTUP_GRACE_S="2",
        **FAST,
        **env,
    )
    return proc


def start_fakes(stack, prefix, tmp_path, script: dict | None = None) -> ServiceProcess:
    return ServiceProcess(
        "fake_stages.py", stack, prefix, tmp_path / "fakes.log", FAKE_SCRIPT=json.dumps(script or {}), **FAST
    )


class Loop:
    """An evaluator and the fake stages on one topic prefix."""

    def __init__(self, stack, prefix, tmp_path, script=None, **evaluator_env) -> None:
        self.stack, self.prefix, self.tmp_path = stack, prefix, tmp_path
        self.port = free_port()
        self.fakes = start_fakes(stack, prefix, tmp_path, script)
        self.evaluator = start_evaluator(stack, prefix, tmp_path, self.port, **evaluator_env)
        self.fakes.wait_ready()
        self.evaluator.wait_ready()

    def restart_evaluator(self, **env) -> None:
        self.evaluator = start_evaluator(
            self.stack, self.prefix, self.tmp_path, self.port, name="evaluator2", **env
        )
        self.evaluator.wait_ready()

    def stub(self):
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return control_pb2_grpc.ControlPlaneServiceStub(channel)

    def start(self, config: str, run_id: str = "") -> control_pb2.StartRunResponse:
        return self.stub().StartRun(
            control_pb2.StartRunRequest(config_yaml=config, run_id=run_id), timeout=60
        )

    def status(self, run_id: str) -> control_pb2.RunStatus:
        return self.stub().GetRunStatus(control_pb2.GetRunStatusRequest(run_id=run_id), timeout=10).status

    def wait_done(self, run_id: str, timeout: float = 120) -> control_pb2.RunStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = self.status(run_id)
                if status.state != "running":
                    return status
            except grpc.RpcError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"run {run_id} did not finish: {self.evaluator.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.evaluator.stop()
        self.fakes.stop()


async def control_events(stack, prefix: str, expect: int = 10_000, timeout: float = 5.0):
    records = await read_topic(stack.kafka_bootstrap, f"{prefix}.evt.control", expect, timeout)
    return [envelopes.decode(r.value) for r in records]


async def topic_events(stack, topic: str, expect: int = 10_000, timeout: float = 3.0):
    return [
        envelopes.decode(r.value) for r in await read_topic(stack.kafka_bootstrap, topic, expect, timeout)
    ]


def metric(proc: ServiceProcess, name: str, **labels: str) -> float:
    """Sum of a metric's samples (with or without labels) on a service's /metrics."""
    total = 0.0
    for line in proc.metrics().splitlines():
        head = line.split(" ", 1)[0]
        if (head == name or head.startswith(name + "{")) and all(
            f'{k}="{v}"' in head for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total
