"""Training hyper-parameters: defaults, and the command's ``hparams_json`` checked against them.

>>> h = parse_hparams('{"lr": 1e-4, "epochs": 2}')
>>> h.lr, h.epochs, h.lora_r
(0.0001, 2, 16)
>>> parse_hparams('{"learning_rate": 1}')
Traceback (most recent call last):
...
selfimprove.core.stage.StageInputError: hparams_json: unknown key(s) learning_rate; known: ...
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from selfimprove.core.stage import StageInputError

FROZEN_DTYPES = ("float32", "bfloat16", "auto")  # see selfimprove.trainer.precision


@dataclass(frozen=True)
class Hparams:
    """Every knob of a training run; ``hparams_json`` overrides any of them by name."""

    lr: float = 2e-4
    epochs: int = 2
    max_steps: int = 0  # 0: epochs decide
    batch_size: int = 8  # examples per micro-batch
    grad_accum: int = 2  # micro-batches per optimizer step
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 512  # tokens per example; longer ones are truncated from the response end
    bucket_size: int = 64  # examples sorted by length together before batching
    lora_r: int = 16
    lora_alpha: int = 32
    # 0: without a dropout mask per LoRA layer a CPU step runs 1.37x faster (docs/trainer.md)
    lora_dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    heldout_fraction: float = 0.1  # share of examples kept out to measure loss before/after
    heldout_max: int = 64
    checkpoint_every: int = 0  # 0: the service setting
    dpo_beta: float = 0.1
    dpo_lr: float = 5e-5
    full_lr: float = 2e-5
    # run a batch's common prefix (the system prompt) once: the same gradient from fewer tokens
    share_prefix: bool = True
    # the frozen base projections' dtype: float32, bfloat16, or auto (bfloat16 where the CPU has AMX)
    frozen_dtype: str = "float32"

    def __post_init__(self) -> None:
        positive = ("lr", "epochs", "batch_size", "grad_accum", "max_length", "bucket_size", "lora_r")
        bad = [name for name in positive if getattr(self, name) <= 0]
        if bad or not 0 <= self.heldout_fraction < 1 or not 0 <= self.lora_dropout < 1:
            raise StageInputError(f"hparams_json: out of range: {', '.join(bad) or 'fractions'}")
        if self.frozen_dtype not in FROZEN_DTYPES:
            raise StageInputError(
                f"hparams_json: frozen_dtype must be one of {', '.join(FROZEN_DTYPES)}, not {self.frozen_dtype!r}"
            )
        if not isinstance(self.share_prefix, bool):
            raise StageInputError(
                f"hparams_json: share_prefix must be true or false, not {self.share_prefix!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_hparams(text: str) -> Hparams:
    """Hyper-parameters from a JSON object (empty text: the defaults); unknown keys are refused."""
    try:
        given = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise StageInputError(f"hparams_json is not JSON: {exc}") from None
    if not isinstance(given, dict):
        raise StageInputError("hparams_json must be a JSON object")
    known = {f.name for f in dataclasses.fields(Hparams)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise StageInputError(
            f"hparams_json: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return Hparams(**given)
    except TypeError as exc:
        raise StageInputError(f"hparams_json: {exc}") from None
