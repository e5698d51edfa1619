"""The control plane: gRPC ``selfimprove.v2.ControlPlaneService`` plus the standard health service.

``StartRun`` validates the config, publishes a ``run_control`` start event on the control topic (the
run's own log) and waits until the controller has applied it; an existing run id resumes that run.
``StopRun`` publishes a stop event the same way. Status calls read the controller's memory.
The server (``core.grpcserve``) caps request size, may serve TLS, checks credentials when a guard is
given (status calls need ``read``, starting and stopping ``control``: ``core.auth``) and rate-limits
every call but health.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import grpc

from selfimprove.core import envelope as envelopes
from selfimprove.core.grpcserve import RunningServer, TokenBucket, serve
from selfimprove.core.guard import Guard
from selfimprove.core.keys import check_name
from selfimprove.evaluator.commands import STAGE_ENUM
from selfimprove.evaluator.config import ConfigError, dump_config, load_config
from selfimprove.evaluator.controller import Controller
from selfimprove.evaluator.snapshot import snapshot_key
from selfimprove.evaluator.state import RunState
from selfimprove.evaluator.status import run_status
from selfimprove.v2 import control_pb2, control_pb2_grpc
from selfimprove.v2.common_pb2 import Stage
from selfimprove.v2.stages_pb2 import RunControl

log = logging.getLogger(__name__)
SERVICE = "selfimprove.v2.ControlPlaneService"
APPLY_TIMEOUT_S = 30.0
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024  # run configs are a few KiB


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
            cfg = load_config(request.config_yaml, files=False)
            run_id = check_name("run id", request.run_id or cfg.run_id or f"run-{uuid.uuid4().hex[:8]}")
            if run_id not in self.controller.runs:  # a new run: the files it names must be readable here
                cfg = load_config(request.config_yaml)
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
        return control_pb2.GetRunStatusResponse(status=self._status(state))

    async def ListRuns(self, request, context):  # noqa: N802
        runs = sorted(self.controller.runs.values(), key=lambda s: s.started_at)
        return control_pb2.ListRunsResponse(runs=[self._status(s) for s in runs])

    def _status(self, state: RunState):
        """The run's status with its current stage's progress (while it is running)."""
        board = self.controller.progress
        stage = STAGE_ENUM.get(state.stage, 0)
        current = board.current(state.run_id, state.iteration, stage) if state.active else []
        return run_status(state, current)


async def start_server(
    controller: Controller,
    host: str,
    port: int,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    tls: tuple[bytes, bytes] | None = None,
    rate_limit: TokenBucket | None = None,
    on_rate_limited: Callable[[str], None] | None = None,
    client_ca: bytes | None = None,
    guard: Guard | None = None,
) -> RunningServer:
    """Serve the control plane and health (``core.grpcserve``); the result holds the bound port.

    ``rate_limit`` applies to every control-plane call (``RESOURCE_EXHAUSTED`` "rate limit: ..."),
    never to health; a request over ``max_request_bytes`` is refused with ``RESOURCE_EXHAUSTED``.
    """
    return await serve(
        [(control_pb2_grpc.add_ControlPlaneServiceServicer_to_server, ControlPlane(controller))],
        host,
        port,
        health_names=[SERVICE],
        max_request_bytes=max_request_bytes,
        tls=tls,
        rate_limit=rate_limit,
        on_rate_limited=on_rate_limited,
        client_ca=client_ca,
        guard=guard,
    )
