"""Training settings by their Hugging Face names: each alias sets its field, both names at once are
refused naming both, and the JSON the trainer reads back keeps this project's names."""

import json

import pytest
from pydantic import ValidationError

from selfimprove.contracts.params import HF_NAMES, Hparams
from selfimprove.evaluator.config import ConfigError, load_config
from selfimprove.trainer.hparams import parse_hparams

pytestmark = pytest.mark.unit

HF_STYLE = {
    "learning_rate": 1e-4,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 8,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "max_grad_norm": 0.5,
    "max_steps": 40,
    "max_seq_length": 256,
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "target_modules": ["q_proj", "v_proj"],
    "beta": 0.2,
    "save_steps": 10,
}
OURS = {
    "lr": 1e-4,
    "epochs": 3,
    "batch_size": 4,
    "grad_accum": 8,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "max_grad_norm": 0.5,
    "max_steps": 40,
    "max_length": 256,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "target_modules": ["q_proj", "v_proj"],
    "dpo_beta": 0.2,
    "checkpoint_every": 10,
}


def test_hugging_face_names_set_the_same_fields():
    assert Hparams.model_validate(HF_STYLE) == Hparams.model_validate(OURS) == Hparams(**OURS)


def test_the_trainer_reads_back_the_canonical_names():
    written = Hparams.model_validate(HF_STYLE).model_dump_json()
    assert set(json.loads(written)) == set(Hparams.model_fields)
    assert parse_hparams(written) == Hparams.model_validate(OURS)


def test_a_run_config_takes_them():
    cfg = load_config("training: {hparams: {learning_rate: 0.0003, per_device_train_batch_size: 2, r: 4}}")
    hp = cfg.training.hparams
    assert (hp.lr, hp.batch_size, hp.lora_r) == (3e-4, 2, 4)


@pytest.mark.parametrize(("ours", "theirs"), sorted(HF_NAMES.items()))
def test_both_names_of_one_setting_are_refused_by_name(ours, theirs):
    with pytest.raises(ValidationError, match=f"{ours} and {theirs} name one setting"):
        Hparams.model_validate({ours: OURS[ours], theirs: HF_STYLE[theirs]})


def test_the_config_error_names_both():
    with pytest.raises(ConfigError, match="training.hparams: lora_r and r name one setting"):
        load_config("training: {hparams: {lora_r: 8, r: 16}}")


def test_bad_values_under_either_name_are_refused_by_the_name_given():
    with pytest.raises(ConfigError, match="training.hparams.learning_rate: Input should be greater than 0"):
        load_config("training: {hparams: {learning_rate: 0}}")
    with pytest.raises(ConfigError, match="training.hparams.lr: Input should be greater than 0"):
        load_config("training: {hparams: {lr: 0}}")
