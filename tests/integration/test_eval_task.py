"""``selfimprove eval --task FILE`` with the real default model on a word-problem file: the JSON
gives one set with n items, an accuracy in [0, 1] and an ordered 95 % interval."""

import json
import os
import subprocess
import sys

import pytest

from selfimprove.runtime.benchmarks import default_dir

pytestmark = pytest.mark.integration

SVAMP = default_dir().parent / "word-problems" / "svamp_test.jsonl"


@pytest.mark.skipif(not SVAMP.is_file(), reason=f"{SVAMP} is not here")
def test_eval_task_on_a_data_file_with_the_real_model():
    done = subprocess.run(
        [sys.executable, "-m", "selfimprove.cli.main", "eval", "--task", str(SVAMP), "--id-field", "id"]
        + ["--verifier", "numeric", "--limit", "8", "--json", "--threads", "2", "--batch-size", "8"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["model"] == "smollm2-135m-instruct" and out["task"] == str(SVAMP)
    [row] = out["sets"]
    assert row["set"] == "svamp_test" and row["n"] == 8 and 0 <= row["correct"] <= 8
    assert 0.0 <= row["accuracy"] <= 1.0
    low, high = row["ci95"]
    assert 0.0 <= low <= row["accuracy"] <= high <= 1.0
    assert row["tokens"] > 0
