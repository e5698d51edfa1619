"""The credential check a server makes on each call (``core.auth`` is the pure rule it applies).

A :class:`Guard` holds the token file and whether verified client certificates carry roles; both gRPC
servers (``core.grpcserve.AuthInterceptor``) and the refinement HTTP API use it. The token file is read
at start-up (a bad file stops the service with a message naming the variable, file and line) and
re-read when it changes on disk (checked at most once a second), so a rotated Kubernetes secret takes
effect without a restart; a changed file that does not parse is logged and the previous tokens stay.
Every refusal is passed to ``on_refused(endpoint, reason)`` (a metric). No token is ever logged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from selfimprove.core import auth
from selfimprove.core.settings import SettingsError

log = logging.getLogger(__name__)
RECHECK_S = 1.0


class TokenFile:
    """The tokens of ``path``, re-read when the file changes (its mtime, size or inode)."""

    def __init__(self, path: Path, setting: str = "auth_tokens_file") -> None:
        self.path, self.setting = Path(path), setting
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        try:
            self._stamp = self._stat()
            self.tokens = auth.parse_tokens(self.path.read_text(), str(self.path))
        except OSError as exc:
            raise SettingsError(f"{setting}: cannot read {self.path}: {exc.strerror}") from None
        except SettingsError as exc:
            raise SettingsError(f"{setting}: {exc}") from None

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size, st.st_ino

    def current(self) -> auth.Tokens:
        """The tokens now (re-read first when the file changed since the last look)."""
        now = time.monotonic()
        if now - self._checked < RECHECK_S:
            return self.tokens
        with self._lock:
            if now - self._checked < RECHECK_S:
                return self.tokens
            self._checked = now
            try:
                stamp = self._stat()
                if stamp != self._stamp:
                    self.tokens = auth.parse_tokens(self.path.read_text(), str(self.path))
                    self._stamp = stamp
                    log.info("re-read the token file %s (%d tokens)", self.path, len(self.tokens.entries))
            except (OSError, SettingsError) as exc:
                log.error("keeping the previous tokens: the token file changed but %s", exc)
        return self.tokens


class Guard:
    """Checks one endpoint's calls; ``client_certs`` when the server requires verified client certs."""

    def __init__(
        self,
        endpoint: str,
        tokens: TokenFile | None,
        client_certs: bool = False,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.endpoint, self.tokens, self.client_certs = endpoint, tokens, client_certs
        self.on_refused = on_refused

    def check(self, method: str, header: str | None, cert_units: Iterable[str] | None) -> auth.Refusal | None:
        """None when the call to ``method`` may go on, else the refusal (already counted)."""
        need = auth.needed(method)
        if need is None:
            return None
        tokens = self.tokens.current() if self.tokens is not None else None
        refusal = auth.authorize(need, header, tokens, cert_units)
        if refusal is not None:
            log.debug("%s %s refused: %s", self.endpoint, method, refusal.reason)
            if self.on_refused is not None:
                self.on_refused(self.endpoint, refusal.reason)
        return refusal


def make_guard(
    endpoint: str,
    tokens_file: Path | None,
    client_ca_file: Path | None,
    on_refused: Callable[[str, str], None] | None,
    env_prefix: str = "",
    tokens: TokenFile | None = None,
) -> Guard | None:
    """The guard of a server's settings, or None (every call open) when neither credential is set.

    ``tokens`` shares an already-read token file between two endpoints of one process.
    """
    if tokens_file is None and client_ca_file is None:
        return None
    if tokens is None and tokens_file is not None:
        tokens = TokenFile(tokens_file, f"{env_prefix}AUTH_TOKENS_FILE")
    return Guard(endpoint, tokens, client_ca_file is not None, on_refused)


def refusal_counter(metrics) -> Callable[[str, str], None]:
    """``on_refused`` counting into ``selfimprove_auth_refusals_total{endpoint, reason}`` of ``metrics``
    (a ``core.metrics.Metrics``)."""
    counter = metrics.counter(
        "auth_refusals_total",
        "Calls refused for a missing or invalid credential (401) or a missing permission (403)",
        ["endpoint", "reason"],
    )
    return lambda endpoint, reason: counter.labels(endpoint, reason).inc()
