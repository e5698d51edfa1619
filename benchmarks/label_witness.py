"""How the worked-plan witness (``acquisition.witness_labels``) sorts label-free labels (a pilot).

Acquires train problems exactly as a label-free shard with the label check and the witness does
(``acquisition.generate.run_shard`` with ``check_labels`` and ``witness_labels``; T = 0.7, top-p 0.95,
K samples per prompt), takes each prompt's label as selection does (``selection.labels.label_of``,
then the check, then the witness), and counts per category, reading the truth only to count:

- ``checked`` / ``_right``: labels that passed the check (what label-free selection kept before);
- ``witnessed`` / ``_right``: of those, labels the witness reached too (what it keeps now);
- ``no_witness``: checked labels with no witness (no plan, or a step with no usable answer).

    .venv/bin/python benchmarks/label_witness.py [--adapter DIR] [--problems 256] [--samples 6]
"""

from __future__ import annotations

import json
import time
from collections import Counter

from enginekit import pilot_setup

from selfimprove.acquisition.generate import ShardJob, run_shard
from selfimprove.selection.labels import LABEL_FREE, label_of, refused, unwitnessed


def main() -> None:
    args, engine, task, items, sampling = pilot_setup(__doc__)
    job = ShardJob(items, sampling, check_labels=True, witness_labels=True)
    tic = time.perf_counter()
    rows, _, seconds = run_shard(engine, task, job)
    counts: dict[str, Counter] = {}
    for row in rows:
        c, truth = counts.setdefault(row["category"], Counter()), row["answer"]
        label = label_of(row, LABEL_FREE, args.threshold)
        if label is None or refused(row, label):
            continue
        c["checked"] += 1
        c["checked_right"] += label == truth
        c["no_witness"] += row["witness"] is None
        if not unwitnessed(row, label):
            c["witnessed"] += 1
            c["witnessed_right"] += label == truth
    for cat in sorted(counts):
        print(json.dumps({"category": cat, **counts[cat]}))
    total = sum(counts.values(), Counter())
    print(json.dumps({"category": "all", **total}))
    print(json.dumps({"seconds": round(time.perf_counter() - tic, 1), "shard_seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
