"""CPU the waiting system spends: the local stack and the six services with no work to do.

For each broker fetch wait (``SELFIMPROVE_KAFKA_FETCH_MAX_WAIT_MS``), starts a fresh local stack and every
service as its own process (as ``selfimprove run --local`` does), waits until each answers its health check,
lets them settle, then reads each process's CPU seconds (user + system) over ``--seconds``. Printed as a
share of one core: on a 2-core machine whatever the idle loop burns is taken from generation and training.

With ``--train-examples N``, this process then trains N examples (``training_speed.py``'s LoRA SFT, the
loop's trainer) while the idle loop stays up, and prints examples/s: what the waiting services cost the
stage that works. A wait of 0 trains with no stack and no services at all (the reference).

Run: ``.venv/bin/python benchmarks/idle_cpu.py [--waits 50 500] [--seconds 60] [--train-examples 160]``
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from selfimprove.core.local_loop import LocalLoop
from selfimprove.core.stack import LocalStack


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each named process (``/proc/PID/stat`` fields 14 and 15)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def train(examples: int) -> float:
    """Examples per second of the loop's LoRA SFT over ``examples`` template answers, in this process."""
    from training_speed import ours, rows

    seconds, _, _ = ours("smollm2-135m-instruct", rows(examples, "The answer is {answer}."), 8)
    return examples / seconds


def measure(
    wait_ms: int, seconds: float, settle: float, examples: int
) -> tuple[dict[str, float], float | None]:
    """Per-process share of one core over ``seconds`` of an idle loop fetching with ``wait_ms``, then
    the training rate beside it (``None`` without ``examples``)."""
    if not wait_ms:
        return {}, train(examples) if examples else None
    env = {"SELFIMPROVE_KAFKA_FETCH_MAX_WAIT_MS": str(wait_ms)}
    with tempfile.TemporaryDirectory(prefix="idle-cpu-") as root:
        stack = LocalStack(root=Path(root))
        with LocalLoop(stack, env=env) as loop:
            time.sleep(settle)
            pids = {**stack.pids(), **{n: p.pid for n, p in loop.procs.items() if p.pid}}
            before, start = cpu_seconds(pids), time.perf_counter()
            time.sleep(seconds)
            after, elapsed = cpu_seconds(pids), time.perf_counter() - start
            rate = train(examples) if examples else None
    return {name: (after[name] - before[name]) / elapsed for name in pids}, rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waits", type=int, nargs="+", default=[50, 500], help="fetch waits to compare (ms)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after every service is ready")
    parser.add_argument("--train-examples", type=int, default=0, help="then train this many beside it")
    args = parser.parse_args()
    waits = " ".join(map(str, args.waits))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"command: python benchmarks/idle_cpu.py --waits {waits} --seconds {args.seconds:g} "
        f"--train-examples {args.train_examples}"
    )
    results = {wait: measure(wait, args.seconds, args.settle, args.train_examples) for wait in args.waits}
    shares = {w: s for w, (s, _) in results.items() if w}
    if shares:
        names = list(next(iter(shares.values())))
        print("share of one core while idle, per process")
        print(f"{'process':<18}" + "".join(f"{f'{w} ms':>10}" for w in shares))
        for name in names:
            print(f"{name:<18}" + "".join(f"{100 * shares[w][name]:>9.1f}%" for w in shares))
        print(f"{'total':<18}" + "".join(f"{100 * sum(shares[w].values()):>9.1f}%" for w in shares))
    if args.train_examples:
        print(f"training beside it, {args.train_examples} examples, LoRA SFT, batch 8 (examples/s)")
        for wait, (_, rate) in results.items():
            print(f"{f'{wait} ms' if wait else 'no stack':<18}{rate:>10.2f}")


if __name__ == "__main__":
    main()
