"""Settings of the refinement service (prefix ``SELFIMPROVE_REFINEMENT_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from selfimprove.core.grpcserve import check_tls_pair, empty_is_none
from selfimprove.core.settings import PREFIX


class RefinementSettings(BaseSettings):
    """What the refinement service serves and how it measures strategies."""

    model_config = SettingsConfigDict(env_prefix=PREFIX + "REFINEMENT_", extra="ignore")

    base: str = Field("smollm2-135m-instruct", description="Model served until a promotion names another.")
    strategy: str = Field("greedy", description="Strategy served until a calibration chooses one.")
    task: str = Field("arithmetic", description="Task whose answer extraction fills GenerateResponse.answer.")
    task_params_json: str = Field("{}", description="Parameters of that task, a JSON object.")
    backend: str = Field("transformers", description="Engine backend: transformers or vllm.")
    batch_size: int = Field(64, ge=1, description="Sequences the engine decodes together.")
    grpc_host: str = Field("0.0.0.0", description="Address the gRPC server binds.")  # noqa: S104
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    http_host: str = Field("0.0.0.0", description="Address the OpenAI-compatible HTTP API binds.")  # noqa: S104
    http_port: int = Field(
        8000, ge=0, le=65535, description="OpenAI-compatible HTTP port; 0 picks a free one."
    )
    tls_cert_file: Path | None = Field(
        None, description="Server certificate (PEM); with the key, gRPC and HTTP serve TLS."
    )
    tls_key_file: Path | None = Field(None, description="Server private key (PEM).")
    max_prompt_chars: int = Field(4000, ge=1, description="Longest prompt accepted, in characters.")
    max_prompt_tokens: int = Field(1024, ge=1, description="Longest prompt accepted, in tokens.")
    max_new_tokens: int = Field(512, ge=1, description="Most tokens a request may ask to generate.")
    max_n: int = Field(16, ge=1, description="Largest k/n/r of a requested strategy.")
    auth_tokens_file: Path | None = Field(
        None,
        description="Bearer tokens of the gRPC and HTTP API, one '<role> <token>' per line (roles: read, control); "
        "a mounted secret, re-read when it changes. Unset (and no client CA): every call is open.",
    )
    tls_client_ca_file: Path | None = Field(
        None,
        description="CA (PEM) whose client certificates are required (mutual TLS); a certificate's "
        "OU=read or OU=control is its role. Needs tls_cert_file and tls_key_file.",
    )
    max_request_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request body: grpc.max_receive_message_length, HTTP 413."
    )
    rate_per_second: float = Field(
        20.0, gt=0, description="Requests per second gRPC and HTTP admit together."
    )
    rate_burst: int = Field(40, ge=1, description="Requests admitted at once above the rate.")
    default_max_new_tokens: int = Field(128, ge=1, description="Generation length when a request gives none.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature of sampling strategies.")
    top_p: float = Field(0.95, gt=0, le=1)
    swap_settle_s: float = Field(
        0.5, ge=0, description="A promotion is loaded once no newer one arrived for this long."
    )
    calibration_max_new_tokens: int = Field(96, ge=1, description="Generation length while calibrating.")
    max_handler_seconds: float = Field(
        3600.0, gt=0, description="Longest calibration before it is abandoned."
    )

    @field_validator("auth_tokens_file", "tls_client_ca_file", mode="before")
    @classmethod
    def _unset(cls, value: object) -> object:
        return empty_is_none(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> RefinementSettings:
        check_tls_pair(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
        return self
