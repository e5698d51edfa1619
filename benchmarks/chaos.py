"""Chaos suite: SIGKILL services at random moments of a real run, restart the broker once and the
object store once (killing a stage while the store is down), then check that the run completed and
nothing was lost or done twice.

    .venv/bin/python benchmarks/chaos.py --kills 20 --seed 1                   # make chaos
    .venv/bin/python benchmarks/chaos.py --kills 6 --config configs/small.yaml --no-require-promotion

``random.Random(seed)`` picks every victim and every delay, and when the broker and the object store
restart, so a seed replays the same schedule (the run's own timing still varies with the machine). Each
killed service is restarted at once. The store restart (``--store-down`` seconds, same ports and data)
takes the place of one kill: its victim is a stage service, killed half-way through the outage and
restarted while the store is still down (it waits for the store, as the broker does: Tansu keeps its
log in that store and answers produce requests with errors until it is back).

Checks: the run completes; no promotion is decided twice (decision events on the control topic) or
lost (the run's state); every manifest under ``runs/<run>/`` verifies; every result the evaluator
accepted (lineage ``artifacts``) is one event of one attempt whose artifact lives under that attempt,
and no attempt published two different artifacts; no input of the run was dead-lettered for the
store outage (it is retried until the store is back). Figures: kills, retries (commands
with attempt > 1 on the bus; the evaluator's ``selfimprove_stage_retries_total`` since its last
restart), store restarts and how long the store was down, the stage killed meanwhile, the run's
events on the dead-letter topics, and the run's duration (with ``--baseline``: the same run without
faults, and the time lost against it).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from suitekit import artifact_store, log_tails, make_loop, read_topics, snapshot, total

from selfimprove.core import envelope as envelopes
from selfimprove.core.topics import STAGES, Topics
from selfimprove.v2.common_pb2 import ArtifactRef
from selfimprove.v2.stages_pb2 import Decision

CONFIG = """
base_model: smollm2-135m-instruct
label_mode: verified
seed: 3
task: {name: arithmetic, params: {categories: [add1, add2]}, dev_size: 24}
budget: {iterations: 2, wall_time_s: 3000}
acquisition: {shards: 2, prompts_per_shard: 16, samples_per_prompt: 4, max_new_tokens: 64}
training: {method: sft, hparams: {epochs: 2}, require_loss_drop: false}
evaluation: {max_new_tokens: 64, alpha: 0.5}
refinement: {strategies: [greedy], dev_size: 8, token_budget: 64}
stages:
  acquire: {timeout_s: 300, max_attempts: 4}
  select: {timeout_s: 180, max_attempts: 4}
  train: {timeout_s: 400, max_attempts: 4}
  evaluate: {timeout_s: 300, max_attempts: 4}
  refine: {timeout_s: 300, max_attempts: 4}
"""
FINAL = ("completed", "stopped", "failed")
# What a handler meets while the object store is down: waited out, so never a dead letter's error.
OUTAGE_ERRORS = frozenset(
    {"StoreUnavailableError", "MaxRetryError", "ProtocolError", "S3Error", "ServerError"}
)


START = """
import sys, time, grpc
from selfimprove.v2 import control_pb2, control_pb2_grpc
config = sys.stdin.read()
stub = control_pb2_grpc.ControlPlaneServiceStub(grpc.insecure_channel(sys.argv[1]))
for _ in range(30):
    try:
        stub.StartRun(control_pb2.StartRunRequest(config_yaml=config, run_id=sys.argv[2]), timeout=60)
        break
    except grpc.RpcError as exc:
        print(exc, file=sys.stderr)
        time.sleep(2)
else:
    sys.exit(1)
"""


class Control:
    """Starts a run through the control plane and reads its state from the snapshot.

    No gRPC channel lives in this process: the loop restarts services with ``fork`` plus a
    ``preexec_fn``, and a child forked from a process with gRPC's poller threads can abort
    (``epoll_wait error: Bad file descriptor``, SIGABRT). So ``StartRun`` runs in a short child
    process, and the status comes from the run's snapshot in the object store, as the evaluator
    itself rebuilds it after a restart.
    """

    def __init__(self, address: str, store) -> None:
        self.address, self.store = address, store

    def start(self, config: str, run_id: str) -> None:
        subprocess.run(
            [sys.executable, "-c", START, self.address, run_id],
            input=config,
            text=True,
            check=True,
            timeout=300,
        )

    def status(self, run_id: str):
        from selfimprove.evaluator import snapshot
        from selfimprove.evaluator.status import run_status

        try:
            state = snapshot.load(self.store, run_id)
        except Exception:  # noqa: BLE001 (the store may be busy; try again later)
            return None
        return None if state is None else run_status(state)

    def wait(self, run_id: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status is not None and status.state in FINAL:
                return status
            time.sleep(3)
        return self.status(run_id)


def store_outage(loop, victim: str, down_s: float) -> float:
    """Stop the object store, SIGKILL ``victim`` half-way through the outage and restart it at once
    (it starts while the store is down), then start the store again on the same ports and data
    folder once ``down_s`` seconds have passed; return how long the store was down (until S3
    answered again)."""
    t = time.monotonic()
    loop.stack.stop_store()
    time.sleep(down_s / 2)
    loop.kill(victim)
    loop.restart(victim, wait=False)
    time.sleep(max(0.0, down_s - (time.monotonic() - t)))
    loop.stack.start_store()
    return round(time.monotonic() - t, 1)


def schedule(kills: int, rng: random.Random, store_restart: bool) -> tuple[int, int | None]:
    """The kills at which the broker restarts and the store restarts (never the same kill).

    >>> schedule(20, random.Random(1), True)
    (4, 19)
    >>> schedule(1, random.Random(1), True), schedule(6, random.Random(1), False)
    ((0, None), (1, None))
    """
    broker_at = rng.randrange(kills)
    others = [i for i in range(kills) if i != broker_at]
    return broker_at, (rng.choice(others) if store_restart and others else None)


def inject(loop, control: Control, run_id: str, rng: random.Random, args) -> list[dict]:
    """Kill and restart services at seeded random moments while the run is active."""
    victims = sorted(loop.services)
    stages = [v for v in victims if v != "evaluator"]  # the controller is no stage
    broker_at, store_at = schedule(args.kills, rng, args.store_restart)
    log = []
    for i in range(args.kills):
        delay = rng.uniform(args.min_delay, args.max_delay)
        victim = rng.choice(stages if i == store_at else victims)
        time.sleep(delay)
        status = control.status(run_id)
        if status is not None and status.state in FINAL:
            log.append({"kill": i, "skipped": "run already ended"})
            break
        t = time.monotonic()
        entry = {
            "kill": i,
            "victim": victim,
            "after_s": round(delay, 1),
            "stage": status.stage if status else -1,
        }
        if i == store_at:
            entry["store_down_s"] = store_outage(loop, victim, args.store_down)
        else:
            loop.kill(victim)
            loop.restart(victim, wait=False)
        if i == broker_at:
            loop.stack.restart_broker()
            entry["broker_restart_s"] = round(time.monotonic() - t, 1)
        log.append(entry)
        extra = " + broker restart" if i == broker_at else ""
        if i == store_at:
            extra = f" while the object store was down ({entry['store_down_s']} s, restarted)"
        print(f"kill {i}: {victim} (+{delay:.1f} s){extra}", flush=True)
    for name in victims:
        loop.wait_ready(name)
    return log


def check(loop, prefix: str, run_id: str, status, fail) -> dict:
    """Promotions, manifests and accepted attempts of the finished run."""
    topics = Topics(prefix)
    names = [topics.control] + [topics.command(s) for s in STAGES] + [topics.result(s) for s in STAGES]
    records = read_topics(loop.stack.kafka_bootstrap, names)
    events = {
        t: [e for r in rs if (e := _decode(r.value)) is not None and e.run_id == run_id]
        for t, rs in records.items()
    }
    out: dict = {}
    # Promotions: each decided once, none lost.
    promote = {
        e.event_id: e
        for e in events[topics.control]
        if e.HasField("decision") and e.decision.kind == Decision.KIND_PROMOTE
    }
    per_iteration = Counter(e.iteration for e in promote.values())
    lineage = json.loads(status.lineage_json or "{}")
    out["promotions"] = {
        "events": len(promote),
        "per_iteration": dict(per_iteration),
        "in_state": len(lineage.get("promotions", [])),
    }
    out["promotion_event_copies"] = sum(1 for e in events[topics.control] if e.event_id in promote)
    if any(n > 1 for n in per_iteration.values()):
        fail(f"an iteration promoted twice: {dict(per_iteration)}")
    if len(promote) != len(lineage.get("promotions", [])):
        fail(f"{len(promote)} promotion events but {len(lineage.get('promotions', []))} in the run's state")
    # Retries: commands of a later attempt.
    commands = {(e.iteration, e.stage, e.shard, e.attempt) for s in STAGES for e in events[topics.command(s)]}
    out["commands"] = len(commands)
    out["retried_commands"] = sorted(
        f"iter {i} {STAGES[s]}/{sh} attempt {a}" for i, s, sh, a in commands if a > 1
    )
    # Every manifest of the run verifies.
    store = artifact_store(loop)
    manifests = [k for k in store.list_keys(f"runs/{run_id}/") if k.endswith("/manifest.json")]
    bad = []
    for key in manifests:
        try:
            store.verify(store.find_manifest(key[: -len("manifest.json")]))
        except Exception as exc:  # noqa: BLE001 (any failure is a finding)
            bad.append(f"{key}: {exc}")
    out["manifests"] = {"verified": len(manifests) - len(bad), "bad": bad}
    if bad or not manifests:
        fail(f"manifests: {len(manifests)} found, bad: {bad[:3]}")
    # Accepted results: one event of one attempt each, its artifacts under that attempt.
    results = defaultdict(set)  # (iteration, stage, shard, attempt) -> artifact shas
    by_id = {}
    for s in STAGES:
        for e in events[topics.result(s)]:
            if e.HasField("stage_progress"):
                continue  # a progress report, not a result
            by_id[e.event_id] = e
            if not e.HasField("stage_failure"):
                results[(e.iteration, e.stage, e.shard, e.attempt)].add(_refs(e))
    twice = [k for k, shas in results.items() if len(shas) > 1]
    if twice:
        fail(f"attempts that published two different artifacts: {twice}")
    accepted = lineage.get("artifacts", [])
    slots = Counter((a["iteration"], a["stage"], a["shard"]) for a in accepted)
    out["accepted_results"] = len(accepted)
    for a in accepted:
        e = by_id.get(a["event_id"])
        if e is None or e.attempt != a["attempt"]:
            fail(
                f"accepted result {a['event_id']} ({a['stage']}) is not on the bus as attempt {a['attempt']}"
            )
        for ref in a["refs"].values():
            if f"/attempt-{a['attempt']}/" not in ref["uri"] and "/runs/" in ref["uri"]:
                fail(f"accepted {a['stage']} attempt {a['attempt']} points at another attempt: {ref['uri']}")
    if any(n > 1 for n in slots.values()) and not lineage.get("history"):
        fail(f"a slot accepted twice: {slots}")
    out["slots_accepted_more_than_once"] = [f"{k}" for k, n in slots.items() if n > 1]
    # Dead letters of the run, by error type (an input a store outage failed is retried, never here).
    dlq = read_topics(loop.stack.kafka_bootstrap, [Topics.dlq(n) for n in names])
    out["dead_lettered"] = {
        t: errors
        for t, rs in dlq.items()
        if (
            errors := [
                _error_type(r) for r in rs if (e := _decode(r.value)) is not None and e.run_id == run_id
            ]
        )
    }
    outage = [e for errors in out["dead_lettered"].values() for e in errors if e in OUTAGE_ERRORS]
    if outage:
        fail(f"inputs dead-lettered for the object store outage instead of retried: {outage}")
    return out


def _error_type(record) -> str:
    """The error a dead letter was sent for (its ``x-error-type`` header)."""
    return dict(record.headers or ()).get("x-error-type", b"?").decode(errors="replace")


def _decode(value):
    try:
        return envelopes.decode(value)
    except envelopes.EnvelopeError:
        return None


def _refs(env) -> str:
    """The sha256 of every artifact a result names (its identity for the idempotency check)."""
    payload = getattr(env, env.WhichOneof("payload"))
    shas = [value.sha256 for _, value in payload.ListFields() if isinstance(value, ArtifactRef)]
    if env.HasField("train_result"):
        shas.append(env.train_result.candidate.adapter.sha256)
    return ",".join(shas)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-delay", type=float, default=3.0)
    p.add_argument("--max-delay", type=float, default=15.0)
    p.add_argument("--config", type=Path, help="Run config (default: the suite's, 1 iteration on add1+add2).")
    p.add_argument("--require-promotion", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--baseline", action="store_true", help="First run the same config without faults.")
    p.add_argument(
        "--store-restart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Restart the object store once, killing a stage while it is down (default: on).",
    )
    p.add_argument("--store-down", type=float, default=8.0, help="Seconds the object store stays down.")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--root", type=Path, default=Path(".chaos"))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    config = args.config.read_text() if args.config else CONFIG
    rng = random.Random(args.seed)
    loop, prefix = make_loop(args.root / f"seed-{args.seed}")
    figures: dict = {"seed": args.seed, "prefix": prefix, "failures": []}
    fail = figures["failures"].append
    t0 = time.monotonic()
    with loop:
        figures["startup_seconds"] = round(time.monotonic() - t0, 1)
        control = Control(loop.grpc_address("evaluator"), artifact_store(loop))
        if args.baseline:
            t = time.monotonic()
            control.start(config, f"calm-{prefix}")
            calm = control.wait(f"calm-{prefix}", args.timeout)
            figures["baseline"] = {"state": calm.state, "seconds": round(time.monotonic() - t, 1)}
        run_id = f"chaos-{prefix}"
        t1 = time.monotonic()
        control.start(config, run_id)
        figures["kills"] = inject(loop, control, run_id, rng, args)
        status = control.wait(run_id, args.timeout)
        figures["run_seconds"] = round(time.monotonic() - t1, 1)
        if status is None or status.state != "completed":
            fail(f"run ended {status.state if status else 'unknown'}: {status.stop_reason if status else ''}")
        kills = [k for k in figures["kills"] if "victim" in k]
        figures["kill_count"] = len(kills)
        figures["kills_per_service"] = dict(Counter(k["victim"] for k in kills))
        figures["broker_restarts"] = sum(1 for k in kills if "broker_restart_s" in k)
        figures["store_restarts"] = sum(1 for k in kills if "store_down_s" in k)
        figures["store_down_seconds"] = round(sum(k.get("store_down_s", 0.0) for k in kills), 1)
        figures["killed_while_store_down"] = [k["victim"] for k in kills if "store_down_s" in k]
        if len(kills) < args.kills:
            fail(f"only {len(kills)} kills happened before the run ended")
        if status is not None:
            figures["run"] = {
                "state": status.state,
                "stop_reason": status.stop_reason,
                "accuracy": list(status.accuracy),
            }
            figures.update(check(loop, prefix, run_id, status, fail))
            if args.require_promotion and not figures["promotions"]["events"]:
                fail("no promotion happened in the run")
        after = snapshot(loop)
        figures["evaluator_stage_retries_since_last_restart"] = total(
            after.get("evaluator", {}), "selfimprove_stage_retries_total"
        )
        if "baseline" in figures:
            figures["time_lost_seconds"] = round(figures["run_seconds"] - figures["baseline"]["seconds"], 1)
        figures["dead_at_end"] = loop.dead()
        if loop.dead():
            fail(f"dead at the end: {loop.dead()}")
    figures["total_seconds"] = round(time.monotonic() - t0, 1)
    print_figures(figures)
    if figures["failures"]:
        for service, lines in log_tails(args.root / f"seed-{args.seed}" / "logs").items():
            print(f"--- {service}: last warnings and errors", *lines, sep="\n")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 1 if figures["failures"] else 0


def print_figures(f: dict) -> None:
    print(
        f"chaos seed {f['seed']}: {f.get('kill_count')} kills {f.get('kills_per_service')}, broker restarts {f.get('broker_restarts')}"
    )
    print(
        f"object store restarts {f.get('store_restarts')}: down {f.get('store_down_seconds')} s, "
        f"killed while it was down: {f.get('killed_while_store_down')}"
    )
    print(
        f"run: {f.get('run')} in {f.get('run_seconds')} s (baseline {f.get('baseline')}, time lost {f.get('time_lost_seconds')})"
    )
    print(
        f"retried commands: {f.get('retried_commands')}; evaluator retries counter: {f.get('evaluator_stage_retries_since_last_restart')}"
    )
    print(f"promotions: {f.get('promotions')} (event copies on the bus: {f.get('promotion_event_copies')})")
    print(
        f"manifests verified: {f.get('manifests', {}).get('verified')}; accepted results: {f.get('accepted_results')}"
    )
    print(f"dead-lettered events of the run: {f.get('dead_lettered')}")
    print(f"dead at the end: {f.get('dead_at_end')}; total {f.get('total_seconds')} s")
    print("FAILURES: " + "; ".join(f["failures"]) if f["failures"] else "OK")


if __name__ == "__main__":
    sys.exit(main())
