"""Settings for every process, read from the environment first (prefix ``SELFIMPROVE_``).

Each group is a pydantic-settings class. ``load`` builds one and turns a validation error into a
``SettingsError`` that names every bad variable, so a service fails fast at start-up.
Secrets are ``SecretStr``: they never print, and may come from ``*_FILE`` mounted files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Container
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "SELFIMPROVE_"


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


# A DNS name or IPv4 address (underscores too: container names have them), or a bracketed IPv6 address.
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


def check_endpoint(value: str) -> str:
    """``host`` or ``host:port`` of an S3 endpoint, as the object-store client takes it.

    >>> check_endpoint("minio.example:9000"), check_endpoint("[::1]:9000"), check_endpoint("s3.local")
    ('minio.example:9000', '[::1]:9000', 's3.local')
    >>> check_endpoint("http://minio:9000")
    Traceback (most recent call last):
    ...
    ValueError: 'http://minio:9000' has a scheme: give host:port (https is SELFIMPROVE_S3_SECURE=true)
    >>> check_endpoint("localhost:notaport")
    Traceback (most recent call last):
    ...
    ValueError: 'localhost:notaport' is not host:port: port 'notaport' is not a number in 1..65535
    """
    if "://" in value:
        raise ValueError(f"{value!r} has a scheme: give host:port (https is {PREFIX}S3_SECURE=true)")
    if "/" in value or "?" in value or "#" in value:
        raise ValueError(f"{value!r} has a path: give host:port")
    host, sep, port = value.rpartition(":")
    has_port = bool(sep) and not value.endswith("]")  # a bracketed IPv6 address holds colons
    if not has_port:
        host = value
    if not _HOST.fullmatch(host):
        raise ValueError(f"{value!r} is not host:port: bad host {host!r}")
    if has_port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{value!r} is not host:port: port {port!r} is not a number in 1..65535")
    return value


class KafkaSettings(BaseSettings):
    """How to reach the bus."""

    model_config = SettingsConfigDict(env_prefix=PREFIX + "KAFKA_", extra="ignore")

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle for SSL and SASL_SSL.")
    topic_prefix: str = Field(
        "selfimprove",
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$",
        description="Prefix of every topic name (it also names the deployment's keys in the object "
        "store): 1-64 letters, digits, '.', '_' or '-', not starting with '.'.",
    )
    partitions: int = Field(4, ge=1, description="Partitions of topics the project creates.")
    replication_factor: int = Field(1, ge=1)
    request_timeout_ms: int = Field(30_000, ge=1000)
    max_poll_interval_ms: int = Field(300_000, ge=1000, description="Consumer liveness bound.")
    session_timeout_ms: int = Field(
        10_000, ge=1000, description="Heartbeat liveness; a new member's join waits about half of it."
    )
    fetch_max_wait_ms: int = Field(
        500,
        ge=1,
        le=30_000,
        description="How long the broker holds a fetch that finds no record; shorter polls it more often "
        "(CPU on the broker and in every service).",
    )


class StoreSettings(BaseSettings):
    """How to reach the S3-compatible artifact store."""

    model_config = SettingsConfigDict(env_prefix=PREFIX + "S3_", extra="ignore")

    endpoint: str = Field("127.0.0.1:9000", description="host:port of the S3 endpoint, no scheme.")
    access_key: SecretStr = Field(SecretStr("selfimprove"), description="Access key id.")
    secret_key: SecretStr = Field(SecretStr("selfimprove-secret"), description="Secret key.")
    bucket: str = Field("selfimprove", min_length=3, max_length=63)
    secure: bool = Field(False, description="Use https.")
    region: str = "us-east-1"

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_endpoint(value)


class ServiceSettings(BaseSettings):
    """What every service process shares."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    instance: str = Field(
        default_factory=lambda: os.uname().nodename,
        min_length=1,
        description="This replica's name, stable across its restarts (the pod name, the container's "
        "host name): it names the replica's own consumer groups, so a restarted replica goes on where it "
        "stopped. Two replicas on one host need different names.",
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535, description="Port of /metrics and /health; 0 picks one.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    threads: int = Field(1, ge=1, le=256, description="torch and BLAS threads of this process.")
    cache_dir: Path = Field(Path.home() / ".cache" / "selfimprove", description="Local model cache.")


S = TypeVar("S", bound=BaseSettings)


def _read_secret_files(prefix: str, fields: Container[str] = ()) -> dict[str, str]:
    """Values of ``<VAR>_FILE`` variables (mounted secrets), keyed by field name. A variable that
    is itself a setting (``tls_cert_file``: a path the service reads) is not a secret mount, and an
    empty one is unset (compose's ``${VAR:-}``)."""
    out: dict[str, str] = {}
    for key, path in os.environ.items():
        if not path.strip():
            continue
        if key.startswith(prefix) and key.endswith("_FILE") and key[len(prefix) :].lower() not in fields:
            name = key[len(prefix) : -len("_FILE")].lower()
            try:
                out[name] = Path(path).read_text().strip()
            except OSError as exc:
                raise SettingsError(f"{key}: cannot read secret file {path!r}: {exc.strerror}") from exc
    return out


def load(cls: type[S], **overrides: object) -> S:
    """Build settings from the environment (and ``*_FILE`` secrets); explain every bad value."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    values: dict[str, Any] = {**_read_secret_files(prefix, cls.model_fields), **overrides}
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            var = prefix + field.upper()
            got = os.environ.get(var)
            shown = "" if got is None or "secret" in field or "password" in field else f" (got {got!r})"
            problems.append(f"{var}{shown}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
