"""Child processes of the local stack: start one with its output in a log file, wait until it is
ready, stop it (SIGTERM, then SIGKILL) with everything it spawned. Also free loopback ports and
small readiness probes. Standard library only."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"


class ProcessError(RuntimeError):
    """A child process failed to start or to become ready; the message ends with its log tail."""


# Run in a fresh interpreter between our fork and the real program: ask Linux to SIGTERM the process
# when the thread that started it dies (PR_SET_PDEATHSIG, kept across exec), then exec the program
# in place (same pid). If that thread (or this process) was already gone before the prctl, the
# signal would never come: SIGTERM ourselves. A separate interpreter, not ``preexec_fn``: Python
# code between fork and exec in a process with threads (gRPC's poller, the metrics server) can
# deadlock or abort the child.
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
pid, tid = sys.argv[1].split("/")
if os.getppid() != int(pid) or not os.path.exists(f"/proc/{pid}/task/{tid}"):
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(143)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _launcher(argv: list[str]) -> list[str]:
    """``argv`` behind the die-with-parent launcher on Linux; unchanged elsewhere."""
    if not sys.platform.startswith("linux"):
        return argv
    starter = f"{os.getpid()}/{threading.get_native_id()}"
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, starter, *argv]


class Proc:
    """One managed child process. ``argv[0]`` must be an executable path.

    The child runs in its own session (Ctrl-C at a terminal reaches only us, and we stop it in
    order) and gets SIGTERM if the thread that started it dies: start stacks from a long-lived
    thread (normally the main one).
    """

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = log
        self.env = dict(env) if env is not None else None
        self.popen: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        """Spawn the process, appending its stdout and stderr to ``self.log``."""
        if self.alive():
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self._log_start = out.tell()
            try:
                # Resolved here as Popen would (the env's PATH), so a bad path is our error, not the launcher's.
                exe = shutil.which(self.argv[0], path=os.pathsep.join(os.get_exec_path(self.env)))
                if exe is None:
                    raise FileNotFoundError(errno.ENOENT, "no such executable", self.argv[0])
                self.popen = subprocess.Popen(
                    _launcher([exe, *self.argv[1:]]),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,  # its own process group, which ``stop`` signals
                )
            except OSError as exc:
                raise ProcessError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        """Poll ``probe`` until it returns true; raise ``ProcessError`` with the log tail if the
        process exits or ``timeout`` seconds pass. Exceptions from the probe count as not ready."""
        deadline = time.monotonic() + timeout
        while True:
            if self.popen is None or self.popen.poll() is not None:
                code = None if self.popen is None else self.popen.returncode
                raise self.error(f"{self.name} exited with code {code} before it was {what}")
            try:
                if probe():
                    return
            except Exception:  # noqa: BLE001 - any failure of the probe means "not yet"
                pass
            if time.monotonic() > deadline:
                raise self.error(f"{self.name} was not {what} after {timeout:.0f}s")
            time.sleep(0.2)

    def error(self, message: str) -> ProcessError:
        return ProcessError(f"{message}; last lines of {self.log}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        """The last lines this run wrote to its log."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self._log_start)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL it. Idempotent."""
        p = self.popen
        if p is None:
            return
        if p.poll() is None:
            _signal_group(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(p.pid, signal.SIGKILL)
                p.wait()
        # Grandchildren left in the group (the leader is gone) get no second chance.
        _signal_group(p.pid, signal.SIGKILL)
        self.popen = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def free_ports(count: int, grpc_offset: int = 0) -> list[int]:
    """``count`` distinct free loopback ports, picked by binding to port 0. With ``grpc_offset``
    each port ``p`` also has ``p + grpc_offset`` free (SeaweedFS derives a component's gRPC port
    as its HTTP port + 10000, and some of its parts ignore explicit gRPC port flags)."""
    held: list[socket.socket] = []

    def bind(port: int) -> int | None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is free
        held.append(s)
        try:
            s.bind((LOOPBACK, port))
            s.listen(1)  # a listening socket keeps later picks off this port
        except OSError:
            return None
        return int(s.getsockname()[1])

    ports: list[int] = []
    try:
        for _ in range(1000):
            port = bind(0)
            if port is None or (
                grpc_offset and (port + grpc_offset > 65535 or bind(port + grpc_offset) is None)
            ):
                continue
            ports.append(port)
            if len(ports) == count:
                return ports
    finally:
        for s in held:
            s.close()
    raise ProcessError(f"could not find {count} free ports on {LOOPBACK}")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers a GET with a 2xx status."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own loopback URL
        return 200 <= resp.status < 300


def kafka_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a Kafka broker answers a Metadata (v0, all topics) request with our correlation id.
    Needs no client library, and the broker must reach its storage to answer."""
    client = b"selfimprove-stack"
    body = struct.pack(">hhih", 3, 0, 4242, len(client)) + client + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        header = b""
        while len(header) < 8:
            chunk = s.recv(8 - len(header))
            if not chunk:
                return False
            header += chunk
    size, correlation = struct.unpack(">ii", header)
    return size >= 4 and correlation == 4242
