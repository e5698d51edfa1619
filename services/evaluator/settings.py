"""Settings of the evaluator controller and its workers (environment prefix ``SELFIMPROVE_EVALUATOR_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EvaluatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SELFIMPROVE_EVALUATOR_", extra="ignore")

    grpc_host: str = Field("0.0.0.0", description="Address the control plane listens on.")
    grpc_port: int = Field(50052, ge=0, le=65535, description="Control-plane port; 0 picks a free one.")
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


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SELFIMPROVE_EVALUATOR_WORKER_", extra="ignore")

    backend: str = Field("transformers", description="Engine backend: transformers or vllm.")
    batch_size: int = Field(32, ge=1, description="Sequences decoded together.")
    max_new_tokens: int = Field(64, ge=1, description="Answer length when the command names none.")
    max_handler_seconds: float = Field(3600.0, gt=0)
