"""Fuzz suite: malformed messages on every topic, malformed gRPC and HTTP requests against the whole
loop, and malformed data files and model folders through the CLI and the loaders.

    .venv/bin/python benchmarks/fuzz.py --messages 10000 --seed 1            # make fuzz
    .venv/bin/python benchmarks/fuzz.py --messages 500 --huge 2 --json out.json
    .venv/bin/python benchmarks/fuzz.py --inputs-only                        # no loop: files and folders

Starts the local stack and every service (``LocalLoop``), sends the cases of ``selfimprove.core.fuzz``
to every command, result and control topic, fuzzes both gRPC servers, waits until every service has
accounted for every message on its topics, then starts a real run and waits for it to complete.
Accounting rule, per consumer group and topic: messages in = fuzz messages sent + messages the
services themselves published there meanwhile (stage failures answering fuzzed commands), and
messages in = handled + duplicate + dead-lettered (``selfimprove_messages_consumed_total``). Handled
fuzz messages are the ones refused with a ``stage_failure`` result or legitimately ignored (results
and stops for runs that do not exist, decisions); the rest are in a DLQ. The new inputs
(``inputfuzz``): every bad data file through the task loader, ``config check`` and ``eval --task``;
every malformed request to the refinement service's OpenAI-compatible endpoint (then a valid one,
and its request metrics: no ``INTERNAL``); every corrupt model folder through the engine loader and
``eval --model``. Each is counted clear / unclear / crash / accepted. Exit status 1 on a failure:
a crash, a 5xx, an unclear refusal or an unexpected acceptance among them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import grpcfuzz
import inputfuzz
from aiokafka import AIOKafkaProducer
from suitekit import make_loop, read_topics, snapshot, total, wait_for

from selfimprove.core import envelope as envelopes
from selfimprove.core import fuzz
from selfimprove.core.topics import STAGES, Topics
from selfimprove.v2.common_pb2 import Stage

OUTCOMES = ("handled", "duplicate", "dlq")
# The run after the fuzzing: one small but complete iteration with the real model (add1 gives data).
RUN_CONFIG = """
base_model: smollm2-135m-instruct
seed: 5
task: {name: arithmetic, params: {categories: [add2]}, dev_size: 8}
budget: {iterations: 1, wall_time_s: 1200}
acquisition: {shards: 1, prompts_per_shard: 16, samples_per_prompt: 4, max_new_tokens: 32}
training: {method: sft, hparams: {epochs: 2, batch_size: 4}, require_loss_drop: false}
evaluation: {max_new_tokens: 24}
refinement: {strategies: [greedy], token_budget: 64, dev_size: 4}
"""


def consumes(topics: Topics) -> dict[str, list[str]]:
    """Which topics each service consumes (refinement: calibration and the serving swaps)."""
    return {
        "evaluator": [topics.result(s) for s in STAGES] + [topics.control],
        "evaluator-worker": [topics.command(Stage.STAGE_EVALUATE)],
        "acquisition": [topics.command(Stage.STAGE_ACQUIRE)],
        "selection": [topics.command(Stage.STAGE_SELECT)],
        "trainer": [topics.command(Stage.STAGE_TRAIN)],
        "refinement": [topics.command(Stage.STAGE_REFINE), topics.control],
    }


async def send(bootstrap: str, cases: list[fuzz.Case]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=8 * 1024 * 1024, linger_ms=5
    )
    await producer.start()
    start = time.monotonic()
    try:
        for i in range(0, len(cases), 200):
            futures = [await producer.send(c.topic, c.value, key=c.key) for c in cases[i : i + 200]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - start


def accounted(before, after, sent: Counter, plan: dict[str, list[str]]) -> dict:
    """Per service and topic: messages expected in, and how each was consumed (deltas)."""
    published: Counter = Counter()
    for name in after:
        for topic in {t for ts in plan.values() for t in ts}:
            published[topic] += total(
                after[name], "selfimprove_messages_published_total", topic=topic
            ) - total(before.get(name, {}), "selfimprove_messages_published_total", topic=topic)
    rows = {}
    for name, topics in plan.items():
        for topic in topics:
            got = {
                o: total(after.get(name, {}), "selfimprove_messages_consumed_total", topic=topic, outcome=o)
                - total(before.get(name, {}), "selfimprove_messages_consumed_total", topic=topic, outcome=o)
                for o in OUTCOMES
            }
            rows[f"{name} {topic}"] = {"expected": sent[topic] + published[topic], **got}
    return rows


def balanced(rows: dict) -> bool:
    return all(r["expected"] == sum(r[o] for o in OUTCOMES) for r in rows.values())


def per_kind(cases, dlq_records, result_records) -> dict:
    """Per kind: sent, copies in a DLQ (by consumer group), stage failures answering it."""
    kind_of = {}
    ids = {}
    for c in cases:
        kind_of.setdefault(hashlib.sha256(c.value or b"").hexdigest(), c.kind)
        with contextlib.suppress(envelopes.EnvelopeError):
            ids[envelopes.decode(c.value).event_id] = c.kind
    table: dict[str, Counter] = defaultdict(Counter)
    for c in cases:
        table[c.kind]["sent"] += 1
    for records in dlq_records.values():
        for r in records:
            group = dict(r.headers).get("x-consumer-group", b"?").decode().rsplit(".", 1)[-1]
            kind = kind_of.get(hashlib.sha256(r.value or b"").hexdigest(), "service-published")
            table[kind][f"dlq:{group}"] += 1
    for records in result_records.values():
        for r in records:
            try:
                env = envelopes.decode(r.value)
            except envelopes.EnvelopeError:
                continue
            if env.causation_id in ids and env.HasField("stage_failure"):
                table[ids[env.causation_id]]["stage_failure"] += 1
    return {k: dict(v) for k, v in sorted(table.items())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--huge", type=int, default=10, help="How many of them carry a 5 MB field.")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--config", type=Path, help="Config of the run afterwards (default: RUN_CONFIG).")
    p.add_argument("--no-run", action="store_true", help="Skip the run after the fuzzing.")
    p.add_argument("--root", type=Path, default=Path(".fuzz"), help="Stack data and service logs.")
    p.add_argument("--settle-timeout", type=float, default=1800.0)
    p.add_argument("--json", type=Path, help="Write the figures here too.")
    p.add_argument(
        "--no-inputs", action="store_true", help="Skip the data-file, HTTP and model-folder fuzzing."
    )
    p.add_argument(
        "--inputs-only",
        action="store_true",
        help="Only the data files and model folders (no loop, so no HTTP endpoint to fuzz).",
    )
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    if args.inputs_only:
        return inputs_only(args)
    loop, prefix = make_loop(args.root / f"seed-{args.seed}")
    topics = Topics(prefix)
    figures: dict = {"seed": args.seed, "prefix": prefix, "failures": []}
    fail = figures["failures"].append
    t0 = time.monotonic()
    with loop:
        figures["startup_seconds"] = round(time.monotonic() - t0, 1)
        cases = fuzz.generate(rng, topics, args.messages, huge=args.huge)
        sent = Counter(c.topic for c in cases)
        plan = consumes(topics)
        before = snapshot(loop)
        figures["send_seconds"] = round(asyncio.run(send(loop.stack.kafka_bootstrap, cases)), 1)
        figures["grpc"] = grpcfuzz.run(loop, rng, fail)
        if not args.no_inputs:
            figures["inputs"] = fuzz_inputs(loop, random.Random(args.seed), args.root, fail)
        t1 = time.monotonic()
        rows: dict = {}

        def settled() -> bool:
            nonlocal rows
            rows = accounted(before, snapshot(loop), sent, plan)
            return balanced(rows) or bool(loop.dead())

        wait_for(settled, args.settle_timeout, every=3.0)
        figures["settle_seconds"] = round(time.monotonic() - t1, 1)
        figures["accounting"] = rows
        if not balanced(rows):
            fail("not every message was accounted for (see accounting)")
        after = snapshot(loop)
        figures["evaluator_results_ignored"] = total(
            after["evaluator"], "selfimprove_results_ignored_total"
        ) - total(before["evaluator"], "selfimprove_results_ignored_total")
        figures["dead_after_fuzz"] = loop.dead()
        names = topics.all()
        dlqs = read_topics(loop.stack.kafka_bootstrap, [Topics.dlq(t) for t in names])
        results = read_topics(loop.stack.kafka_bootstrap, [topics.result(s) for s in STAGES])
        figures["dlq_messages"] = {t: len(r) for t, r in dlqs.items()}
        figures["kinds"] = per_kind(cases, dlqs, results)
        figures["messages_sent"] = len(cases)
        figures["messages_per_topic"] = dict(sent)
        if loop.dead():
            fail(f"dead after fuzzing: {loop.dead()}")
        elif not args.no_run:
            from selfimprove.cli.run import follow

            t2 = time.monotonic()
            summary = follow(
                loop.grpc_address("evaluator"),
                args.config.read_text() if args.config else RUN_CONFIG,
                f"fuzz-run-{prefix}",
                quiet=True,
            )
            figures["run"] = {
                "state": summary["state"],
                "stop_reason": summary["stop_reason"],
                "accuracy": summary["accuracy"],
                "seconds": round(time.monotonic() - t2, 1),
            }
            if summary["state"] != "completed" or not summary["accuracy"]:
                fail(f"the run after fuzzing ended {summary['state']}: {summary['stop_reason']}")
        figures["dead_at_end"] = loop.dead()
        if loop.dead():
            fail(f"dead at the end: {loop.dead()}")
    figures["total_seconds"] = round(time.monotonic() - t0, 1)
    print_figures(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if figures["failures"] else 0


def refinement_codes(loop) -> Counter:
    """The refinement service's request counter by code (gRPC and HTTP share it)."""
    out: Counter = Counter()
    for (name, labels), value in snapshot(loop).get("refinement", {}).items():
        if name == "selfimprove_refinement_requests_total":
            out[dict(labels).get("code", "?")] += value
    return out


def fuzz_inputs(loop, rng: random.Random, root: Path, fail) -> dict:
    """The new inputs (``inputfuzz``) with the loop's refinement HTTP endpoint; failures to ``fail``."""
    from selfimprove.refinement.settings import RefinementSettings

    port = int(loop.health("refinement")["http_port"])
    limit = RefinementSettings().max_request_bytes
    t = time.monotonic()
    figures, failures = inputfuzz.run_all(root / "inputs", rng, port, limit, lambda: refinement_codes(loop))
    figures["seconds"] = round(time.monotonic() - t, 1)
    for failure in failures:
        fail(failure)
    return figures


def inputs_only(args) -> int:
    """``--inputs-only``: the data files and model folders, without a loop."""
    t = time.monotonic()
    inputs, failures = inputfuzz.run_all(args.root / "inputs", random.Random(args.seed), None, 0)
    figures = {"seed": args.seed, "inputs": inputs, "failures": failures}
    figures["total_seconds"] = round(time.monotonic() - t, 1)
    print_inputs(inputs)
    print("FAILURES: " + "; ".join(failures) if failures else "OK")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if failures else 0


def print_inputs(inputs: dict) -> None:
    for part in ("data_files", "model_folders"):
        if part not in inputs:
            continue
        table = inputs[part]
        print(
            f"{part} ({len(table)} kinds, {inputs.get(part + '_seconds')} s): {dict(inputfuzz.summary(table))}"
        )
        for kind, entries in table.items():
            print(f"  {kind:28} " + "  ".join(f"{e}: {dict(c)}" for e, c in entries.items()))
    if "http" in inputs:
        cases = inputs["http"]["cases"]
        outcomes = Counter(c["outcome"] for c in cases.values())
        print(f"http ({len(cases)} requests, {inputs.get('http_seconds')} s): {dict(outcomes)}")
        for kind, c in cases.items():
            print(f"  {kind:28} {c['status']:>4} {c['outcome']}")
        print(f"  request metrics by code (delta): {inputs['http'].get('metric_codes')}")


def print_figures(f: dict) -> None:
    print(f"fuzz seed {f['seed']}: {f.get('messages_sent', 0)} messages, sent in {f.get('send_seconds')} s")
    print(f"{'kind':16} {'sent':>6} {'dlq copies (per group)':40} {'stage_failure':>13}")
    for kind, row in f.get("kinds", {}).items():
        dlq = ", ".join(f"{k[4:]}={v}" for k, v in sorted(row.items()) if k.startswith("dlq:"))
        print(f"{kind:16} {row.get('sent', 0):>6} {dlq:40} {row.get('stage_failure', 0):>13}")
    print("accounting (per service and topic: expected = handled + duplicate + dlq):")
    for key, r in f.get("accounting", {}).items():
        print(
            f"  {key:45} {r['expected']:>6.0f} = {r['handled']:.0f} + {r['duplicate']:.0f} + {r['dlq']:.0f}"
        )
    print(f"gRPC: {json.dumps(f.get('grpc', {}))}")
    print(f"findings: {f.get('grpc', {}).get('findings')}")
    print(f"evaluator results_ignored delta: {f.get('evaluator_results_ignored')}")
    print(f"settled in {f.get('settle_seconds')} s; run after: {f.get('run')}")
    if "inputs" in f:
        print_inputs(f["inputs"])
    print(f"crashed services: {f.get('dead_at_end')}; total {f.get('total_seconds')} s")
    print("FAILURES: " + "; ".join(f["failures"]) if f["failures"] else "OK")


if __name__ == "__main__":
    sys.exit(main())
