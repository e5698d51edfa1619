"""The chaos suite, short: six SIGKILLs of random services, one broker restart and one object-store
restart (a stage killed while the store is down) during a small real run of one iteration; the run
completes, no promotion twice or lost, every manifest verifies, every accepted result is one attempt,
no input is dead-lettered for the store outage. ``make chaos`` runs 20 kills on a run meant to promote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
base_model: smollm2-135m-instruct
seed: 5
task: {name: arithmetic, params: {categories: [add2]}, dev_size: 8}
budget: {iterations: 1, wall_time_s: 1500}
acquisition: {shards: 2, prompts_per_shard: 8, samples_per_prompt: 4, max_new_tokens: 32}
training: {method: sft, hparams: {epochs: 2, batch_size: 4}, require_loss_drop: false}
evaluation: {max_new_tokens: 24, alpha: 0.5}
refinement: {strategies: [greedy], token_budget: 64, dev_size: 4}
stages:
  acquire: {timeout_s: 180, max_attempts: 4}
  select: {timeout_s: 120, max_attempts: 4}
  train: {timeout_s: 240, max_attempts: 4}
  evaluate: {timeout_s: 180, max_attempts: 4}
  refine: {timeout_s: 180, max_attempts: 4}
"""


def test_chaos_short(tmp_path):
    config = tmp_path / "chaos.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "chaos.json"
    command = [sys.executable, "benchmarks/chaos.py", "--kills", "6", "--seed", "3", "--min-delay", "3"]
    command += ["--max-delay", "12", "--config", str(config), "--no-require-promotion", "--timeout", "900"]
    command += ["--root", str(tmp_path / "loop"), "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1100)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    print(done.stdout)
    assert figures["kill_count"] == 6 and figures["broker_restarts"] == 1
    assert figures["store_restarts"] == 1 and figures["store_down_seconds"] >= 8
    [victim] = figures["killed_while_store_down"]
    assert victim != "evaluator"
    outage_errors = {"StoreUnavailableError", "MaxRetryError", "ProtocolError", "S3Error", "ServerError"}
    dead = [e for errors in figures["dead_lettered"].values() for e in errors]
    assert not outage_errors & set(dead), dead  # the store outage was waited out, not dead-lettered
    assert figures["run"]["state"] == "completed"
    assert figures["manifests"]["verified"] > 0 and not figures["manifests"]["bad"]
    assert figures["accepted_results"] >= 4  # acquire x2, select, train, evaluate (refine if reached)
    assert all(n <= 1 for n in figures["promotions"]["per_iteration"].values())
    assert figures["promotions"]["events"] == figures["promotions"]["in_state"]
    assert figures["dead_at_end"] == []
