"""How fast a run's trainer trained, iteration by iteration: the loss curves it stored, read from a
local stack's store after the run (the stack must not be running).

    .venv/bin/python benchmarks/loop_training.py demo-s --data-dir .stack

Prints one line per iteration (the latest training attempt): optimizer steps, examples, tokens,
seconds inside the training loop (the curve's per-step seconds: no model loading, held-out loss or
upload), examples/s and, for curves that record it, CPU seconds per wall second (``cpu_per_wall``:
about the torch threads when nothing else ran beside the training); then the totals. Runs on
different stacks compare the trainer in the loop, not in isolation (other stages do not overlap
training, but the examples differ).
"""

from __future__ import annotations

import json

from storekit import read_latest, run_parser


def summary(points: list[dict]) -> dict:
    """Steps, examples, tokens and seconds of one loss curve.

    >>> summary([{"seconds": 1.5, "tokens": 300, "batch_examples": 8}, {"seconds": 0.5, "tokens": 90, "batch_examples": 2}])
    {'steps': 2, 'examples': 10, 'tokens': 390, 'seconds': 2.0}
    """
    return {
        "steps": len(points),
        "examples": sum(int(p.get("batch_examples", 0)) for p in points),
        "tokens": sum(int(p.get("tokens", 0)) for p in points),
        "seconds": round(sum(float(p.get("seconds", 0.0)) for p in points), 3),
    }


def main() -> None:
    ap = run_parser(__doc__)
    args = ap.parse_args()
    stored = read_latest(args.data_dir, args.run_id, "train", "loss_curve.json")
    curves = {iteration: json.loads(data) for (iteration, _), data in stored.items()}
    total = {"steps": 0, "examples": 0, "tokens": 0, "seconds": 0.0}
    for iteration in sorted(curves):
        curve = curves[iteration]
        points = curve if isinstance(curve, list) else curve.get("points", [])
        row = summary(points)
        cpu = [float(p["cpu_seconds"]) for p in points if "cpu_seconds" in p]
        # CPU seconds per wall second (curves since cpu_seconds was recorded): near the torch
        # threads when training had the cores to itself
        busy = {"cpu_per_wall": round(sum(cpu) / row["seconds"], 2)} if cpu and row["seconds"] else {}
        print(json.dumps({"iteration": iteration, **row, "examples_per_s": _rate(row), **busy}))
        total = {k: total[k] + row[k] for k in total}
    print(json.dumps({"run": args.run_id, **total, "examples_per_s": _rate(total)}))


def _rate(row: dict) -> float:
    return round(row["examples"] / row["seconds"], 2) if row["seconds"] else 0.0


if __name__ == "__main__":
    main()
