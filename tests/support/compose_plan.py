"""The compose file as local processes: a plan, in ``depends_on`` order, of what each compose service
becomes on this machine without Docker. Pure logic over the rendered config (``docker-compose config
--format json``); tests/support/compose_runner.py runs the plan.

- A service on one of our images becomes a process: its entrypoint + command (else its image's, read
  from the Dockerfile its ``build`` names), with the image's ``SELFIMPROVE_*`` environment and its own
  ``environment``; ``python`` and ``selfimprove`` run from the project's venv.
- A service on an infrastructure image (Kafka, SeaweedFS, Prometheus, Grafana) is replaced by the local
  stack's part (``STAND_INS``); a one-shot job on such an image must have a stand-in too
  (``JOB_STAND_INS``), or the plan refuses it by name.
- Compose names become local addresses: ``kafka:9092`` the local broker, ``seaweedfs:8333`` the local
  S3 gateway, ``evaluator:50052`` that process's port. Every port setting (``SELFIMPROVE_*_PORT``) gets
  a free port per process, and the healthcheck's ``127.0.0.1:<port>`` follows it.
- Container paths become local ones: a named volume a folder per volume, ``tmpfs`` a scratch folder,
  what the image copies in its repository source (or, for a URL, the local copy ``mirror`` finds).
- One-shot jobs are services with ``restart: "no"`` or that another service waits on with
  ``service_completed_successfully``; every other service must have a healthcheck.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.dockerfile import Image
from tests.support.manifest_check import compose_command, healthcheck_argv

# Image name (last path part, no tag) -> the local stack part that replaces it.
INFRA_ROLES = {
    "kafka": "broker",
    "seaweedfs": "object-store",
    "minio": "object-store",
    "prometheus": "prometheus",
    "grafana": "grafana",
}
STAND_INS = {
    "broker": "the local stack's Tansu broker (selfimprove.core.stack)",
    "object-store": "the local stack's SeaweedFS S3 gateway (selfimprove.core.stack)",
    "prometheus": "the local stack's Prometheus, scraping every service process",
    "grafana": "not started: its dashboards are checked offline (deploy/check.sh)",
}
# A one-shot job on an infrastructure image: what the local stack does instead.
JOB_STAND_INS = {
    "broker": "topics: every service creates the loop's topics at start (Bus.ensure_topics)",
    "object-store": "bucket: the local stack creates it, every service ensures it (ArtifactStore.ensure_bucket)",
}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0")


class PlanError(ValueError):
    """The compose file has something this plan cannot run locally; the message names it."""


@dataclass(frozen=True)
class Addresses:
    """``host:port`` of the local stack's parts."""

    broker: str
    object_store: str
    prometheus: str = ""

    def of(self, role: str) -> str:
        return {"broker": self.broker, "object-store": self.object_store, "prometheus": self.prometheus}.get(
            role, ""
        )


@dataclass
class Step:
    """One compose service on this machine. ``kind``: ``job`` (must exit 0), ``service`` (must pass its
    healthcheck), ``stand-in`` (replaced by the local stack: ``note`` says how)."""

    name: str
    kind: str
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    health: list[str] | None = None
    health_timeout_s: float = 0.0
    needs: dict[str, str] = field(default_factory=dict)  # dependency -> compose condition
    ports: dict[str, int] = field(default_factory=dict)  # port setting -> local port
    role: str = ""
    note: str = ""


def seconds(value: object) -> float:
    """A compose duration (``"1m30s"``, ``"300s"``, ``"5m0s"``, nanoseconds as a number) in seconds.

    >>> seconds("1m30s"), seconds("300s"), seconds(None), seconds("1h"), seconds("500ms")
    (90.0, 300.0, 0.0, 3600.0, 0.5)
    """
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value) / 1e9
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", str(value))
    if not parts or "".join(n + u for n, u in parts) != str(value):
        raise PlanError(f"not a compose duration: {value!r}")
    return sum(float(n) * units[u] for n, u in parts)


def image_role(image: str) -> str | None:
    """The infrastructure role of an image reference, or None.

    >>> image_role("chrislusf/seaweedfs:4.48"), image_role("apache/kafka:4.1.0"), image_role("selfimprove/x")
    ('object-store', 'broker', None)
    """
    name = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return INFRA_ROLES.get(name)


def needs_of(svc: dict) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def is_job(name: str, services: Mapping[str, dict]) -> bool:
    """A one-shot job: ``restart: "no"``, or something waits for it to complete."""
    if services[name].get("restart") == "no":
        return True
    return any(needs_of(s).get(name) == "service_completed_successfully" for s in services.values())


def start_order(services: Mapping[str, dict]) -> list[str]:
    """Every service after those it depends on (ties by name); a cycle or unknown name is an error.

    >>> start_order({"a": {"depends_on": {"b": {}}}, "b": {}, "c": {"depends_on": ["a"]}})
    ['b', 'a', 'c']
    """
    order: list[str] = []
    pending = {name: set(needs_of(svc)) for name, svc in services.items()}
    for name, deps in pending.items():
        unknown = deps - set(services)
        if unknown:
            raise PlanError(f"service {name} depends on unknown service(s) {sorted(unknown)}")
    while pending:
        ready = sorted(n for n, deps in pending.items() if deps <= set(order))
        if not ready:
            raise PlanError(f"depends_on has a cycle among {sorted(pending)}")
        order.append(ready[0])
        del pending[ready[0]]
    return order


def map_hosts(
    value: str, services: Mapping[str, dict], addresses: Addresses, ports: Mapping[tuple[str, int], int]
) -> str:
    """``<service>:<port>`` in ``value`` replaced by the local address of that service.

    >>> svcs = {"kafka": {"image": "apache/kafka"}, "evaluator": {"image": "selfimprove/evaluator"}}
    >>> map_hosts("kafka:9092,evaluator:50052", svcs, Addresses("127.0.0.1:1", "127.0.0.1:2"),
    ...           {("evaluator", 50052): 7})
    '127.0.0.1:1,127.0.0.1:7'
    """

    def one(m: re.Match[str]) -> str:
        name, port = m.group(1), int(m.group(2))
        role = image_role(str(services[name].get("image", "")))
        if role:
            address = addresses.of(role)
            if not address:
                raise PlanError(f"{m.group(0)!r}: no local stand-in address for {role}")
            return address
        if (name, port) not in ports:
            raise PlanError(f"{m.group(0)!r}: service {name} listens on no port setting with value {port}")
        return f"127.0.0.1:{ports[(name, port)]}"

    names = "|".join(re.escape(n) for n in sorted(services, key=len, reverse=True))
    return re.sub(rf"(?<![\w.-])({names}):(\d+)\b", one, value) if names else value


def map_path(value: str, paths: Mapping[str, Path]) -> str:
    """A container path (or a path under one) replaced by its local folder; other values unchanged.

    >>> map_path("/cache/x", {"/cache": Path("/tmp/v")}), map_path("/cachex", {"/cache": Path("/tmp/v")})
    ('/tmp/v/x', '/cachex')
    """
    for target in sorted(paths, key=len, reverse=True):
        if value == target or value.startswith(target.rstrip("/") + "/"):
            return str(paths[target]) + value[len(target) :]
    return value


def local_paths(
    name: str,
    svc: dict,
    image: Image | None,
    scratch: Path,
    root: Path,
    mirror: Callable[[str], Path | None],
) -> dict[str, Path]:
    """Container path -> local path for one service: its volumes, tmpfs and what its image copies in."""
    out: dict[str, Path] = {}
    for dest, sources in (image.copies if image else {}).items():
        src = sources[0]
        if "://" in src:
            found = {mirror(s) for s in sources}
            if None in found or len(found) != 1:
                raise PlanError(f"service {name}: no local copy of what its image adds at {dest} ({src} ...)")
            out[dest] = found.pop()  # type: ignore[assignment]
        else:
            out[dest] = root / src
    for mount in svc.get("tmpfs") or []:
        out[str(mount).split(":", 1)[0]] = scratch / "tmpfs" / name
    for vol in svc.get("volumes") or []:
        target = vol["target"]
        if vol.get("type") == "volume":
            out[target] = scratch / "volumes" / str(vol.get("source") or f"{name}-anonymous")
        elif vol.get("type") == "bind":
            source = Path(vol["source"])
            if not source.resolve().is_relative_to(root.resolve()):
                raise PlanError(f"service {name}: bind-mounts {source}, outside the repository")
            out[target] = source
        elif vol.get("type") == "tmpfs":
            out[target] = scratch / "tmpfs" / name
    return out


def plan(
    config: dict,
    images: Mapping[str, Image],
    addresses: Addresses,
    port_settings: Mapping[str, int],
    free_ports: Iterator[int],
    bin_dir: Path,
    scratch: Path,
    root: Path,
    mirror: Callable[[str], Path | None] = lambda url: None,
) -> list[Step]:
    """The steps, in start order, that run ``config``'s services on this machine."""
    services: dict[str, dict] = config.get("services") or {}
    order = start_order(services)
    steps: dict[str, Step] = {}
    port_map: dict[tuple[str, int], int] = {}
    for name in order:  # first every role and every port, so that any service can name any other
        svc = services[name]
        role = image_role(str(svc.get("image", "")))
        job = is_job(name, services)
        if role:
            stand_in = (JOB_STAND_INS if job else STAND_INS).get(role)
            if stand_in is None:
                raise PlanError(f"service {name}: a one-shot job on the {role} image, with no local stand-in")
            steps[name] = Step(name, "stand-in", needs=needs_of(svc), role=role, note=stand_in)
            continue
        image = images.get(name)
        env = {k: v for k, v in (image.env if image else {}).items() if k.startswith("SELFIMPROVE_")}
        env.update({k: "" if v is None else str(v) for k, v in (svc.get("environment") or {}).items()})
        step = Step(name, "job" if job else "service", compose_command(svc, image), env, needs=needs_of(svc))
        for var, default in port_settings.items():
            inside = int(env.get(var, default) or 0)
            if inside:
                step.ports[var] = port_map[(name, inside)] = next(free_ports)
        steps[name] = step
    for name, step in steps.items():
        if step.kind == "stand-in":
            continue
        svc = services[name]
        if not step.argv:
            raise PlanError(f"service {name}: no command (and no image default from a Dockerfile)")
        paths = local_paths(name, svc, images.get(name), scratch, root, mirror)

        def fix(value: str, paths: Mapping[str, Path] = paths) -> str:
            return map_path(map_hosts(value, services, addresses, port_map), paths)

        step.env = {k: fix(v) for k, v in step.env.items()} | {k: str(p) for k, p in step.ports.items()}
        exe = {
            "python": bin_dir / "python",
            "python3": bin_dir / "python",
            "selfimprove": bin_dir / "selfimprove",
        }
        step.argv = [str(exe.get(step.argv[0], step.argv[0]))] + [fix(a) for a in step.argv[1:]]
        if step.kind == "service":
            health = healthcheck_argv(svc)
            if health is None:
                raise PlanError(f"service {name} runs for good but has no healthcheck")
            inside = {v: k for (n, v), k in port_map.items() if n == name}
            for port, local in inside.items():
                health = [
                    re.sub(rf"\b({'|'.join(map(re.escape, LOCAL_HOSTS))}):{port}\b", rf"\1:{local}", h)
                    for h in health
                ]
            step.health = [str(exe.get(health[0], health[0])), *health[1:]]
            check = svc.get("healthcheck") or {}
            step.health_timeout_s = seconds(check.get("start_period")) + seconds(
                check.get("interval") or "30s"
            ) * int(check.get("retries") or 3)
    return [steps[n] for n in order]
