"""Selection starts without any evaluation file (runs name the sets they need); only a benchmarks
folder that is set but absent is a start-up error naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfimprove.core.settings import SettingsError
from selfimprove.selection.service import check_benchmarks
from selfimprove.selection.settings import SelectionSettings

pytestmark = pytest.mark.unit


def test_a_benchmarks_folder_set_but_absent_is_a_start_up_error_naming_the_setting(tmp_path: Path) -> None:
    settings = SelectionSettings(benchmarks_dir=tmp_path / "nowhere")
    with pytest.raises(SettingsError, match="SELFIMPROVE_SELECTION_BENCHMARKS_DIR: .*nowhere"):
        check_benchmarks(settings)


def test_selection_starts_without_the_gpt3_files(tmp_path: Path) -> None:
    check_benchmarks(SelectionSettings())  # unset: nothing is read until a run declares a GPT-3 set
    check_benchmarks(SelectionSettings(benchmarks_dir=tmp_path))  # an empty folder is fine too
