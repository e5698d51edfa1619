"""gRPC serving latency of the refinement service, idle and while it calibrates.

Starts its own Tansu + SeaweedFS on loopback and the real refinement service as its own process (a
tiny random Llama as its base, or the real SmolLM2 with ``--real``), then sends ``--requests`` gRPC
``Generate`` calls at a steady ``--rate`` (open loop: a slow answer does not delay the next send)
twice: with the service idle, then while a refine command's calibration runs (a large dev set, so
that it outlasts the requests). Prints p50/p99 latency of both and the ratio of the p99s; only the
requests sent before the calibration's result was published count as "during". The goal: p99
during calibration within 2x of idle (a request waits for the engine call in progress, never for
the whole calibration).

Run: ``.venv/bin/python benchmarks/serving_latency.py [--real] [--requests 40] [--rate 4] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from selfimprove.core import envelope as envelopes  # noqa: E402
from selfimprove.core.bus import Bus  # noqa: E402
from selfimprove.core.stack import LocalStack  # noqa: E402
from selfimprove.v2 import refinement_pb2 as pb  # noqa: E402
from selfimprove.v2 import refinement_pb2_grpc as pb_grpc  # noqa: E402
from selfimprove.v2.common_pb2 import ModelRef, Stage, TaskSpec  # noqa: E402
from selfimprove.v2.stages_pb2 import RefineCommand  # noqa: E402
from tests.support.buskit import ServiceProcess, kafka_settings, read_topic  # noqa: E402

PROMPT = "What is 48 + 27?"
CALIBRATING = "selfimprove_refinement_calibrations_in_progress"


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile.

    >>> percentile([3.0, 1.0, 2.0], 0.5), percentile([1.0, 2.0, 3.0], 0.99)
    (2.0, 3.0)
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def tiny_base(root: Path) -> Path:
    """A tiny random Llama folder (seconds to build; the answers are noise, the timing is real)."""
    from selfimprove.runtime.tiny import tiny_llama

    model, tokenizer = tiny_llama(seed=0)
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    return root / "base"


async def send_steady(port: int, count: int, rate: float, max_new_tokens: int) -> list[tuple[float, float]]:
    """``count`` Generate calls, one every ``1 / rate`` s; ``(sent at, latency)`` of each."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RefinementServiceStub(channel)

        async def one(at: float) -> tuple[float, float]:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            sent = time.monotonic()
            await stub.Generate(
                pb.GenerateRequest(prompt=PROMPT, max_new_tokens=max_new_tokens), timeout=3600
            )
            return sent, time.monotonic() - sent

        start = time.monotonic()
        return list(await asyncio.gather(*(one(start + i / rate) for i in range(count))))


async def wait_calibrating(proc: ServiceProcess, timeout: float) -> bool:
    """Whether the service reported a calibration in progress within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.counter(CALIBRATING) >= 1:
            return True
        await asyncio.sleep(0.1)
    return False


async def measure(stack: LocalStack, proc: ServiceProcess, port: int, prefix: str, base: str, args) -> dict:
    await send_steady(port, 3, args.rate, args.max_new_tokens)  # warm up
    idle = [lat for _, lat in await send_steady(port, args.requests, args.rate, args.max_new_tokens)]
    cmd = RefineCommand(
        incumbent=ModelRef(base=base, version="bench/iter-000"),
        task=TaskSpec(name="arithmetic", params_json="{}"),
        dev_size=args.dev_size,
        seed=1,
        strategies=[f"self_consistency@{args.k}"],
    )
    env = envelopes.make(
        run_id=prefix, iteration=1, stage=Stage.STAGE_REFINE, producer="bench", refine_command=cmd
    )
    result_topic = f"{prefix}.evt.refine"
    published = time.monotonic()
    async with Bus(kafka_settings(stack, prefix)) as bus:
        await bus.publish(bus.topics.command(Stage.STAGE_REFINE), env)
    seen = await wait_calibrating(proc, args.lead)  # the gauge is absent before that metric existed
    done_at: list[float] = []
    failures: list[str] = []

    async def watch() -> None:
        records = await read_topic(stack.kafka_bootstrap, result_topic, 1, timeout=args.timeout)
        done_at.append(time.monotonic())
        for record in records:
            out = envelopes.decode(record.value)
            if out.WhichOneof("payload") != "refine_result":
                failures.append(str(out))

    watcher = asyncio.create_task(watch())
    sent = await send_steady(port, args.requests, args.rate, args.max_new_tokens)
    await watcher
    if not done_at:
        raise TimeoutError(f"no calibration result within {args.timeout} s")
    if failures:
        raise RuntimeError(f"the calibration failed: {failures[0]}")
    during = [lat for at, lat in sent if at < done_at[0]]
    return {
        "idle": idle,
        "during": during,
        "sent_during": len(during),
        "calibration_s": done_at[0] - published,
        "calibrating_seen": seen,
    }


def summary(result: dict, args) -> dict:
    idle, during = result["idle"], result["during"]
    out = {
        "model": "smollm2-135m-instruct" if args.real else "tiny-llama",
        "requests": args.requests,
        "rate_per_s": args.rate,
        "idle_p50_ms": 1000 * percentile(idle, 0.5),
        "idle_p99_ms": 1000 * percentile(idle, 0.99),
        "sent_during_calibration": result["sent_during"],
        "calibration_s": result["calibration_s"],
        "calibrating_seen": result["calibrating_seen"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if during:
        out["during_p50_ms"] = 1000 * percentile(during, 0.5)
        out["during_p99_ms"] = 1000 * percentile(during, 0.99)
        out["p99_ratio"] = out["during_p99_ms"] / out["idle_p99_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", action="store_true", help="the real SmolLM2-135M-Instruct base")
    ap.add_argument("--requests", type=int, default=40, help="requests per phase")
    ap.add_argument("--rate", type=float, default=4.0, help="requests per second")
    ap.add_argument("--max-new-tokens", type=int, default=8, help="tokens per request")
    ap.add_argument("--dev-size", type=int, default=0, help="calibration dev problems (0: per model)")
    ap.add_argument("--k", type=int, default=5, help="self_consistency@k is calibrated against greedy")
    ap.add_argument("--calibration-tokens", type=int, default=0, help="tokens per sample (0: per model)")
    ap.add_argument("--lead", type=float, default=10.0, help="seconds to wait for the calibration to start")
    ap.add_argument("--timeout", type=float, default=1800.0, help="longest calibration waited for")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.requests < 1 or args.rate <= 0:
        ap.error("--requests must be at least 1 and --rate positive")
    args.dev_size = args.dev_size or (60 if args.real else 100)
    args.calibration_tokens = args.calibration_tokens or (48 if args.real else 24)
    prefix = f"lat{os.getpid()}"
    with LocalStack() as stack, tempfile.TemporaryDirectory() as tmp:
        base = "smollm2-135m-instruct" if args.real else str(tiny_base(Path(tmp)))
        proc = ServiceProcess(
            "-m selfimprove.refinement",
            stack,
            prefix,
            Path(tmp) / "refinement.log",
            SELFIMPROVE_INSTANCE="bench",
            SELFIMPROVE_REFINEMENT_BASE=base,
            SELFIMPROVE_REFINEMENT_GRPC_HOST="127.0.0.1",
            SELFIMPROVE_REFINEMENT_GRPC_PORT="0",
            SELFIMPROVE_REFINEMENT_HTTP_HOST="127.0.0.1",
            SELFIMPROVE_REFINEMENT_HTTP_PORT="0",
            SELFIMPROVE_REFINEMENT_RATE_PER_SECOND="1000",
            SELFIMPROVE_REFINEMENT_RATE_BURST="1000",
            SELFIMPROVE_REFINEMENT_CALIBRATION_MAX_NEW_TOKENS=str(args.calibration_tokens),
        )
        try:
            proc.wait_ready(timeout=300)
            url = f"http://127.0.0.1:{proc.port}/health"
            port = json.loads(urllib.request.urlopen(url, timeout=5).read())["grpc_port"]
            result = asyncio.run(measure(stack, proc, port, prefix, base, args))
        finally:
            proc.stop()
    out = summary(result, args)
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"command: {out['command']}\nmachine: {out['machine']}")
    print(f"model: {out['model']}, {args.requests} requests per phase at {args.rate}/s")
    print(f"idle: p50 {out['idle_p50_ms']:.0f} ms, p99 {out['idle_p99_ms']:.0f} ms")
    if "during_p99_ms" not in out:
        print(f"the calibration ({out['calibration_s']:.1f} s) ended before any request: raise --dev-size")
        return
    print(
        f"during calibration ({out['sent_during_calibration']} requests, calibration "
        f"{out['calibration_s']:.1f} s): p50 {out['during_p50_ms']:.0f} ms, p99 {out['during_p99_ms']:.0f} ms"
    )
    print(f"p99 during / idle: {out['p99_ratio']:.2f}x (goal <= 2x)")


if __name__ == "__main__":
    main()
