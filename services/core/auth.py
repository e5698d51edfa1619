"""Who may call what: bearer tokens from a mounted file, client-certificate roles, and the one table of
the permission every gRPC method and HTTP route needs. Pure: the servers' I/O is ``core.guard``.

Two roles: ``read`` (run status and lists, generation, the model list) and ``control`` (everything
``read`` may, plus starting, resuming and stopping runs). The token file holds one ``<role> <token>``
per line (``#`` comments and blank lines ignored); a bad line is a ``SettingsError`` naming the file and
line, never the token. A verified client certificate (mutual TLS) has the role its subject's
organizational unit names: ``OU=control`` or ``OU=read``.

>>> tokens = parse_tokens("# ops\\nread reader-token-0123456789\\ncontrol admin-token-0123456789\\n")
>>> tokens.role_of("reader-token-0123456789"), tokens.role_of("admin-token-0123456789"), tokens.role_of("x")
('read', 'control', None)
>>> authorize(CONTROL, "Bearer reader-token-0123456789", tokens, None).reason
'forbidden'
>>> authorize(READ, "Bearer reader-token-0123456789", tokens, None) is None
True
>>> authorize(READ, None, tokens, None).reason, authorize(READ, "Bearer nope", tokens, None).reason
('missing', 'invalid')
>>> authorize(CONTROL, None, None, ["control"]) is None, authorize(CONTROL, None, None, ["read"]).reason
(True, 'forbidden')
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from selfimprove.core.settings import SettingsError

READ, CONTROL = "read", "control"
# What each role may do (a role's own name is its permission).
GRANTS: Mapping[str, frozenset[str]] = {READ: frozenset({READ}), CONTROL: frozenset({READ, CONTROL})}
MIN_TOKEN_CHARS = 16
# Always open: health (probes) and nothing else; /metrics is served on the side port, not here.
OPEN = ("/grpc.health.v1.Health/", "/health")
# The permission of every method (gRPC full method name) and route (HTTP path). A name missing here
# needs ``control``: a new method is closed until it is listed (tests/unit/test_auth.py checks this).
PERMISSIONS: Mapping[str, str] = {
    "/selfimprove.v2.ControlPlaneService/StartRun": CONTROL,  # start, and resume by run id
    "/selfimprove.v2.ControlPlaneService/StopRun": CONTROL,
    "/selfimprove.v2.ControlPlaneService/GetRunStatus": READ,
    "/selfimprove.v2.ControlPlaneService/ListRuns": READ,
    "/selfimprove.v2.RefinementService/Generate": READ,
    "/selfimprove.v2.RefinementService/GenerateStream": READ,
    "/v1/chat/completions": READ,
    "/v1/completions": READ,
    "/v1/models": READ,
}


def needed(method: str) -> str | None:
    """The permission ``method`` (gRPC full name or HTTP path) needs; None when it is open.

    >>> needed("/grpc.health.v1.Health/Check"), needed("/v1/models"), needed("/v1/unknown")
    (None, 'read', 'control')
    """
    if method == "/health" or method.startswith(OPEN[0]):
        return None
    return PERMISSIONS.get(method, CONTROL)


@dataclass(frozen=True)
class Tokens:
    """The tokens of a token file and their roles."""

    entries: tuple[tuple[str, bytes], ...]

    def role_of(self, token: str) -> str | None:
        """The strongest role ``token`` has, or None; every entry is compared in constant time."""
        given = token.encode()
        found: str | None = None
        for role, known in self.entries:
            if hmac.compare_digest(given, known) and found != CONTROL:
                found = role
        return found


def parse_tokens(text: str, source: str = "the token file") -> Tokens:
    """The tokens of a token file's ``text``; ``SettingsError`` naming ``source:line`` for a bad line.

    >>> parse_tokens("admin s3cr3t-token-0123456789")
    Traceback (most recent call last):
    ...
    selfimprove.core.settings.SettingsError: the token file:1: the first word is not a role (read or control)
    >>> parse_tokens("read short", "/etc/tokens")
    Traceback (most recent call last):
    ...
    selfimprove.core.settings.SettingsError: /etc/tokens:1: the token is shorter than 16 characters
    """
    entries: list[tuple[str, bytes]] = []
    seen: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{source}:{number}"
        if words[0] not in GRANTS:  # never echoed: a line may hold a token where the role belongs
            raise SettingsError(f"{where}: the first word is not a role ({READ} or {CONTROL})")
        if len(words) == 1:
            raise SettingsError(f"{where}: no token after the role (expected '<role> <token>')")
        if len(words) > 2:
            raise SettingsError(f"{where}: more than a role and a token (expected '<role> <token>')")
        token = words[1].encode()
        if len(words[1]) < MIN_TOKEN_CHARS:
            raise SettingsError(f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters")
        if token in seen:
            raise SettingsError(f"{where}: the same token as line {seen[token]}")
        seen[token] = number
        entries.append((words[0], token))
    if not entries:
        raise SettingsError(f"{source}: no tokens (expected lines '<role> <token>')")
    return Tokens(tuple(entries))


def bearer(header: str | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header; None when it is no bearer header.

    >>> bearer("Bearer abc"), bearer("bearer  abc "), bearer("Basic abc"), bearer(None)
    ('abc', 'abc', None, None)
    """
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def cert_role(units: Iterable[str]) -> str | None:
    """The role a verified client certificate's organizational units (``OU``) name; the strongest wins.

    >>> cert_role(["read", "control"]), cert_role(["read"]), cert_role(["ops"])
    ('control', 'read', None)
    """
    names = set(units)
    return CONTROL if CONTROL in names else READ if READ in names else None


_RDN = re.compile(r"(?<!\\)[,+]")


def units_of_subject(subject: str) -> list[str]:
    """The ``OU`` values of an RFC 2253 subject (as gRPC's ``x509_subject`` gives it).

    >>> units_of_subject("CN=ops\\\\, team,OU=control,O=example")
    ['control']
    """
    out = []
    for part in _RDN.split(subject):
        key, _, value = part.strip().partition("=")
        if key.strip().upper() == "OU":
            out.append(value.strip().replace("\\", ""))
    return out


def units_of_peercert(cert: Mapping | None) -> list[str]:
    """The ``OU`` values of a certificate as ``ssl.SSLSocket.getpeercert()`` decodes it.

    >>> units_of_peercert({"subject": ((("organizationalUnitName", "read"),), (("commonName", "c"),))})
    ['read']
    """
    return [v for rdn in (cert or {}).get("subject", ()) for k, v in rdn if k == "organizationalUnitName"]


@dataclass(frozen=True)
class Refusal:
    """Why a call is refused: ``unauthenticated`` (401) or ``forbidden`` (403), and the metric's reason."""

    status: Literal["unauthenticated", "forbidden"]
    reason: Literal["missing", "invalid", "forbidden"]
    message: str


def authorize(
    need: str, header: str | None, tokens: Tokens | None, cert_units: Iterable[str] | None
) -> Refusal | None:
    """None when the credentials grant ``need``, else the refusal.

    ``header`` is the ``authorization`` value (if any); ``cert_units`` the OUs of the verified client
    certificate (None: no certificate). A token that is sent must be valid, certificate or not.
    """
    roles = []
    if cert_units is not None and (role := cert_role(cert_units)) is not None:
        roles.append(role)
    if header is not None:
        token = bearer(header)
        role = tokens.role_of(token) if token is not None and tokens is not None else None
        if role is None:
            return Refusal("unauthenticated", "invalid", "the bearer token is not valid")
        roles.append(role)
    if not roles:
        if cert_units is not None:
            return Refusal(
                "forbidden", "forbidden", "the client certificate names no role (OU=read or OU=control)"
            )
        return Refusal(
            "unauthenticated", "missing", "this call needs a credential: authorization: Bearer <token>"
        )
    if any(need in GRANTS[r] for r in roles):
        return None
    return Refusal("forbidden", "forbidden", f"this call needs the {need} permission")
