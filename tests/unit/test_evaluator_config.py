"""Run configs and the evaluator's pure helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfimprove.evaluator.config import ConfigError, RunConfig, dump_config, load_config, tactics_of
from selfimprove.evaluator.crash import CrashHooks

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


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


def tactics(cfg):
    return tactics_of(cfg).model_dump()


@pytest.mark.parametrize("field", ["rationalize", "rationalize_steps"])
def test_truth_fed_tactics_need_verified_mode_and_the_label_free_override_turns_them_off(tmp_path, field):
    from selfimprove.cli.run import prepare_config

    section = f"task: {{tactics: {{{field}: true, worked_from_iteration: 2}}}}\n"
    with pytest.raises(ConfigError, match=f"task.tactics.{field}: .* needs label_mode verified"):
        load_config("label_mode: label-free\n" + section)
    path = tmp_path / "run.yaml"
    path.write_text("label_mode: verified\n" + section)
    assert tactics(load_config(prepare_config(path, None, None, None)))[field]
    free = load_config(prepare_config(path, None, "label-free", None))
    assert free.label_mode == "label-free" and not tactics(free)[field]
    assert tactics(free)["worked_from_iteration"] == 2  # worked replies read no truth in label-free runs


def test_worked_replies_are_allowed_in_both_modes():
    for mode in ("verified", "label-free"):
        cfg = load_config(f"label_mode: {mode}\ntask: {{tactics: {{worked_from_iteration: 2}}}}\n")
        assert tactics(cfg)["worked_from_iteration"] == 2


def test_label_check_needs_label_free_mode_and_the_verified_override_turns_it_off(tmp_path):
    from selfimprove.cli.run import prepare_config

    with pytest.raises(ConfigError, match="task.tactics.check_labels: .* needs label_mode label-free"):
        load_config("label_mode: verified\ntask: {tactics: {check_labels: true}}\n")
    path = tmp_path / "run.yaml"
    path.write_text("label_mode: label-free\ntask: {tactics: {check_labels: true}}\n")
    assert tactics(load_config(prepare_config(path, None, None, None)))["check_labels"]
    verified = load_config(prepare_config(path, None, "verified", None))
    assert verified.label_mode == "verified" and not tactics(verified)["check_labels"]


def test_tactics_are_the_tasks_own_and_a_deleted_or_unknown_one_is_refused():
    for gone in ("hint_only_iterations", "witness_labels", "sample_pending", "worked_by_majority"):
        with pytest.raises(ConfigError, match=f"task.tactics.{gone}: Extra inputs are not permitted"):
            load_config(f"task: {{tactics: {{{gone}: 1}}}}\n")
        with pytest.raises(ConfigError, match=f"acquisition.{gone}: Extra inputs are not permitted"):
            load_config(f"acquisition: {{{gone}: 1}}\n")
    with pytest.raises(
        ConfigError, match="task.tactics.rationalize_steps: .* needs worked_from_iteration above 0"
    ):
        load_config("task: {tactics: {rationalize_steps: true}}\n")
    with pytest.raises(ConfigError, match="task.tactics.worked_from_iteration: Input should be greater"):
        load_config("task: {tactics: {worked_from_iteration: -1}}\n")
    # a task this process cannot import (a plug-in installed where the stages run) takes the generic
    # tactics only: worked replies need a task whose model says it has plans
    plugin = "task: {name: 'mytasks.sorting:SortTask', tactics: {worked_from_iteration: 2}}\n"
    with pytest.raises(ConfigError, match="task.tactics.worked_from_iteration: Extra inputs"):
        load_config(plugin)
    assert tactics(load_config("task: {name: 'mytasks.sorting:SortTask', tactics: {rationalize: true}}\n"))


def test_each_iteration_gets_the_tactics_the_task_model_says():
    cfg = load_config((ROOT / "configs" / "demo.yaml").read_text())
    applied = [tactics_of(cfg).at(i, cfg.label_free) for i in (1, 2, 3)]
    assert [a.worked for a in applied] == [False, True, True]
    assert all(a.rationalize and a.rationalize_steps and not a.check_labels for a in applied)
    assert not any(a.worked_by_majority for a in applied)  # verified: the verifier picks the steps
    free = load_config((ROOT / "configs" / "demo-label-free.yaml").read_text())
    assert all(
        a.check_labels and a.worked_by_majority and not a.worked and not a.rationalize
        for a in (tactics_of(free).at(i, True) for i in (1, 2))
    )
