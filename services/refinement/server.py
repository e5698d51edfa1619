"""``selfimprove.v2.RefinementService`` over ``grpc.aio``: limits, rate limit, the strategy, health.

Each request takes the current :class:`~.served.Served` snapshot, checks the limits (an
``INVALID_ARGUMENT`` naming the limit) and runs the strategy in a worker thread; the server's rate
limit is the shared interceptor of ``core.grpcserve`` (``RESOURCE_EXHAUSTED``, counted in the
request metrics), as is the credential check when a guard is given (both methods need ``read``). ``GenerateStream`` sends the text in chunks once the strategy
has finished (strategies such as self-consistency only know their answer at the end), then a final
message with the usage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import grpc

from selfimprove.core import compute
from selfimprove.core.grpcserve import RunningServer, TokenBucket, serve
from selfimprove.core.guard import Guard
from selfimprove.refinement import answering
from selfimprove.refinement.limits import Limits
from selfimprove.refinement.metrics import RefinementMetrics
from selfimprove.refinement.served import ServedModel
from selfimprove.runtime import strategies
from selfimprove.v2 import refinement_pb2 as pb
from selfimprove.v2 import refinement_pb2_grpc as pb_grpc

SERVICE_NAME = "selfimprove.v2.RefinementService"
STREAM_CHUNK = 16  # characters per streamed delta


class RefinementServicer(pb_grpc.RefinementServiceServicer):
    def __init__(
        self,
        model: ServedModel,
        limits: Limits,
        sampling: strategies.Settings,
        metrics: RefinementMetrics | None = None,
    ) -> None:
        self.model, self.limits, self.sampling = model, limits, sampling
        self.metrics = metrics

    async def Generate(self, request: pb.GenerateRequest, context) -> pb.GenerateResponse:  # noqa: N802
        return await self._answer(request, context, "Generate")

    async def GenerateStream(  # noqa: N802
        self, request: pb.GenerateStreamRequest, context
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        final = await self._answer(request.request, context, "GenerateStream")
        for i in range(0, len(final.text), STREAM_CHUNK):
            yield pb.GenerateStreamResponse(text_delta=final.text[i : i + STREAM_CHUNK])
        yield pb.GenerateStreamResponse(final=final)

    async def _answer(self, request: pb.GenerateRequest, context, method: str) -> pb.GenerateResponse:
        served = self.model.current()
        name = request.strategy or served.strategy
        start = time.perf_counter()
        code = "OK"
        try:
            ask = answering.Ask(
                request.prompt,
                request.strategy,
                request.max_new_tokens or None,
                request.temperature or None,
                seed=request.seed or None,
            )
            try:
                admitted = answering.plan(served, ask, self.limits, self.sampling)
            except ValueError as exc:  # a LimitError or a strategy that cannot be served
                code = "INVALID_ARGUMENT"
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            reply = await compute.run(answering.answer, admitted)
            if self.metrics is not None:
                self.metrics.generated(reply.completion_tokens, reply.seconds)
            return pb.GenerateResponse(
                text=reply.text,
                answer=reply.answer,
                strategy=reply.strategy,
                model_version=reply.model_version,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                seconds=time.perf_counter() - start,
            )
        except Exception:
            code = "INTERNAL" if code == "OK" else code  # an abort already named its code
            raise
        finally:
            if self.metrics is not None:
                self.metrics.request(method, name, code, time.perf_counter() - start)


async def start_server(
    servicer: RefinementServicer,
    host: str,
    port: int,
    max_request_bytes: int,
    tls: tuple[bytes, bytes] | None = None,
    rate_limit: TokenBucket | None = None,
    on_rate_limited: Callable[[str], None] | None = None,
    client_ca: bytes | None = None,
    guard: Guard | None = None,
) -> RunningServer:
    """Start the gRPC server with the refinement and health services (``core.grpcserve``)."""
    return await serve(
        [(pb_grpc.add_RefinementServiceServicer_to_server, servicer)],
        host,
        port,
        health_names=[SERVICE_NAME],
        max_request_bytes=max_request_bytes,
        tls=tls,
        rate_limit=rate_limit,
        on_rate_limited=on_rate_limited,
        client_ca=client_ca,
        guard=guard,
    )
