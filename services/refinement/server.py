"""``selfimprove.v2.RefinementService`` over ``grpc.aio``: limits, rate limit, the strategy, health.

Each request takes the current :class:`~.served.Served` snapshot, checks the limits (an
``INVALID_ARGUMENT`` naming the limit) and runs the strategy in a worker thread; the server's rate
limit is the shared interceptor of ``core.grpcserve`` (``RESOURCE_EXHAUSTED``, counted in the
request metrics). ``GenerateStream`` sends the text in chunks once the strategy
has finished (strategies such as self-consistency only know their answer at the end), then a final
message with the usage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import grpc

from selfimprove.core import compute
from selfimprove.core.grpcserve import RunningServer, TokenBucket, serve
from selfimprove.refinement.limits import LimitError, Limits
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
        metrics: object | None = None,
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
            max_new = request.max_new_tokens or self.sampling.max_new_tokens
            try:
                spec = strategies.parse(name, serving=True)
                self.limits.check(request.prompt, max_new, spec.k, request.temperature)
                counted = served.engine.count_tokens(request.prompt)
                if counted is not None:
                    self.limits.check_tokens(counted)
            except (LimitError, ValueError) as exc:
                code = "INVALID_ARGUMENT"
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            settings = strategies.Settings(
                temperature=request.temperature or self.sampling.temperature,
                top_p=self.sampling.top_p,
                max_new_tokens=max_new,
                seed=request.seed or None,
            )
            done = await compute.run(
                strategies.run, served.engine, spec, [request.prompt], served.extract, settings
            )
            [answer] = done.answers
            seconds = time.perf_counter() - start
            if self.metrics is not None:
                self.metrics.generated(done.tokens, done.seconds)
            return pb.GenerateResponse(
                text=answer.text,
                answer=answer.answer or "",
                strategy=spec.name,
                model_version=served.version,
                prompt_tokens=counted or 0,
                completion_tokens=done.tokens,
                seconds=seconds,
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
    )
