"""Settings of the evaluator controller and its workers (environment prefix ``SELFIMPROVE_EVALUATOR_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from selfimprove.core.grpcserve import check_tls_pair, empty_is_none


class EvaluatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SELFIMPROVE_EVALUATOR_", extra="ignore")

    grpc_host: str = Field("0.0.0.0", description="Address the control plane listens on.")
    grpc_port: int = Field(50052, ge=0, le=65535, description="Control-plane port; 0 picks a free one.")
    tls_cert_file: Path | None = Field(
        None, description="Control-plane certificate (PEM); with the key, the control plane serves TLS."
    )
    tls_key_file: Path | None = Field(None, description="Control-plane private key (PEM).")
    auth_tokens_file: Path | None = Field(
        None,
        description="Bearer tokens of the control plane, one '<role> <token>' per line (roles: read, control); "
        "a mounted secret, re-read when it changes. Unset (and no client CA): every call is open.",
    )
    tls_client_ca_file: Path | None = Field(
        None,
        description="CA (PEM) whose client certificates are required (mutual TLS); a certificate's "
        "OU=read or OU=control is its role. Needs tls_cert_file and tls_key_file.",
    )
    max_request_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest control-plane request (grpc.max_receive_message_length)."
    )
    rate_per_s: float = Field(
        50.0, gt=0, description="Control-plane calls per second admitted (health exempt)."
    )
    burst: int = Field(100, ge=1, description="Control-plane calls admitted at once above the rate.")
    tick_s: float = Field(
        1.0, gt=0, description="How often stage timeouts and wall-time budgets are checked."
    )
    startup_grace_s: float = Field(
        3.0, ge=0, description="No timeout re-commands this long after start-up (redeliveries come first)."
    )
    crash_at: str = Field(
        "",
        description="TEST HOOK: '<point>[:<payload>]' makes the controller exit like SIGKILL at that point "
        "(after_consume, before_commit, after_promote). Never set it in production.",
    )

    @field_validator("auth_tokens_file", "tls_client_ca_file", mode="before")
    @classmethod
    def _unset(cls, value: object) -> object:
        return empty_is_none(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> EvaluatorSettings:
        check_tls_pair(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
        return self


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SELFIMPROVE_EVALUATOR_WORKER_", extra="ignore")

    backend: str = Field("transformers", description="Engine backend: transformers or vllm.")
    batch_size: int = Field(128, ge=1, description="Sequences decoded together.")
    max_new_tokens: int = Field(64, ge=1, description="Answer length when the command names none.")
    max_handler_seconds: float = Field(3600.0, gt=0)
