"""Soak: real runs back to back for hours while services are killed at random, recording each
process's memory and open files and the bus and store sizes; no service may grow without bound.

    .venv/bin/python benchmarks/soak.py --duration-s 10800 --json .soak/soak.json   # make soak
    .venv/bin/python benchmarks/soak.py --duration-s 600 --warmup-s 120 --min-span-s 120  # a quick check

On the local loop (``suitekit.make_loop``: the stack and the six service processes) it starts a run
through the control plane (``chaos.Control``), and when it ends the next one, until ``--duration-s``
has passed; then it stops killing and waits (up to ``--grace-s``) for the last run. Every
``--min-delay``..``--max-delay`` seconds (``random.Random(seed)``) a random service gets SIGKILL and
is restarted at once, as in the chaos suite. A service that exits by itself is a finding: it is
restarted and the soak fails.

Every ``--sample-s`` seconds: per service process and for the broker (``tansu``) and the object
store (``weed``), the resident memory (``VmRSS`` of ``/proc/<pid>/status``) and open file
descriptors (``/proc/<pid>/fd``), each summed over the process and its descendants; and the bytes
and objects under the broker's bucket (the Tansu log: the bus), the artifacts' bucket (the store)
and the object store's data folder on disk. A killed service comes back with a new pid, so growth
is judged inside each process (``soakkit``: per-process slopes after ``--warmup-s``, verdict from
the second half). The bus and the store grow with every run by design (no retention here): their
sizes are reported, not judged.

Exit status 1 when a service ``grows``, a run did not complete, or a service died by itself.
``--json`` gets every sample, the runs, the kills and the summary (rewritten after each run, so a
soak cut short keeps what it measured).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from chaos import FINAL, Control
from soakkit import Limits, Sample, summarize, table
from suitekit import artifact_store, log_tails, make_loop

# Small runs (one iteration of add2, small shards): a few minutes each, so a soak holds many.
CONFIG = """
base_model: smollm2-135m-instruct
seed: 5
task: {name: arithmetic, params: {categories: [add2]}, dev_size: 8}
budget: {iterations: 1, wall_time_s: 1500}
acquisition: {shards: 2, prompts_per_shard: 8, samples_per_prompt: 4, max_new_tokens: 32}
training: {method: sft, hparams: {epochs: 2, batch_size: 4}, require_loss_drop: false}
evaluation: {max_new_tokens: 24, alpha: 0.5}
refinement: {strategies: [greedy], token_budget: 64, dev_size: 4}
stages:
  acquire: {timeout_s: 180, max_attempts: 4}
  select: {timeout_s: 120, max_attempts: 4}
  train: {timeout_s: 240, max_attempts: 4}
  evaluate: {timeout_s: 180, max_attempts: 4}
  refine: {timeout_s: 180, max_attempts: 4}
"""


def parents() -> dict[int, int]:
    """pid -> parent pid of every process on this machine (``/proc/<pid>/stat``)."""
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
    return out


def tree(pid: int, ppids: dict[int, int]) -> list[int]:
    """``pid`` and its descendants.

    >>> tree(1, {2: 1, 3: 2, 4: 9, 1: 0})
    [1, 2, 3]
    """
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in ppids.items() if p in frontier]
        found += frontier
    return found


def measure(pid: int, ppids: dict[int, int]) -> tuple[int, int] | None:
    """(RSS bytes, open fds) of ``pid`` and its descendants; None when ``pid`` is gone."""
    rss = fds = 0
    for i, p in enumerate(tree(pid, ppids)):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            count = len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            if i == 0:
                return None
            continue
        kb = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
        rss, fds = rss + int(kb) * 1024, fds + count
    return rss, fds


def bucket_size(client, bucket: str) -> tuple[int, int]:
    """(bytes, objects) under ``bucket``."""
    size = count = 0
    for obj in client.list_objects(bucket, recursive=True):
        size, count = size + (obj.size or 0), count + 1
    return size, count


def dir_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


class Soak:
    """The soak's clock, its samples and its records; ``step`` does whatever is due."""

    def __init__(self, loop, args, config: str) -> None:
        self.loop, self.args, self.config = loop, args, config
        self.rng = random.Random(args.seed)
        self.control = Control(loop.grpc_address("evaluator"), artifact_store(loop))
        self.s3 = loop.stack.s3_client()
        self.t0 = time.monotonic()
        self.samples: list[Sample] = []
        self.sizes: list[dict] = []
        self.runs: list[dict] = []
        self.kills: list[dict] = []
        self.failures: list[str] = []
        self.run: dict | None = None
        self.next_sample = self.next_check = self.t0
        self.next_kill = self.t0 + self.delay()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def delay(self) -> float:
        return self.rng.uniform(self.args.min_delay, self.args.max_delay)

    def start_run(self) -> None:
        run_id = f"soak-{self.args.prefix}-{len(self.runs) + 1}"
        self.run = {"run_id": run_id, "start_t": self.now(), "kills": 0}
        try:
            self.control.start(self.config, run_id)
        except (subprocess.SubprocessError, OSError) as exc:
            self.end_run("not started", str(exc))
        else:
            print(f"[{self.now():7.0f} s] run {run_id} started", flush=True)

    def end_run(self, state: str, reason: str) -> None:
        assert self.run is not None
        self.run.update(state=state, stop_reason=reason, seconds=round(self.now() - self.run["start_t"], 1))
        self.runs.append(self.run)
        if state != "completed":
            self.failures.append(f"run {self.run['run_id']} ended {state}: {reason}")
        print(
            f"[{self.now():7.0f} s] run {self.run['run_id']} {state} in {self.run['seconds']} s", flush=True
        )
        self.run = None
        self.write()

    def check_run(self) -> None:
        assert self.run is not None
        status = self.control.status(self.run["run_id"])
        if status is not None and status.state in FINAL:
            self.end_run(status.state, status.stop_reason)
        elif self.now() - self.run["start_t"] > self.args.run_timeout:
            self.end_run("timed out", f"not final after {self.args.run_timeout} s")

    def kill(self) -> None:
        victim = self.rng.choice(sorted(self.loop.procs))
        self.loop.kill(victim)
        self.loop.restart(victim, wait=False)
        self.kills.append(
            {"t": self.now(), "victim": victim, "run": self.run["run_id"] if self.run else None}
        )
        if self.run is not None:
            self.run["kills"] += 1
        print(f"[{self.now():7.0f} s] kill {len(self.kills)}: {victim}", flush=True)

    def sample(self) -> None:
        t, ppids = self.now(), parents()
        pids = {name: proc.pid for name, proc in self.loop.procs.items() if proc.alive()}
        for name, proc in self.loop.procs.items():
            if not proc.alive():  # a kill restarts at once: this one exited by itself
                code = proc.popen.returncode if proc.popen is not None else None
                last = " | ".join(proc.tail(3).splitlines())
                self.failures.append(f"{name} exited by itself (code {code}) at {t} s, restarted: {last}")
                self.loop.restart(name, wait=False)
        for name, pid in {**pids, **self.loop.stack.pids()}.items():
            found = measure(pid, ppids)
            if found is not None:
                self.samples.append(Sample(t, name, pid, *found))
        row: dict = {"t": t, "disk_bytes": dir_bytes(self.loop.stack.root / "weed")}
        for label, bucket in (("bus", self.loop.stack.broker_bucket), ("store", self.loop.stack.bucket)):
            try:
                row[f"{label}_bytes"], row[f"{label}_objects"] = bucket_size(self.s3, bucket)
            except Exception as exc:  # noqa: BLE001 (the store may be busy: the next sample counts)
                row[f"{label}_error"] = type(exc).__name__
        self.sizes.append(row)

    def step(self) -> bool:
        """Do what is due; False once the soak is over."""
        now = time.monotonic()
        ending = now - self.t0 >= self.args.duration_s
        if now >= self.next_sample:
            self.sample()
            self.next_sample += self.args.sample_s
        if self.run is not None and now >= self.next_check:
            self.check_run()
            self.next_check = now + 10
        if self.run is None:
            if ending:
                return False
            self.start_run()
        if ending and now - self.t0 >= self.args.duration_s + self.args.grace_s:
            assert self.run is not None
            self.run.update(state="unfinished", seconds=round(self.now() - self.run["start_t"], 1))
            self.runs.append(self.run)  # cut off by the soak's end: neither completed nor failed
            self.run = None
            return False
        if not ending and now >= self.next_kill:
            self.kill()
            self.next_kill = time.monotonic() + self.delay()
        due = min(self.next_sample, self.next_check, *([] if ending else [self.next_kill]))
        time.sleep(min(max(due - time.monotonic(), 0.2), 5.0))
        return True

    def figures(self) -> dict:
        limits = Limits(
            warmup_s=self.args.warmup_s,
            rss_mib_per_h=self.args.rss_mib_per_h,
            rss_frac_per_h=self.args.rss_frac_per_h,
            fds_per_h=self.args.fds_per_h,
            min_span_s=self.args.min_span_s,
        )
        summary = summarize(self.samples, limits) if self.samples else {}
        states = Counter(r["state"] for r in self.runs)
        sizes = [r for r in self.sizes if "bus_bytes" in r and "store_bytes" in r]
        return {
            "seconds": self.now(),
            "limits": asdict(limits),
            "runs_completed": states.get("completed", 0),
            "runs_failed": sum(n for s, n in states.items() if s not in ("completed", "unfinished")),
            "runs_unfinished": states.get("unfinished", 0),
            "kills": len(self.kills),
            "kills_per_service": dict(Counter(k["victim"] for k in self.kills)),
            "sizes_first": sizes[0] if sizes else None,
            "sizes_last": sizes[-1] if sizes else None,
            "summary": {name: asdict(s) for name, s in summary.items()},
            "growing": [name for name, s in summary.items() if s.verdict == "grows"],
            "failures": self.failures,
            "table": table(summary) if summary else "",
            "runs": self.runs,
            "kill_log": self.kills,
            "sizes": self.sizes,
            "samples": [asdict(s) for s in self.samples],
        }

    def write(self) -> dict:
        figures = self.figures()
        if self.args.json:
            self.args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.args.json.with_suffix(".tmp")
            tmp.write_text(json.dumps(figures, indent=1, default=str))
            tmp.replace(self.args.json)
        return figures


def print_figures(f: dict) -> None:
    print(f["table"])
    print(
        f"runs: {f['runs_completed']} completed, {f['runs_failed']} failed, {f['runs_unfinished']} cut off "
        f"at the end; {f['kills']} kills {f['kills_per_service']}; {f['seconds']:.0f} s"
    )
    first, last = f["sizes_first"] or {}, f["sizes_last"] or {}
    for label in ("bus", "store"):
        print(
            f"{label}: {_mib(first.get(f'{label}_bytes'))} -> {_mib(last.get(f'{label}_bytes'))} MiB, "
            f"{first.get(f'{label}_objects')} -> {last.get(f'{label}_objects')} objects"
        )
    print(f"object store on disk: {_mib(first.get('disk_bytes'))} -> {_mib(last.get('disk_bytes'))} MiB")
    problems = f["failures"] + [f"{name} grows" for name in f["growing"]]
    print("FAILURES: " + "; ".join(problems) if problems else "OK")


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration-s", type=float, default=3 * 3600.0, help="Start runs until this has passed.")
    p.add_argument("--sample-s", type=float, default=30.0, help="Seconds between samples.")
    p.add_argument("--min-delay", type=float, default=60.0, help="Fewest seconds between two kills.")
    p.add_argument("--max-delay", type=float, default=300.0, help="Most seconds between two kills.")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--config", type=Path, help="Run config (default: one iteration of add2, small shards).")
    p.add_argument("--run-timeout", type=float, default=1800.0, help="A run not final by then failed.")
    p.add_argument(
        "--grace-s", type=float, default=900.0, help="How long the last run may take after the end."
    )
    p.add_argument(
        "--warmup-s", type=float, default=600.0, help="Each process's samples before this are ignored."
    )
    p.add_argument("--min-span-s", type=float, default=600.0, help="Least post-warm-up time for a verdict.")
    p.add_argument("--rss-mib-per-h", type=float, default=20.0)
    p.add_argument("--rss-frac-per-h", type=float, default=0.10)
    p.add_argument("--fds-per-h", type=float, default=5.0)
    p.add_argument("--root", type=Path, default=Path(".soak"))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not 0 < args.min_delay <= args.max_delay:
        p.error(f"need 0 < --min-delay <= --max-delay, got {args.min_delay} and {args.max_delay}")
    if args.sample_s <= 0 or args.duration_s <= 0:
        p.error("--sample-s and --duration-s must be positive")
    if not Path("/proc/self/status").exists():
        p.error("the soak reads /proc: it runs on Linux")
    config = args.config.read_text() if args.config else CONFIG
    loop, args.prefix = make_loop(args.root / f"seed-{args.seed}")
    with loop:
        soak = Soak(loop, args, config)
        while soak.step():
            pass
        soak.sample()
        for name in loop.procs:
            try:
                loop.wait_ready(name)
            except Exception as exc:  # noqa: BLE001 (a finding, reported below)
                soak.failures.append(f"{name} not ready at the end: {exc}")
        if loop.dead():
            soak.failures.append(f"dead at the end: {loop.dead()}")
        figures = soak.write()
    print_figures(figures)
    if figures["failures"] or figures["growing"]:
        for service, lines in log_tails(args.root / f"seed-{args.seed}" / "logs").items():
            print(f"--- {service}: last warnings and errors", *lines, sep="\n")
    return 1 if figures["failures"] or figures["growing"] else 0


if __name__ == "__main__":
    sys.exit(main())
