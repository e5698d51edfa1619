"""The controller's I/O around the pure decisions: runs in memory, the handler of every stage
result and run-control event, the timer, publishing, snapshots and metrics.

Order for every input: decide (pure) -> publish every output (acks=all) -> record a promotion as the
deployment's incumbent (``core.incumbent``) -> write the snapshot ->
experiment tracking, when the run's config asks (``trackers``: best effort, never raises) -> return
(the consumer then marks the input handled and commits it). A crash before the snapshot
leaves the input uncommitted: it is redelivered and decided again, producing the same event ids
(commands by what they are, decisions by their cause), so stages and this controller drop the
repeats. A crash after the snapshot finds the input in ``state.applied`` and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from selfimprove.core import incumbent
from selfimprove.core.bus import Bus
from selfimprove.core.logs import fields
from selfimprove.core.outgoing import Outgoing
from selfimprove.core.retry import retrying
from selfimprove.core.store import ArtifactStore, StoreUnavailableError
from selfimprove.evaluator import decide, inputs, snapshot
from selfimprove.evaluator.commands import STAGE_NAME
from selfimprove.evaluator.config import RunConfig, load_config
from selfimprove.evaluator.crash import CrashHooks
from selfimprove.evaluator.loopmetrics import LoopMetrics
from selfimprove.evaluator.progress import ProgressBoard
from selfimprove.evaluator.refs import ref_dict
from selfimprove.evaluator.state import RunState
from selfimprove.evaluator.trackers import TrackingSink
from selfimprove.evaluator.transition import Transition
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import RunControl

log = logging.getLogger(__name__)
RESULTS = {
    "acquire_result",
    "select_result",
    "train_result",
    "evaluate_result",
    "refine_result",
    "stage_failure",
}


class Controller:
    def __init__(
        self,
        bus: Bus,
        store: ArtifactStore,
        metrics: LoopMetrics,
        environment: dict,
        crash: CrashHooks | None = None,
        clock: Callable[[], float] = time.time,
        tracking: TrackingSink | None = None,
    ) -> None:
        self.bus, self.store, self.metrics = bus, store, metrics
        self.tracking = tracking or TrackingSink(
            store, lambda backend: metrics.tracking_errors.labels(backend).inc()
        )
        self.environment = environment
        self.crash = crash or CrashHooks()
        self.clock = clock
        self.runs: dict[str, RunState] = {}
        self._configs: dict[str, RunConfig] = {}
        self.lock = asyncio.Lock()
        self.latencies: list[float] = []  # seconds from consumed to last command acknowledged
        self.progress = ProgressBoard(clock)  # stages' progress reports: memory only, advisory

    async def load(self) -> None:
        states = await retrying(
            lambda: asyncio.to_thread(snapshot.load_all, self.store),
            retry_on=(StoreUnavailableError,),
            what="loading run snapshots",
        )
        for state in states:
            if state.topic_prefix == self.bus.topics.prefix:  # runs of other deployments sharing the bucket
                self.runs[state.run_id] = state
        self.metrics.count_runs(list(self.runs.values()))
        log.info("loaded %d run snapshots", len(self.runs))

    def config(self, state: RunState) -> RunConfig:
        key = f"{state.run_id}/{hash(state.config_yaml)}"
        if key not in self._configs:
            self._configs[key] = load_config(state.config_yaml, files=False)  # stored with the run
        return self._configs[key]

    # -- inputs ---------------------------------------------------------------------------------

    async def handle(self, env: Envelope) -> list[Outgoing]:
        consumed = time.perf_counter()
        payload = env.WhichOneof("payload") or ""
        if payload == "decision":
            return []  # our own decisions: the run's log, already applied
        if payload == "stage_progress":
            self.progress.note(env)  # shown in the run status; decides nothing
            return []
        if payload not in RESULTS and payload != "run_control":
            raise ValueError(f"the controller does not handle {payload!r} events")
        async with self.lock:
            state = self.runs.get(env.run_id)
            if state is not None and env.event_id in state.applied:
                return []
            now = self.clock()
            if payload == "run_control":
                stored = await self._store_inputs(env) if state is None else {}
                tr = self._control(env, state, now, stored)
            elif state is None:
                log.warning(
                    "result for unknown run %s ignored", env.run_id, extra=fields(event_id=env.event_id)
                )
                self.metrics.ignored_result(STAGE_NAME.get(env.stage, ""), "unknown_run")
                return []
            else:
                tr = decide.on_result(self.bus.topics, state, self.config(state), env, now)
            if tr is None:
                return []
            self.crash.at("after_consume", payload)
            await self._commit(tr, env.event_id, consumed, env)
        self.crash.at("before_commit", payload)
        return []

    async def _store_inputs(self, env: Envelope) -> dict[str, dict]:
        """The input files a new run's config names, in the store under the run's prefix (once: a
        redelivered start finds them there), as reference dicts (``inputs.put_inputs``)."""
        rc = env.run_control
        if rc.action != RunControl.ACTION_START or not rc.config_yaml.strip():
            return {}
        cfg = load_config(rc.config_yaml, files=False)
        stored = await asyncio.to_thread(inputs.put_inputs, self.store, env.run_id, cfg)
        return {name: ref_dict(ref) for name, ref in stored.items()}

    def _control(
        self, env: Envelope, state: RunState | None, now: float, stored: dict[str, dict] | None = None
    ) -> Transition | None:
        rc = env.run_control
        topics = self.bus.topics
        if rc.action == RunControl.ACTION_STOP:
            return (
                decide.stop(topics, state, self.config(state), rc.reason, now, env.event_id)
                if state
                else None
            )
        if rc.action != RunControl.ACTION_START:
            raise ValueError(f"run_control {env.event_id}: unknown action {rc.action}")
        if state is not None:
            return decide.resume(topics, state, self.config(state), now, env.event_id)
        if not rc.config_yaml.strip():
            # A new run needs its config: never start one with defaults from a stray message.
            raise ValueError(f"run_control {env.event_id} starts run {env.run_id!r} without a config")
        cfg = load_config(rc.config_yaml, files=False)  # its files are stored (_store_inputs)
        return decide.start(
            topics,
            cfg,
            rc.config_yaml,
            env.run_id,
            now,
            env.event_id,
            dict(self.environment, config=rc.config_yaml),
            seed_set=(stored or {}).get("seed_set"),
        )

    async def tick(self) -> None:
        """Timeouts and wall-time budgets of every active run."""
        async with self.lock:
            for run_id in list(self.runs):
                state = self.runs[run_id]
                if not state.active:
                    continue
                tr = decide.on_tick(self.bus.topics, state, self.config(state), self.clock())
                if tr.out:
                    await self._commit(tr, "", time.perf_counter())

    async def tick_loop(self, stop: asyncio.Event, every: float, grace: float) -> None:
        await asyncio.sleep(grace)
        while not stop.is_set():
            try:
                await self.tick()
            except StoreUnavailableError as exc:  # decided again at the next tick, once it is back
                log.warning("timer tick waits for the object store: %s", exc)
            except Exception:
                log.exception("timer tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)

    # -- outputs --------------------------------------------------------------------------------

    async def _commit(
        self, tr: Transition, cause: str, consumed: float, received: Envelope | None = None
    ) -> None:
        # All outputs in flight at once (one round trip); per partition the producer keeps their order.
        await asyncio.gather(*(self.bus.publish(o.topic, o.envelope, o.key, o.spread) for o in tr.out))
        acked = (
            time.perf_counter()
            if any(o.envelope.WhichOneof("payload") != "decision" for o in tr.out)
            else None
        )
        promoted = [o.envelope for o in tr.out if incumbent.is_promotion(o.envelope)]
        if promoted:
            # What a serving replica loads when it starts; before the snapshot, so a crash repeats it.
            await asyncio.to_thread(incumbent.write, self.store, self.bus.topics.prefix, promoted[-1])
            self.crash.at("after_promote", "decision")
        if acked is not None and cause:
            self.latencies.append(acked - consumed)
            self.metrics.control_latency.observe(acked - consumed)
        state = tr.state
        state.mark_applied(cause)
        previous = self.runs.get(state.run_id)
        # The state in memory advances only once its snapshot is stored: when the store is down the
        # save raises (StoreUnavailableError), the input stays unapplied and is decided again later.
        await asyncio.to_thread(snapshot.save, self.store, state, previous)
        self.runs[state.run_id] = state
        self.metrics.apply(state, tr.signals)
        self.metrics.count_runs(list(self.runs.values()))
        await self.tracking.after_commit(tr.cfg, previous, state, received)  # never raises
        for d in state.decisions[
            len(state.decisions) - sum(1 for o in tr.out if o.envelope.HasField("decision")) :
        ]:
            log.info(
                "decision %s: %s",
                d["kind"],
                d["reason"],
                extra=fields(
                    run_id=state.run_id, iteration=d["iteration"], stage=d["stage"], event_id=d["event_id"]
                ),
            )
