"""Settings of the acquisition service (environment prefix ``SELFIMPROVE_ACQUISITION_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AcquisitionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SELFIMPROVE_ACQUISITION_", extra="ignore")

    backend: str = Field("transformers", description="Engine backend: transformers (CPU) or vllm (GPU).")
    batch_size: int = Field(128, ge=1, description="Sequences decoded together.")
    max_handler_seconds: float = Field(3600.0, gt=0, description="Longest a shard may take.")
    judge_max_new_tokens: int = Field(4, ge=1, description="Tokens of a self-judge verdict.")
    instruct_max_new_tokens: int = Field(96, ge=8, description="Tokens of a self-instruct problem.")
    benchmarks_dir: Path | None = Field(
        None,
        description="Where the GPT-3 sets a run declares (evaluation.test_sets) are read, to skip their "
        "problems when drawing task prompts; default: $SELFIMPROVE_BENCHMARKS_DIR.",
    )
    skip_eval_problems: bool = Field(
        True, description="Draw no task prompt that selection's decontamination would drop."
    )
