"""Selection refuses to start without the evaluation sets it decontaminates against, naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfimprove.core.settings import SettingsError
from selfimprove.runtime.benchmarks import GPT3_SETS
from selfimprove.selection.service import check_benchmarks
from selfimprove.selection.settings import SelectionSettings

pytestmark = pytest.mark.unit


def test_a_missing_benchmarks_folder_is_a_start_up_error_naming_the_setting(tmp_path: Path) -> None:
    settings = SelectionSettings(benchmarks_dir=tmp_path / "nowhere")
    with pytest.raises(SettingsError, match="SELFIMPROVE_SELECTION_BENCHMARKS_DIR .*nowhere"):
        check_benchmarks(settings)


def test_a_complete_folder_passes_and_the_check_can_be_switched_off(tmp_path: Path) -> None:
    for name in GPT3_SETS[:-1]:
        (tmp_path / f"{name}.jsonl").write_text("")
    with pytest.raises(SettingsError, match=GPT3_SETS[-1]):
        check_benchmarks(SelectionSettings(benchmarks_dir=tmp_path))
    (tmp_path / f"{GPT3_SETS[-1]}.jsonl").write_text("")
    check_benchmarks(SelectionSettings(benchmarks_dir=tmp_path))
    check_benchmarks(SelectionSettings(benchmarks_dir=tmp_path / "nowhere", require_decontamination=False))
