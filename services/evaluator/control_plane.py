"""The control plane: gRPC ``selfimprove.v1.ControlPlaneService`` plus the standard health service.

``StartRun`` validates the config, publishes a ``run_control`` start event on the control topic (the
run's own log) and waits until the controller has applied it; an existing run id resumes that run.
``StopRun`` publishes a stop event the same way. Status calls read the controller's memory.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from selfimprove.core import envelope as envelopes
from selfimprove.core.keys import check_name
from selfimprove.evaluator.config import ConfigError, dump_config, load_config
from selfimprove.evaluator.controller import Controller
from selfimprove.evaluator.snapshot import snapshot_key
from selfimprove.evaluator.status import run_status
from selfimprove.v1 import control_pb2, control_pb2_grpc
from selfimprove.v1.common_pb2 import Stage
from selfimprove.v1.stages_pb2 import RunControl

log = logging.getLogger(__name__)
SERVICE = "selfimprove.v1.ControlPlaneService"
APPLY_TIMEOUT_S = 30.0


class ControlPlane(control_pb2_grpc.ControlPlaneServiceServicer):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    async def _publish(self, run_id: str, control: RunControl) -> str:
        env = envelopes.make(
            run_id=run_id,
            iteration=0,
            stage=Stage.STAGE_CONTROL,
            producer="evaluator/control-plane",
            run_control=control,
        )
        await self.controller.bus.publish(self.controller.bus.topics.control, env, run_id)
        return env.event_id

    async def _applied(self, run_id: str, event_id: str, context) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPLY_TIMEOUT_S
        while loop.time() < deadline:
            state = self.controller.runs.get(run_id)
            if state is not None and event_id in state.applied:
                return
            await asyncio.sleep(0.02)
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"run {run_id}: the controller did not apply the request in time",
        )

    async def StartRun(self, request, context):  # noqa: N802 (gRPC names)
        try:
            cfg = load_config(request.config_yaml)
            run_id = check_name("run id", request.run_id or cfg.run_id or f"run-{uuid.uuid4().hex[:8]}")
        except (ConfigError, ValueError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        resumed = run_id in self.controller.runs
        if not resumed and await asyncio.to_thread(self.controller.store.exists, snapshot_key(run_id)):
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS, f"run id {run_id!r} is taken by another deployment"
            )
        if resumed:
            config_yaml = self.controller.runs[run_id].config_yaml
        else:
            config_yaml = dump_config(cfg.model_copy(update={"run_id": run_id}))
        event_id = await self._publish(
            run_id, RunControl(action=RunControl.ACTION_START, config_yaml=config_yaml)
        )
        await self._applied(run_id, event_id, context)
        log.info("run %s %s", run_id, "resumed" if resumed else "started")
        return control_pb2.StartRunResponse(run_id=run_id, resumed=resumed)

    async def StopRun(self, request, context):  # noqa: N802
        if request.run_id not in self.controller.runs:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id!r}")
        event_id = await self._publish(
            request.run_id, RunControl(action=RunControl.ACTION_STOP, reason=request.reason)
        )
        await self._applied(request.run_id, event_id, context)
        return control_pb2.StopRunResponse(state=self.controller.runs[request.run_id].status)

    async def GetRunStatus(self, request, context):  # noqa: N802
        state = self.controller.runs.get(request.run_id)
        if state is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id!r}")
        return control_pb2.GetRunStatusResponse(status=run_status(state))

    async def ListRuns(self, request, context):  # noqa: N802
        runs = sorted(self.controller.runs.values(), key=lambda s: s.started_at)
        return control_pb2.ListRunsResponse(runs=[run_status(s) for s in runs])


async def start_server(controller: Controller, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Serve the control plane and health; return the server and its bound port."""
    server = grpc.aio.server()
    control_pb2_grpc.add_ControlPlaneServiceServicer_to_server(ControlPlane(controller), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the control plane to {host}:{port}")
    await server.start()
    for name in ("", SERVICE):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound
