"""Settings of the trainer service (environment prefix ``SELFIMPROVE_TRAINER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    """Where the trainer works and how often it checkpoints."""

    model_config = SettingsConfigDict(env_prefix="SELFIMPROVE_TRAINER_", extra="ignore")

    work_dir: Path = Field(
        Path.home() / ".cache" / "selfimprove" / "trainer",
        description="Local folder for downloaded data, checkpoints and the adapter being written.",
    )
    checkpoint_every: int = Field(
        20, ge=1, description="Optimizer steps between checkpoints (hparams may override per command)."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept in the store per attempt.")
    max_handler_seconds: float = Field(
        4 * 3600.0, gt=0, description="Longest a train command may run before it is abandoned."
    )
