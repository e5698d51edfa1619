"""The refinement service: calibrates strategies on refine commands and serves the incumbent on gRPC.

- ``<prefix>.cmd.refine`` (group ``<prefix>.refinement``): measure the strategies on the task's dev
  split, choose one within the token budget, write ``table.json`` (and, with ``write_targets``,
  ``targets.jsonl`` of refined answers on train prompts) as the attempt's artifact, answer
  ``refine_result``; the server then serves the chosen strategy.
- ``<prefix>.evt.control`` (group ``<prefix>.refinement-serving-<instance>``, so every replica sees
  every decision, and a restarted replica, whose instance name is stable, goes on where it stopped):
  a PROMOTE decision loads its model and swaps it in without a restart; at start the replica serves
  the deployment's incumbent record (``core.incumbent``) before reading any decision; of
  promotions that arrive within ``swap_settle_s`` of each other (a new replica reading the topic
  from its start) only the newest is loaded.
- gRPC ``selfimprove.v2.RefinementService`` and the standard health service; the bound port is in
  ``/health`` as ``grpc_port``.
- An OpenAI-compatible HTTP API (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``;
  ``http_api``) with the same limits, rate limit and TLS; its port is in ``/health`` as ``http_port``.
- Both endpoints require a bearer token or a client certificate when ``auth_tokens_file`` or
  ``tls_client_ca_file`` is set (``core.guard``; every method needs the ``read`` role).

Serving goes on while a calibration runs: the calibration's loop runs on a worker thread and only
its engine calls, one engine batch each, queue on the compute thread beside requests and swaps
(``served``); it measures the engine of the command's incumbent, whatever a swap serves meanwhile.
A calibration whose handler stops waiting (the service stops, ``max_handler_seconds``) is abandoned
at its next engine call.

Run it: ``python -m selfimprove.refinement``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

from selfimprove.core import compute, incumbent
from selfimprove.core.keys import split_uri
from selfimprove.core.outgoing import Outgoing
from selfimprove.core.retry import RetryableError, retrying
from selfimprove.core.runner import Context, Runnable
from selfimprove.core.settings import load
from selfimprove.core.stage import StageInputError, failure, result, run_once, stats_dict
from selfimprove.core.store import ArtifactError
from selfimprove.refinement import artifacts, calibration
from selfimprove.refinement.metrics import RefinementMetrics
from selfimprove.refinement.served import ComputeEngine, Served, ServedModel, model_version
from selfimprove.refinement.settings import RefinementSettings
from selfimprove.refinement.swaps import LatestOnly
from selfimprove.runtime import strategies
from selfimprove.v2.common_pb2 import ModelRef, Stage
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import Decision

log = logging.getLogger(__name__)


def targets_seed(seed: int, iteration: int) -> int:
    """The train-prompt seed of an iteration's targets (new prompts every iteration).

    >>> targets_seed(7, 2) != targets_seed(7, 3)
    True
    """
    return seed * 100_003 + iteration


class Refiner:
    def __init__(self, ctx: Context, settings: RefinementSettings, model: ServedModel, policies) -> None:
        self.ctx, self.settings, self.model, self.policies = ctx, settings, model, policies
        self.metrics = RefinementMetrics(ctx.metrics)
        self.producer = f"refinement/{ctx.settings.instance}"
        self.promotions: LatestOnly[Envelope] = LatestOnly(
            self.swap, settings.swap_settle_s, on_error=lambda env, exc: self.metrics.swap_failures.inc()
        )

    def engine(
        self, ref: ModelRef, max_sequences: int = 0, abandon: threading.Event | None = None
    ) -> ComputeEngine:
        """The engine of ``ref``, loaded on the compute thread (from any thread)."""
        return ComputeEngine(compute.call(self.policies.engine, ref), max_sequences, abandon)

    def build(self, env: Envelope, abandon: threading.Event) -> tuple[dict[str, bytes], dict[str, Any]]:
        """Calibrate (on a worker thread: each engine call, one batch, goes to the compute thread);
        ``abandon`` set stops it at its next engine call."""
        from selfimprove.runtime.models import ModelNotFoundError
        from selfimprove.runtime.tasks import load_task

        cmd = env.refine_command
        try:
            if cmd.dev_size < 1:
                raise StageInputError(f"dev_size must be at least 1, got {cmd.dev_size}")
            if cmd.write_targets and cmd.target_prompts < 1:
                raise StageInputError(f"write_targets needs target_prompts >= 1, got {cmd.target_prompts}")
            specs = calibration.with_greedy(cmd.strategies)
            task = load_task(cmd.task.name or "arithmetic", json.loads(cmd.task.params_json or "{}"))
            items = task.items("dev", cmd.dev_size, seed=cmd.seed)
            engine = self.engine(cmd.incumbent, self.settings.batch_size, abandon)
        except (ValueError, FileNotFoundError, ModelNotFoundError, ArtifactError) as exc:
            raise StageInputError(f"{type(exc).__name__}: {exc}") from exc
        start = time.perf_counter()
        s = self.settings
        sampling = strategies.Settings(s.temperature, s.top_p, s.calibration_max_new_tokens, cmd.seed)
        self.metrics.calibrating.inc()
        try:
            rows = calibration.measure(engine, task, items, specs, sampling)
        finally:
            self.metrics.calibrating.dec()
        chosen = calibration.choose(rows, cmd.token_budget)
        files = {"table.json": b""}
        targets = 0
        if cmd.write_targets:
            train = task.items("train", cmd.target_prompts, seed=targets_seed(cmd.seed, env.iteration))
            done = strategies.run(engine, chosen, [it.prompt for it in train], task.extract, sampling)
            files["targets.jsonl"] = artifacts.targets_jsonl(train, done.answers)
            targets = len(train)
        figures = artifacts.result_stats(rows, chosen, time.perf_counter() - start, targets)
        meta = {
            "model_version": model_version(cmd.incumbent),
            "task": {"name": cmd.task.name or "arithmetic", "params_json": cmd.task.params_json or "{}"},
            "dev_size": cmd.dev_size,
            "seed": cmd.seed,
            "token_budget": cmd.token_budget,
            "chosen": chosen,
            "table": artifacts.table_records(rows),
            "stats": stats_dict(figures),
            "targets_written": bool(cmd.write_targets),
        }
        files["table.json"] = json.dumps(meta, indent=1).encode()
        log.info("calibrated %s: chose %s (%s)", meta["model_version"], chosen, meta["stats"])
        return files, meta

    async def on_refine(self, env: Envelope) -> list[Outgoing]:
        if env.WhichOneof("payload") != "refine_command":
            raise ValueError(f"refinement expects refine_command, got {env.WhichOneof('payload')}")
        topics = self.ctx.bus.topics
        abandon = threading.Event()  # set once this handler stops waiting for the calibration
        try:
            ref, meta = await run_once(
                self.ctx.store, env, lambda: self.build(env, abandon), on_compute=False
            )
        except StageInputError as exc:
            log.warning("refine command %s refused: %s", env.event_id, exc)
            return [failure(topics, env, self.producer, exc)]
        finally:
            abandon.set()
        self.metrics.calibrated(env.run_id, ((r["strategy"], r["accuracy"]) for r in meta["table"]))
        served = self.model.use_strategy(meta["chosen"])
        self.metrics.serving(served.strategy, served.version, env.run_id)
        return [result(topics, env, self.producer, refine_result=artifacts.refine_result(meta, ref))]

    async def on_control(self, env: Envelope) -> list[Outgoing]:
        """Offer a promoted model (or one a rollback serves again) to the swapper (a malformed one is
        dead-lettered); every other control event is ignored."""
        serves = (Decision.KIND_PROMOTE, Decision.KIND_ROLLBACK)
        if env.WhichOneof("payload") == "decision" and env.decision.kind in serves:
            ref = env.decision.model
            if not ref.base:
                raise ValueError(f"promotion {env.event_id} names no base model")
            if ref.adapter.uri:
                split_uri(ref.adapter.uri)
                if not ref.adapter.sha256:
                    raise ValueError(f"promotion {env.event_id}: adapter {ref.adapter.uri} has no sha256")
            self.promotions.offer(env)
        return []

    async def restore(self) -> None:
        """Serve the deployment's incumbent at start (``core.incumbent``): the promotion listener's
        group survives restarts, so it does not replay the decisions that promoted it."""
        prefix = self.ctx.kafka.topic_prefix
        try:
            env = await retrying(
                lambda: asyncio.to_thread(incumbent.read, self.ctx.store, prefix),
                retry_on=(RetryableError,),
                what="reading the incumbent record",
                attempts=20,
            )
        except RetryableError as exc:
            log.warning("incumbent record unreadable (%s): serving the base model until a promotion", exc)
            return
        if env is None:
            return
        try:
            await self.swap(env)
        except Exception as exc:  # a model that does not load: serve the base, say why
            self.metrics.swap_failures.inc()
            log.error("the incumbent %s does not load (%s): serving the base model", env.decision.model, exc)

    async def swap(self, env: Envelope) -> None:
        """Load the model ``env`` promoted and serve it, without a restart."""
        ref = env.decision.model
        if model_version(ref) == self.model.current().version:
            return
        engine = await compute.run(self.engine, ref)
        served = self.model.use_model(ref, engine)
        self.metrics.swapped(env.run_id)
        self.metrics.serving(served.strategy, served.version, env.run_id)
        log.info(
            "now serving %s (promoted in run %s iteration %d)", served.version, env.run_id, env.iteration
        )


async def setup(ctx: Context) -> list[Runnable]:
    from selfimprove.core import guard
    from selfimprove.core.grpcserve import TokenBucket
    from selfimprove.core.settings import PREFIX
    from selfimprove.refinement.grpc_runner import grpc_runnable
    from selfimprove.refinement.http_runner import http_runnable
    from selfimprove.runtime.policy import PolicyCache
    from selfimprove.runtime.tasks import load_task

    s = load(RefinementSettings)
    strategies.parse(s.strategy, serving=True)
    # One token file for both endpoints, read before the model loads: a bad one fails the start at once.
    tokens = None
    if s.auth_tokens_file is not None:
        tokens = guard.TokenFile(s.auth_tokens_file, PREFIX + "REFINEMENT_AUTH_TOKENS_FILE")
    on_refused = guard.refusal_counter(ctx.metrics)
    guards = {
        endpoint: guard.make_guard(
            endpoint, s.auth_tokens_file, s.tls_client_ca_file, on_refused, tokens=tokens
        )
        for endpoint in ("refinement_grpc", "refinement_http")
    }
    options = (
        {"threads": ctx.settings.threads, "batch_size": s.batch_size} if s.backend == "transformers" else {}
    )
    policies = PolicyCache(ctx.store, s.backend, keep=2, cache_dir=ctx.settings.cache_dir, **options)
    task = load_task(s.task, json.loads(s.task_params_json))
    ref = ModelRef(base=s.base)
    engine = ComputeEngine(await compute.run(policies.engine, ref))
    model = ServedModel(Served(ref, engine, s.strategy, task.extract))
    refiner = Refiner(ctx, s, model, policies)
    await refiner.restore()
    refiner.metrics.serving(s.strategy, model.current().version)
    topics, prefix = ctx.bus.topics, ctx.kafka.topic_prefix
    calibrate = ctx.consumer(
        [topics.command(Stage.STAGE_REFINE)], refiner.on_refine, max_handler_seconds=s.max_handler_seconds
    )
    promotions = ctx.consumer(
        [topics.control], refiner.on_control, group=f"{prefix}.refinement-serving-{ctx.settings.instance}"
    )
    bucket = TokenBucket(s.rate_per_second, s.rate_burst)  # one rate limit for gRPC and HTTP together
    serve = await grpc_runnable(ctx, s, model, refiner.metrics, bucket, guards["refinement_grpc"])
    http = await http_runnable(ctx, s, model, refiner.metrics, bucket, guards["refinement_http"])
    return [calibrate.run, promotions.run, refiner.promotions.run, serve, http]
