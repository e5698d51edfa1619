"""``selfimprove run --local`` as users run it (``make demo`` does the same with the demo config): the
local stack and every service start, a tiny run completes, the report is written with the GPT-3
table from the control plane that stays up for it, and a JSON summary is printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
# Tiny, but sure to train: every prompt with a verified sample is kept (no difficulty band).
CONFIG = """
task: {name: arithmetic, params: {categories: [add1]}, dev_size: 8}
budget: {iterations: 1, wall_time_s: 900}
acquisition: {shards: 1, prompts_per_shard: 8, samples_per_prompt: 2, max_new_tokens: 32}
selection: {params: {band: [-0.01, 1.01], embed: false}}
training: {method: sft, hparams: {epochs: 1, batch_size: 4}, require_loss_drop: false}
evaluation: {max_new_tokens: 24, test_sets: [{label: 2D+, gpt3: two_digit_addition}]}
refinement: {strategies: [greedy], token_budget: 64, dev_size: 4}
"""


def test_run_local_writes_the_report(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    env = {**os.environ, "SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "selfimprove.cli.main", "run", "--local", "--json",
         "--config", str(config), "--run-id", "cli-e2e",
         "--data-dir", str(tmp_path / "stack"), "--report-limit", "3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["run_id"] == "cli-e2e" and summary["state"] == "completed", summary
    report = Path(summary["report"])
    if not report.is_absolute():
        report = tmp_path / report
    text = report.read_text()
    assert "cli-e2e" in text and "2D+" in text, text[:2000]  # the declared test set was scored
    assert list(report.parent.glob("*.png")), "no plots next to the report"
    assert "## Refinement (calibration on the dev set)" in text  # the calibration table was found
    wall = text.split("## Wall time per stage (s)")[1].strip().splitlines()
    first = [cell.strip() for cell in wall[2].strip("|").split("|")]
    assert first[0] == "1" and "-" not in first[1:], wall  # every stage of iteration 1 ran and has a time


def children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            kids = (
                {int(x) for x in (task / "children").read_text().split()}
                if (task / "children").exists()
                else set()
            )
            todo += list(kids - found)
            found |= kids
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_local_run_and_every_service(tmp_path, sig):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.replace("prompts_per_shard: 8", "prompts_per_shard: 64"))
    env = {**os.environ, "SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfimprove.cli.main", "run", "--local", "--config", str(config),
         "--run-id", "cli-term", "--data-dir", str(tmp_path / "stack"), "--no-report"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # as a shell starts a background job: SIGINT ignored, and the run must still stop on it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    seen = []
    for line in proc.stdout:  # follow until the run is under way (acquisition is generating)
        seen.append(line)
        if "decision: continue: run started" in line:
            break
    assert proc.poll() is None, "".join(seen)
    time.sleep(5)
    descendants = children(proc.pid)
    assert len(descendants) >= 6, descendants  # broker, object store and the services
    proc.send_signal(sig)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, "".join(seen) + rest
    deadline = time.monotonic() + 30
    while any(alive(p) for p in descendants) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in descendants if alive(p)], "".join(seen) + rest
