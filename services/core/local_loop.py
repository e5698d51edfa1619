"""The whole system on one machine: the local stack plus every service as its own process.

Used by ``selfimprove run --local``, ``selfimprove up --services``, the end-to-end test and the chaos
suite. Each service gets the stack's addresses, its own metrics port and a thread budget; its log is
``<root>/logs/<service>.log``. ``kill`` and ``restart`` exist for fault injection. Once ready, the
loop writes its gRPC addresses to ``<root>/addresses.json`` (:mod:`.addresses`) for commands in
another terminal, and removes the file when it stops.

``replicas`` runs more processes of a service (``acquisition``, ``acquisition-2``, ...) in its one
consumer group, splitting its threads between them: the evaluator sends each acquisition shard to a
partition of its own, so the shards of an iteration are sampled side by side.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from selfimprove.core import addresses
from selfimprove.core.procs import Proc, free_ports, http_ok
from selfimprove.core.stack import LocalStack

# name -> module; the evaluator's workers run the model, the controller does not.
SERVICES: dict[str, str] = {
    "evaluator": "selfimprove.evaluator",
    "evaluator-worker": "selfimprove.evaluator.worker",
    "acquisition": "selfimprove.acquisition",
    "selection": "selfimprove.selection",
    "trainer": "selfimprove.trainer",
    "refinement": "selfimprove.refinement",
}


@dataclass
class LocalLoop:
    """A ``LocalStack`` and the service processes on it."""

    stack: LocalStack
    services: Mapping[str, str] = field(default_factory=lambda: dict(SERVICES))
    env: Mapping[str, str] = field(default_factory=dict)
    threads: int = 1
    replicas: Mapping[str, int] = field(default_factory=dict)  # service -> processes (default 1)
    ready_timeout: float = 180.0
    procs: dict[str, Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Every process: a service's name, then ``<service>-2`` ... for its further replicas."""
        return [
            name if i == 0 else f"{name}-{i + 1}"
            for name in self.services
            for i in range(max(1, self.replicas.get(name, 1)))
        ]

    def service_of(self, name: str) -> str:
        """The service a process name belongs to.

        >>> LocalLoop(LocalStack(root="x"), replicas={"acquisition": 2}).service_of("acquisition-2")
        'acquisition'
        """
        return name if name in self.services else name.rsplit("-", 1)[0]

    def threads_of(self, name: str) -> int:
        """A service's threads, split between its replicas (at least one each)."""
        return max(1, self.threads // max(1, self.replicas.get(self.service_of(name), 1)))

    def service_env(self, name: str) -> dict[str, str]:
        threads = self.threads_of(name)
        return {
            **os.environ,
            **self.stack.env(),
            "SELFIMPROVE_METRICS_PORT": str(self.ports[name]),
            "SELFIMPROVE_THREADS": str(threads),
            "SELFIMPROVE_INSTANCE": f"{name}-local",
            "OMP_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            # On one machine: loopback only, and free ports (several loops may run side by side).
            "SELFIMPROVE_EVALUATOR_GRPC_HOST": "127.0.0.1",
            "SELFIMPROVE_EVALUATOR_GRPC_PORT": "0",
            "SELFIMPROVE_REFINEMENT_GRPC_HOST": "127.0.0.1",
            "SELFIMPROVE_REFINEMENT_GRPC_PORT": "0",
            "SELFIMPROVE_REFINEMENT_HTTP_HOST": "127.0.0.1",
            "SELFIMPROVE_REFINEMENT_HTTP_PORT": "0",
            **self.env,
        }

    def start(self) -> LocalLoop:
        if not self.stack.kafka_bootstrap:
            self.stack.start()
        missing = [n for n in self.names if n not in self.ports]
        for name, port in zip(missing, free_ports(len(missing)), strict=True):
            self.ports[name] = port
        for name in self.names:
            self.start_service(name)
        for name in self.names:
            self.wait_ready(name)
        if self.stack.prometheus_url:
            self.stack.set_prometheus_targets([f"127.0.0.1:{p}" for p in self.ports.values()])
        self.write_addresses()
        return self

    def write_addresses(self) -> None:
        """Tell later commands where this loop's control plane and serving endpoint listen."""
        if "evaluator" not in self.procs or self.stack.root is None:
            return
        ports = {n: self.health(n).get("grpc_port") for n in ("evaluator", "refinement") if n in self.procs}
        if not ports.get("evaluator"):
            return
        serving = f"127.0.0.1:{ports['refinement']}" if ports.get("refinement") else None
        found = addresses.LocalAddresses(
            os.getpid(), f"127.0.0.1:{ports['evaluator']}", serving, self.stack.env()
        )
        addresses.write(self.stack.root, found)

    def start_service(self, name: str) -> None:
        log = self.stack.root / "logs" / f"{name}.log"
        module = self.services[self.service_of(name)]
        proc = Proc(name, [sys.executable, "-m", module], log, self.service_env(name))
        proc.start()
        self.procs[name] = proc

    def wait_ready(self, name: str) -> None:
        self.procs[name].wait_ready(lambda: http_ok(self.health_url(name)), self.ready_timeout)

    def health_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}/health"

    def health(self, name: str) -> dict:
        with urllib.request.urlopen(self.health_url(name), timeout=5) as response:
            return json.load(response)

    def grpc_address(self, name: str) -> str:
        """The gRPC address a service reported in its health details."""
        return f"127.0.0.1:{self.health(name)['grpc_port']}"

    def metrics_text(self, name: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=5) as response:
            return response.read().decode()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.popen is not None and proc.popen.poll() is None:
            os.killpg(proc.popen.pid, sig)
            proc.popen.wait()

    def restart(self, name: str, wait: bool = True) -> None:
        self.kill(name)
        self.procs[name].popen = None
        self.start_service(name)
        if wait:
            self.wait_ready(name)
            if self.service_of(name) in ("evaluator", "refinement"):
                self.write_addresses()  # its new port

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if not p.alive()] + self.stack.dead()

    def stop_services(self, keep: tuple[str, ...] = ()) -> None:
        """Stop every service process except those named in ``keep``."""
        for name, proc in reversed(list(self.procs.items())):
            if name not in keep:
                proc.stop()

    def stop(self) -> None:
        if self.stack.root is not None:
            addresses.remove(self.stack.root, os.getpid())
        self.stop_services()
        self.stack.stop()

    def __enter__(self) -> LocalLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
