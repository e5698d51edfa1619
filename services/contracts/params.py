"""Selection parameters and training hyper-parameters: one schema for the run config and the stages.

The run config validates both when it loads (``selection.params``, ``training.hparams``), so a typo
fails before the run starts; the evaluator sends them as JSON (``SelectCommand.params_json``,
``TrainCommand.hparams_json``, written by ``model_dump_json``), and selection and the trainer read
them back with the same model. Every field is optional; unknown ones are refused by name.

A training setting may also be given by its Hugging Face name (``TrainingArguments``, ``LoraConfig``,
trl's ``beta``): ``learning_rate`` for ``lr``, ``r`` for ``lora_r`` (:data:`HF_NAMES`). Both names
work, one setting given by both is refused, and the JSON the stages exchange keeps the names here.

>>> SelectParams.model_validate_json('{"band": [0.1, 0.9], "max_per_prompt": 1}').band
(0.1, 0.9)
>>> Hparams.model_validate({"lr": 1e-4, "epochs": 2}).lora_r
16
>>> Hparams.model_validate({"lrr": 1})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Hparams
lrr
  Extra inputs are not permitted [type=extra_forbidden, input_value=1, input_type=int]
...
>>> hp = Hparams.model_validate({"learning_rate": 1e-4, "num_train_epochs": 3, "r": 8})
>>> hp.lr, hp.epochs, hp.lora_r, hp.model_dump_json(include={"lr", "lora_r"})
(0.0001, 3, 8, '{"lr":0.0001,"lora_r":8}')
>>> Hparams.model_validate({"lr": 1e-4, "learning_rate": 2e-4})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Hparams
  lr and learning_rate name one setting: give only one [type=duplicate_setting, ...]
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator
from pydantic_core import PydanticCustomError


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SelfJudgeParams(_Params):
    """Label-free selection by the model's own P(Yes) verdicts (acquisition's ``self_judge``) on the
    samples that give a prompt's majority answer (see selfimprove.selection.selfjudge)."""

    mode: Literal["off", "filter", "rank"] = Field(
        default="off",
        description="off; filter: keep the majority samples judged at least min_p_yes; rank: keep the "
        "keep_top majority samples judged best. Label-free runs only (verified runs have a verifier).",
    )
    min_p_yes: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="filter: least P(Yes) of a kept sample; with drop_prompts, both modes: least mean "
        "P(Yes) of a kept prompt's majority samples.",
    )
    keep_top: int = Field(default=1, ge=1, description="rank: majority samples kept per prompt.")
    drop_prompts: StrictBool = Field(
        default=True,
        description="Drop a prompt whose majority samples' mean P(Yes) is below min_p_yes "
        "(card drop reason self_judge_prompt).",
    )


class SelectParams(_Params):
    """How selection filters and balances acquisition rows (see selfimprove.selection.pipeline)."""

    agreement_threshold: float = Field(
        0.5, ge=0, le=1, description="Label-free: least majority share for a pseudo-label."
    )
    band: tuple[float, float] = Field((0.0, 1.0), description="Keep prompts with low < pass rate < high.")
    max_per_prompt: int = Field(2, ge=1, description="Distinct kept responses per prompt.")
    prefer_short: bool = Field(
        False, description="Keep a prompt's shortest correct responses (else sampling order)."
    )
    max_tokens: int = Field(256, ge=1, description="Longest kept response, in tokens.")
    max_chars: int = Field(2000, ge=1, description="Longest kept response, in characters.")
    near_duplicate: float = Field(
        0.85, ge=0, le=1, description="MinHash Jaccard above which two responses of a prompt are one."
    )
    prompt_duplicate: float = Field(0.95, ge=0, le=1, description="... and above which two prompts are one.")
    num_perm: int = Field(64, ge=1, description="MinHash permutations.")
    diversity_threshold: float = Field(
        0.985, description="Embedding cosine above which an item repeats a kept one."
    )
    embed: bool = Field(True, description="Filter and measure diversity with sentence embeddings.")
    category_cap: int | None = Field(
        None, ge=1, description="Prompts per category; unset: balance_ratio times the mean."
    )
    balance_ratio: float = Field(2.0, gt=0, description="Category cap as a multiple of the mean, when unset.")
    pairs_per_prompt: int = Field(2, ge=0, description="Preference pairs per prompt.")
    # a form the model is still taking up learns from several passes over few examples
    worked_repeat: dict[str, Annotated[StrictInt, Field(ge=1)]] = Field(
        default_factory=dict,
        description="Category -> times each kept worked reply of it is trained (once when absent).",
    )
    # false: the band drops such prompts like any other, for shorter trainings
    worked_mastered: bool = Field(
        True, description="Verified: a worked reply keeps a prompt every sample already answered."
    )
    self_judge: SelfJudgeParams = Field(
        default_factory=SelfJudgeParams,
        description="Label-free: keep the majority samples the model judges right (needs acquisition's "
        "self_judge).",
    )


# Hparams field -> its Hugging Face name, where the two differ (warmup_ratio, weight_decay,
# max_grad_norm, max_steps, max_length, lora_alpha, lora_dropout, target_modules are the same).
HF_NAMES = {
    "lr": "learning_rate",
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "max_length": "max_seq_length",
    "lora_r": "r",
    "dpo_beta": "beta",
    "checkpoint_every": "save_steps",
}


def _also(name: str) -> AliasChoices:
    """Both names of a field: its own first (the JSON schema's property) and its Hugging Face one."""
    return AliasChoices(name, HF_NAMES[name])


def _alias_properties(schema: dict[str, Any]) -> None:
    """The Hugging Face names in the JSON schema too, so an editor checking a config accepts them."""
    properties = schema.get("properties", {})
    for name, alias in HF_NAMES.items():
        if name in properties:
            properties[alias] = {**properties[name], "description": f"The Hugging Face name of {name}."}
            properties[alias].pop("default", None)


class Hparams(_Params):
    """Every knob of a training run (see selfimprove.trainer)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, json_schema_extra=_alias_properties
    )

    @model_validator(mode="before")
    @classmethod
    def _one_name_each(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, alias in HF_NAMES.items():
                if name in data and alias in data:
                    raise PydanticCustomError(
                        "duplicate_setting",
                        "{name} and {alias} name one setting: give only one",
                        {"name": name, "alias": alias},
                    )
        return data

    lr: float = Field(2e-4, gt=0, validation_alias=_also("lr"), description="LoRA learning rate.")
    epochs: int = Field(2, gt=0, validation_alias=_also("epochs"))
    max_steps: int = Field(0, ge=0, description="0: epochs decide.")
    batch_size: int = Field(
        8, gt=0, validation_alias=_also("batch_size"), description="Examples per micro-batch."
    )
    grad_accum: int = Field(
        2, gt=0, validation_alias=_also("grad_accum"), description="Micro-batches per optimizer step."
    )
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(
        512,
        gt=0,
        validation_alias=_also("max_length"),
        description="Tokens per example; longer ones lose their response end.",
    )
    bucket_size: int = Field(64, gt=0, description="Examples sorted by length together before batching.")
    lora_r: int = Field(16, gt=0, validation_alias=_also("lora_r"))
    lora_alpha: int = Field(32, gt=0)
    # without a dropout mask per LoRA layer a CPU step runs faster (docs/trainer.md)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    heldout_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of examples kept out to measure loss before and after."
    )
    heldout_max: int = Field(64, ge=0)
    checkpoint_every: int = Field(
        0,
        ge=0,
        validation_alias=_also("checkpoint_every"),
        description="Steps between checkpoints; 0: the service setting.",
    )
    dpo_beta: float = Field(0.1, gt=0, validation_alias=_also("dpo_beta"))
    dpo_lr: float = Field(5e-5, gt=0)
    full_lr: float = Field(2e-5, gt=0, description="Learning rate of full fine-tuning.")
    share_prefix: StrictBool = Field(
        True, description="Run a batch's common prefix (the system prompt) once: same gradient, fewer tokens."
    )
    frozen_dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32",
        description="The frozen base projections' dtype (auto: bfloat16 where the CPU has AMX); "
        "see selfimprove.trainer.precision.",
    )
