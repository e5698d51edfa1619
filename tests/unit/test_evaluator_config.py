"""Run configs, the evaluator's pure helpers and their doctests."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

from selfimprove.evaluator.config import ConfigError, RunConfig, dump_config, load_config
from selfimprove.evaluator.crash import CrashHooks

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PURE = ["config", "state", "refs", "judge", "commands", "snapshot", "scoring", "evalcache", "decide", "focus"]


@pytest.mark.parametrize("name", PURE)
def test_doctests(name):
    module = importlib.import_module(f"selfimprove.evaluator.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL)
    assert result.attempted > 0 and result.failed == 0


def test_gc_plan_doctests():
    import selfimprove.cli.gc as gc

    assert doctest.testmod(gc).failed == 0


@pytest.mark.parametrize("name", ["demo.yaml", "demo-label-free.yaml", "small.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config((ROOT / "configs" / name).read_text())
    assert load_config(dump_config(cfg)) == cfg


def test_errors_name_the_field():
    with pytest.raises(
        ConfigError, match=r"acquisition.shards: Input should be greater than or equal to 1 \(got 0\)"
    ):
        load_config("acquisition: {shards: 0}")
    with pytest.raises(ConfigError, match="stopping.plateau_patience"):
        load_config("stopping: {plateau_patience: 1}")
    with pytest.raises(ConfigError, match="training.method"):
        load_config("training: {method: rl}")
    with pytest.raises(ConfigError, match="stages.deploy"):
        load_config("stages: {deploy: {timeout_s: 1}}")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config("a: [")


def test_defaults_are_complete():
    cfg = RunConfig()
    assert set(cfg.stages) == {"acquire", "select", "train", "evaluate", "refine"}
    assert cfg.stopping.plateau_patience >= 2


def test_full_fine_tuning_is_a_run_method():
    from selfimprove.evaluator.commands import METHODS
    from selfimprove.v2.stages_pb2 import TrainMethod

    cfg = load_config("training: {method: full, hparams: {full_lr: 5.0e-5}}")
    assert METHODS[cfg.training.method] == TrainMethod.TRAIN_METHOD_FULL_SFT


def test_crash_hook_names_are_checked():
    with pytest.raises(ValueError, match="unknown point"):
        CrashHooks("after_lunch")
    CrashHooks("after_consume:evaluate_result").at("before_commit", "evaluate_result")  # other point: no exit


def test_controller_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, selfimprove.evaluator.service, selfimprove.cli.status; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_focus_is_allowed_in_both_modes():
    for mode in ("verified", "label-free"):
        assert load_config(f"label_mode: {mode}\nacquisition: {{focus: true}}\n").acquisition.focus


@pytest.mark.parametrize("field", ["rationalize"])
def test_truth_fed_acquisition_needs_verified_mode_and_the_label_free_override_turns_it_off(tmp_path, field):
    from selfimprove.cli.run import prepare_config

    with pytest.raises(ConfigError, match=f"acquisition.{field}"):
        load_config(f"label_mode: label-free\nacquisition: {{{field}: true}}\n")
    path = tmp_path / "run.yaml"
    path.write_text(f"label_mode: verified\nacquisition: {{{field}: true}}\n")
    assert getattr(load_config(prepare_config(path, None, None, None)).acquisition, field)
    free = load_config(prepare_config(path, None, "label-free", None))
    assert free.label_mode == "label-free" and not getattr(free.acquisition, field)


def test_worked_replies_are_allowed_in_both_modes():
    for mode in ("verified", "label-free"):
        cfg = load_config(f"label_mode: {mode}\nacquisition: {{worked_from_iteration: 2}}\n")
        assert cfg.acquisition.worked_from_iteration == 2


def test_label_check_needs_label_free_mode_and_the_verified_override_turns_it_off(tmp_path):
    from selfimprove.cli.run import prepare_config

    with pytest.raises(ConfigError, match="acquisition.check_labels: .* needs label_mode label-free"):
        load_config("label_mode: verified\nacquisition: {check_labels: true}\n")
    path = tmp_path / "run.yaml"
    path.write_text("label_mode: label-free\nacquisition: {check_labels: true}\n")
    assert load_config(prepare_config(path, None, None, None)).acquisition.check_labels
    verified = load_config(prepare_config(path, None, "verified", None))
    assert verified.label_mode == "verified" and not verified.acquisition.check_labels
    with pytest.raises(ConfigError, match="acquisition.witness_labels: .* needs label_mode label-free"):
        load_config("label_mode: verified\nacquisition: {witness_labels: true}\n")
    path.write_text("label_mode: label-free\nacquisition: {check_labels: true, witness_labels: true}\n")
    assert load_config(prepare_config(path, None, None, None)).acquisition.witness_labels
    assert not load_config(prepare_config(path, None, "verified", None)).acquisition.witness_labels
