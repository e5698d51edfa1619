"""Runs a compose plan (tests/support/compose_plan.py) as local processes, in ``depends_on`` order: a
one-shot job must exit 0 before what waits on it starts; a long-running service must pass its own
compose healthcheck (run as a process) before a service that waits on it being healthy starts, and
by the end of ``up``. Each process logs to ``<logs>/<service>.log`` and dies with the test
(``core.procs.Proc``)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from selfimprove.core.procs import Proc, ProcessError
from tests.support.compose_plan import Step

JOB_TIMEOUT_S = 600.0


def base_env(bin_dir: Path) -> dict[str, str]:
    """This process's environment without ``SELFIMPROVE_*`` (only the compose file sets those), the
    venv first on PATH, and no network for models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFIMPROVE_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1"
    )
    return env


class ComposeProcesses:
    """The processes of a plan. ``health_floor_s``: the least time a service gets to turn healthy
    (its compose budget, start_period + interval x retries, may be shorter than a CPU model load
    beside five others on a small machine)."""

    def __init__(
        self,
        steps: list[Step],
        logs: Path,
        env: Mapping[str, str],
        scratch: Path,
        health_floor_s: float = 900.0,
    ) -> None:
        self.steps = {s.name: s for s in steps}
        self.logs = logs
        self.env = dict(env)
        self.scratch = scratch
        self.health_floor_s = health_floor_s
        self.procs: dict[str, Proc] = {}
        self.completed: set[str] = set()
        self.healthy: set[str] = set()

    def env_of(self, step: Step) -> dict[str, str]:
        return {**self.env, **step.env}

    def up(self) -> None:
        """Start every step in order; raise ``ProcessError`` naming the first that fails."""
        for step in self.steps.values():
            for value in step.env.values():  # the folders that stand for its volumes and tmpfs
                if value.startswith(str(self.scratch)):
                    Path(value).mkdir(parents=True, exist_ok=True)
            for dep, condition in step.needs.items():
                self.satisfy(step.name, dep, condition)
            if step.kind == "job":
                self.run_job(step)
            elif step.kind == "service":
                proc = Proc(step.name, step.argv, self.logs / f"{step.name}.log", self.env_of(step))
                proc.start()
                self.procs[step.name] = proc
        for step in self.steps.values():
            if step.kind == "service":
                self.wait_healthy(step)

    def satisfy(self, name: str, dep: str, condition: str) -> None:
        target = self.steps[dep]
        if target.kind == "stand-in":
            return  # the local stack is up before the plan runs
        if condition == "service_completed_successfully" and dep not in self.completed:
            raise ProcessError(f"{name} waits for job {dep} to complete, which did not run before it")
        if condition == "service_healthy":
            self.wait_healthy(target)

    def run_job(self, step: Step) -> None:
        proc = Proc(step.name, step.argv, self.logs / f"{step.name}.log", self.env_of(step))
        proc.start()
        assert proc.popen is not None
        try:
            code = proc.popen.wait(JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.stop()
            raise proc.error(f"job {step.name} did not finish in {JOB_TIMEOUT_S:.0f}s") from None
        if code != 0:
            raise proc.error(f"job {step.name} (`{' '.join(step.argv)}`) exited with code {code}")
        self.completed.add(step.name)

    def health_passes(self, step: Step) -> bool:
        assert step.health is not None
        done = subprocess.run(
            step.health, env=self.env_of(step), capture_output=True, timeout=30, check=False
        )
        return done.returncode == 0

    def wait_healthy(self, step: Step) -> None:
        if step.name in self.healthy:
            return
        timeout = max(step.health_timeout_s, self.health_floor_s)
        what = f"healthy (its compose healthcheck `{' '.join(step.health or [])}` passed)"
        self.procs[step.name].wait_ready(lambda: self.health_passes(step), timeout, what)
        self.healthy.add(step.name)

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if not proc.alive()]

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def __enter__(self) -> ComposeProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(check, timeout: float, what: str) -> None:
    """Poll ``check`` every second until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f}s")
        time.sleep(1)
