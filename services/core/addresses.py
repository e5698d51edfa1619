"""Where a running local loop can be reached, for commands in another terminal.

The local loop's services listen on free ports, so ``selfimprove status``, ``generate`` or ``eval
--model run:RUN`` started beside ``selfimprove run --local`` cannot assume the default ports.
:class:`~selfimprove.core.local_loop.LocalLoop` writes ``<stack root>/addresses.json`` once its
services are ready (the control plane, the serving endpoint, the stack's store and broker settings
and the id of the process that runs the loop) and removes it when it stops. :func:`discover` reads
it back and refuses a stale one (its process gone, or nothing listening) with an error that says so,
instead of letting a command hang on a dead port.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILE = "addresses.json"
STACK_DIR_ENV = "SELFIMPROVE_STACK_DIR"
DEFAULT_STACK_DIR = ".stack"


class StaleAddressesError(RuntimeError):
    """The addresses file names a local loop that is no longer running."""


@dataclass(frozen=True)
class LocalAddresses:
    """A running local loop: ``host:port`` of its control plane and serving endpoint."""

    pid: int  # the process that runs the loop (``selfimprove run --local``, ``up --services``)
    evaluator: str
    refinement: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # the stack's SELFIMPROVE_* store and broker settings


def stack_dir() -> Path:
    """The stack root commands look in: ``SELFIMPROVE_STACK_DIR``, else ``.stack`` here."""
    return Path(os.environ.get(STACK_DIR_ENV) or DEFAULT_STACK_DIR)


def write(root: Path, addresses: LocalAddresses) -> Path:
    """Write ``root/addresses.json`` (owner-only: it holds the stack's store credentials)."""
    path = Path(root) / FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(addresses), out, indent=2)
    tmp.replace(path)
    return path


def remove(root: Path, pid: int | None = None) -> None:
    """Remove ``root/addresses.json``; with ``pid``, only when that process wrote it."""
    path = Path(root) / FILE
    try:
        found = read(root)
        if found is None or (pid is not None and found.pid != pid):
            return
        path.unlink()
    except (FileNotFoundError, ValueError):
        pass


def read(root: Path) -> LocalAddresses | None:
    """The addresses in ``root/addresses.json``; None when there is none, ``ValueError`` naming the
    file when it cannot be read as one.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> read(d) is None
    True
    >>> _ = write(d, LocalAddresses(pid=1, evaluator="127.0.0.1:5"))
    >>> read(d).evaluator
    '127.0.0.1:5'
    >>> _ = (d / FILE).write_text("{")
    >>> read(d)
    Traceback (most recent call last):
    ...
    ValueError: ... is not a local loop's addresses file: ...
    """
    path = Path(root) / FILE
    try:
        data = json.loads(path.read_text())
        return LocalAddresses(
            pid=int(data["pid"]),
            evaluator=str(data["evaluator"]),
            refinement=data.get("refinement"),
            env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a local loop's addresses file: {exc}") from None


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def listening(address: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (within ``timeout`` seconds)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def discover(
    root: Path | None = None,
    is_alive: Callable[[int], bool] | None = None,
    is_listening: Callable[[str], bool] | None = None,
) -> LocalAddresses | None:
    """The running local loop under ``root`` (default :func:`stack_dir`), None when no loop wrote
    its addresses there; ``StaleAddressesError`` when the one that did has stopped.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> discover(d) is None
    True
    >>> _ = write(d, LocalAddresses(pid=123, evaluator="127.0.0.1:5"))
    >>> discover(d, is_alive=lambda pid: True, is_listening=lambda a: True).pid
    123
    >>> discover(d, is_alive=lambda pid: False)
    Traceback (most recent call last):
    ...
    selfimprove.core.addresses.StaleAddressesError: ... names a local loop whose process 123 has ended: ...
    """
    root = stack_dir() if root is None else Path(root)
    is_alive, is_listening = is_alive or alive, is_listening or listening
    found = read(root)
    if found is None:
        return None
    path = root / FILE
    if not is_alive(found.pid):
        raise StaleAddressesError(
            f"{path} names a local loop whose process {found.pid} has ended: start one "
            "(selfimprove run --local) or give --address; delete the file if it stays"
        )
    if not is_listening(found.evaluator):
        raise StaleAddressesError(
            f"{path} names a local loop (process {found.pid}) whose control plane {found.evaluator} "
            "does not answer: it is stopping or stopped; give --address to reach another"
        )
    return found
