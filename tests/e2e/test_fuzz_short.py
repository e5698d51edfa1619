"""The fuzz suite, short: ~500 malformed messages on every topic plus malformed gRPC requests against
the whole local loop, then one small real run. ``make fuzz`` runs the full 10,000."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_fuzz_short(tmp_path):
    out = tmp_path / "fuzz.json"
    command = [sys.executable, "benchmarks/fuzz.py", "--messages", "500", "--huge", "2", "--seed", "7"]
    command += ["--root", str(tmp_path / "loop"), "--json", str(out)]
    command += ["--no-inputs"]  # the data files, HTTP requests and model folders: test_fuzz_inputs.py
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    report = done.stdout[-6000:] + done.stderr[-3000:]
    assert done.returncode == 0, report
    figures = json.loads(out.read_text())
    print(done.stdout)
    assert figures["messages_sent"] == 500 and figures["failures"] == []
    assert figures["dead_at_end"] == []
    assert len(figures["messages_per_topic"]) == 11  # five command, five result topics and control
    for row in figures["accounting"].values():
        assert row["expected"] == row["handled"] + row["duplicate"] + row["dlq"]
    kinds = figures["kinds"]
    assert {"random_bytes", "truncated", "mutated", "wrong_payload", "empty", "huge"} <= set(kinds)
    # Undecodable bytes can only be dead-lettered: every copy of every one is in a DLQ.
    for kind in ("random_bytes", "empty", "missing_field"):
        if kind in kinds:
            copies = sum(v for k, v in kinds[kind].items() if k.startswith("dlq:"))
            assert copies >= kinds[kind]["sent"], (kind, kinds[kind])
    assert figures["run"]["state"] == "completed" and figures["run"]["accuracy"]
    assert figures["grpc"]["refinement_good_request_after"] == "OK"
    assert figures["grpc"]["rate_limit_flood_80"].get("RESOURCE_EXHAUSTED", 0) > 0
