"""The real Prometheus (``/usr/bin/prometheus``, Debian package) against the local stack with every
service running: it finds each service's loop metrics, every PromQL expression of the Grafana
dashboard and of ``deploy/prometheus/rules.yml`` returns data, and the stalled-loop alert fires when a
stage is held back.

Prometheus scrapes with one job per service named as in ``deploy/prometheus/prometheus.yml`` (the
rules select ``job``) every second, and evaluates the rules every second. It loads a COPY of the
rules in which only the stall alert's threshold (7200 s -> ``STALL_S``) and its ``for:`` duration are
shortened; nothing else in any rule is changed.

Empty alert expressions: an alert expression is empty while the system is healthy (``A > 7200``,
``up == 0``), so a rule passes when its whole expression returns data, or else when every operand of
its top-level ``and``/``or``/``unless`` and comparisons (number literals dropped) returns data on its
own (``promkit.operands``). Dashboard expressions must return data as they are.

Held back: the acquisition service is stopped and runs are started through the evaluator's gRPC
control plane. One run gets its acquire command answered by hand with a zero-sample result (so a
stage completes and the stage-duration histogram has a series), one fails on its acquire timeout
(stage failures), and the last stays in acquire, re-commanding it (stage retries, and the stall).
One Generate call to the refinement service gives its latency series.

Series of a run's work carry ``run_id`` and exist once a service has worked on a run (the dashboard's
run variable is substituted by its "All" value, ``.+``). These runs never reach selection, training or
evaluation, so the expressions (dashboard and rules) of ``NOT_REACHED`` metrics alone may be empty here;
that those are labelled by run is checked by tests/unit/test_run_series.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.core.local_loop import SERVICES, LocalLoop
from selfimprove.core.topics import STAGES, Topics
from selfimprove.v2 import control_pb2, control_pb2_grpc, refinement_pb2, refinement_pb2_grpc
from selfimprove.v2.common_pb2 import Stage
from tests.support.buskit import kafka_settings, read_topic
from tests.support.fake_stages import respond
from tests.support.promkit import RULES, PromServer, dashboard_exprs, operands, rule_exprs, shortened_rules

pytestmark = pytest.mark.integration

STALL_ALERT, STALL_S, STALL_FOR = "SelfimproveLoopStalled", 15, "5s"
SMALL = Path(__file__).resolve().parents[2] / "configs" / "small.yaml"
COMMON = ["selfimprove_service_up", "selfimprove_messages_consumed_total", "selfimprove_dlq_messages_total"]
# Series each service exports before any run (process-level; the refinement service's base model
# is served for run_id "none").
LOOP_METRICS = {
    "evaluator": ["selfimprove_runs", "selfimprove_control_latency_seconds_count"],
    "acquisition": [],
    "selection": [],
    "trainer": [],
    "refinement": ["selfimprove_refinement_strategy_in_use", "selfimprove_refinement_model_info"],
    "evaluator-worker": [],
}
# The evaluator's series of a run, labelled with its run_id once the run started.
RUN_METRICS = [
    "selfimprove_iteration",
    "selfimprove_stage",
    "selfimprove_promotions_total",
    "selfimprove_rejections_total",
    "selfimprove_stage_retries_total",
    "selfimprove_last_progress_timestamp_seconds",
]
# Metrics of stages these runs never reach (acquisition is stopped): selection, training, evaluation.
NOT_REACHED = {
    "selfimprove_data_yield",
    "selfimprove_incumbent_accuracy",
    "selfimprove_candidate_accuracy",
    "selfimprove_training_loss",
    "selfimprove_training_step",
    "selfimprove_training_tokens_per_second",
}
# The topic each service consumes: a garbage record there is dead-lettered and counted.
CONSUMED = {
    "acquisition": ("cmd", Stage.STAGE_ACQUIRE),
    "selection": ("cmd", Stage.STAGE_SELECT),
    "trainer": ("cmd", Stage.STAGE_TRAIN),
    "evaluator-worker": ("cmd", Stage.STAGE_EVALUATE),
    "refinement": ("cmd", Stage.STAGE_REFINE),
    "evaluator": ("evt", Stage.STAGE_ACQUIRE),
}


@dataclass
class Live:
    loop: LocalLoop
    prom: PromServer
    prefix: str

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)


@pytest.fixture(scope="module")
def live(stack, tmp_path_factory):
    if not os.access("/usr/bin/prometheus", os.X_OK):
        pytest.fail("prometheus is not installed: run `make system-deps` (Debian package prometheus)")
    prefix = "t" + uuid.uuid4().hex[:10]
    env = {
        "SELFIMPROVE_KAFKA_TOPIC_PREFIX": prefix,
        "SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "SELFIMPROVE_LOG_JSON": "false",
        "SELFIMPROVE_EVALUATOR_STARTUP_GRACE_S": "1",
    }
    assert set(LOOP_METRICS) == set(SERVICES)
    loop = LocalLoop(stack, services=dict(SERVICES), env=env)
    home = tmp_path_factory.mktemp("prometheus")
    rules = home / "rules.yml"
    rules.write_text(shortened_rules(RULES.read_text(), STALL_ALERT, "7200", STALL_S, STALL_FOR))
    prom = None
    try:
        loop.start()
        jobs = {name: f"127.0.0.1:{port}" for name, port in loop.ports.items()}
        prom = PromServer(home, jobs, [rules]).start()
        yield Live(loop, prom, prefix)
    finally:
        if prom is not None:
            prom.stop()
        loop.stop_services()  # not loop.stop(): the session's stack outlives this module


def test_prometheus_finds_every_service_and_its_loop_metrics(live):
    async def garbage() -> None:
        async with Bus(kafka_settings(live.loop.stack, live.prefix)) as bus:
            for kind, stage in CONSUMED.values():
                topic = live.topics.command(stage) if kind == "cmd" else live.topics.result(stage)
                await bus.send_raw(topic, b"\x08\x96\x01not an envelope", key=b"garbage")

    asyncio.run(garbage())
    for job, names in LOOP_METRICS.items():
        wanted = {*COMMON, *names}
        selector = f'{{job="{job}", __name__=~"{"|".join(sorted(wanted))}"}}'

        def found(selector=selector) -> set[str]:
            return {r["metric"]["__name__"] for r in live.prom.query(f"count by (__name__) ({selector})")}

        deadline = time.monotonic() + 60
        while not found() >= wanted and time.monotonic() < deadline:
            time.sleep(0.5)
        assert found() >= wanted, f"{job} lacks {sorted(wanted - found())}"
        assert live.prom.query(f'selfimprove_service_up{{job="{job}", service="{job}"}} == 1'), job
        assert not live.prom.query(f'{{job="{job}", __name__=~"selfimprove_.+", run_id!="", run_id!="none"}}')
        assert live.prom.query(f'up{{job="{job}"}} == 1'), job
        dlq = f'selfimprove_messages_consumed_total{{job="{job}", outcome="dlq"}} >= 1'
        live.prom.wait(lambda q=dlq: live.prom.query(q), 30, f"{job}'s dead-lettered garbage")


def run_config(timeout_s: float, attempts: int) -> str:
    cfg = yaml.safe_load(SMALL.read_text())
    cfg["stages"]["acquire"] = {"timeout_s": timeout_s, "max_attempts": attempts}
    cfg["acquisition"]["max_data_retries"] = 0  # zero samples completes the run
    return yaml.safe_dump(cfg)


def wait_state(stub, run_id: str, state: str, timeout: float = 60) -> control_pb2.RunStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = stub.GetRunStatus(control_pb2.GetRunStatusRequest(run_id=run_id), timeout=10).status
        if status.state == state:
            return status
        assert time.monotonic() < deadline, f"run {run_id} is {status.state}, not {state}: {status}"
        time.sleep(0.5)


async def answer_acquire(live: Live, run_id: str) -> None:
    """Publish a zero-sample acquire result for the run's first acquire command (a stand-in answer)."""
    topic = live.topics.command(Stage.STAGE_ACQUIRE)
    for _ in range(20):
        for record in await read_topic(live.loop.stack.kafka_bootstrap, topic, 10_000, timeout=2):
            try:
                env = envelopes.decode(record.value)
            except Exception:  # noqa: BLE001 - the garbage record of the first test
                continue
            if env.run_id == run_id:
                async with Bus(kafka_settings(live.loop.stack, live.prefix)) as bus:
                    for result in respond(env, {"samples": [0]}):
                        await bus.publish(live.topics.result(env.stage), result)
                return
    raise AssertionError(f"no acquire command of {run_id} on {topic}")


@pytest.fixture(scope="module")
def held(live):
    """Acquisition stopped; a completed, a failed and a held-back run. Returns (stub, held run id,
    failed run id: the run that ended last, whose series are still exported)."""
    live.loop.procs["acquisition"].stop()
    stub = control_pb2_grpc.ControlPlaneServiceStub(
        grpc.insecure_channel(live.loop.grpc_address("evaluator"))
    )

    def start(config: str) -> str:
        return stub.StartRun(control_pb2.StartRunRequest(config_yaml=config), timeout=60).run_id

    done = start(run_config(timeout_s=60, attempts=1))
    asyncio.run(answer_acquire(live, done))
    wait_state(stub, done, "completed")
    failed = start(run_config(timeout_s=1, attempts=1))
    wait_state(stub, failed, "failed")
    refinement = refinement_pb2_grpc.RefinementServiceStub(
        grpc.insecure_channel(live.loop.grpc_address("refinement"))
    )
    refinement.Generate(refinement_pb2.GenerateRequest(prompt="1 + 1 =", max_new_tokens=4), timeout=120)
    return stub, start(run_config(timeout_s=2, attempts=1000)), failed


def test_every_dashboard_and_rule_expression_returns_data(live, held):
    rules = rule_exprs(RULES.read_text())
    checks = {f"dashboard: {e}": [e] for e in dashboard_exprs()}
    checks.update({f"rule {name}: {e}": [e] for name, e in rules.items()})

    def missing() -> list[str]:
        bad = []
        for what, (expr,) in checks.items():
            if live.prom.query(expr):
                continue
            if set(re.findall(r"selfimprove_[a-z_]+", expr)) <= NOT_REACHED:
                continue
            empty = (
                [o for o in operands(expr) if not live.prom.query(o)] if what.startswith("rule") else [expr]
            )
            bad += [f"{what}  (empty: {'; '.join(empty)})"] if empty else []
        return bad

    deadline = time.monotonic() + 60
    while (bad := missing()) and time.monotonic() < deadline:
        time.sleep(2)
    assert not bad, "expressions without data:\n" + "\n".join(bad)
    assert len(checks) >= 35  # 30 dashboard targets + 10 rules at the time of writing
    _, held_run, ended = held
    for name in RUN_METRICS:  # the run's series carry its id
        assert live.prom.query(f'{name}{{job="evaluator", run_id="{held_run}"}}'), name
    # A run that ended has no progress timestamp left to alert on.
    assert live.prom.query(f'selfimprove_last_progress_timestamp_seconds{{run_id="{ended}"}} == 0')
    assert live.prom.query(
        'selfimprove_refinement_request_seconds_count{run_id="none", method="Generate"} >= 1'
    )


def test_stall_alert_fires_when_a_stage_is_held_back(live, held):
    stub, run_id, _ = held
    alerts = live.prom.wait(lambda: live.prom.firing(STALL_ALERT), 90, f"{STALL_ALERT} firing")
    assert {a["labels"]["run_id"] for a in alerts} == {run_id}  # the held run only, not the ended ones
    assert alerts[0]["labels"]["job"] == "evaluator"
    status = wait_state(stub, run_id, "running", timeout=5)  # still held back, not finished
    assert STAGES[status.stage] == "acquire"
    assert live.prom.query('sum(selfimprove_stage_retries_total{stage="acquire"}) >= 1')
    assert "> 7200" in rule_exprs(RULES.read_text())[STALL_ALERT]  # production threshold untouched
