"""How right label-free worked replies are, and how often they agree with the label (a pilot).

Acquires train problems exactly as a label-free shard with worked replies and the label check does
(``acquisition.generate.run_shard`` with ``worked``, ``worked_by_majority`` and ``check_labels``; T = 0.7,
top-p 0.95, K samples per prompt and per sub-question), takes each prompt's label as selection does
(``selection.labels.label_of``, then the check), and counts per category, reading the truth only to count:

- ``labelled`` / ``_right``: prompts with a label (agreement at least ``--threshold``), and right ones;
- ``checked`` / ``_right``: labels that also passed the check (what label-free selection keeps);
- ``worked`` / ``_right`` / ``_true_steps``: prompts with a worked reply (every step's samples had a
  majority), its final answer right, every step true as well;
- ``worked_agrees`` / ``_right``: checked labels a worked reply gives too (what selection trains in the
  worked form);
- ``worked_unlabelled`` / ``_right``: prompts with no checked label but a worked reply (labels the
  worked route alone would add); ``worked_unlabelled_sure`` / ``_right``: those whose every step's
  majority reached ``--threshold``.

    .venv/bin/python docs/experiments/scripts/worked_labels.py [--adapter DIR] [--problems 256] [--samples 6]
"""

from __future__ import annotations

import json
import time
from collections import Counter

from pilotkit import pilot_setup

from selfimprove.acquisition.generate import ShardJob, run_shard
from selfimprove.contracts.samples import is_step
from selfimprove.runtime.tasks.arithmetic import equations_true
from selfimprove.selection.labels import LABEL_FREE, label_of, refused


def main() -> None:
    args, engine, task, items, sampling = pilot_setup(__doc__)
    job = ShardJob(items, sampling, worked=True, worked_by_majority=True, check_labels=True)
    tic = time.perf_counter()
    rows, _, seconds = run_shard(engine, task, job)
    counts: dict[str, Counter] = {}
    by_id = {r["id"]: r for r in rows}
    for row in (r for r in rows if not is_step(r)):
        c, truth = counts.setdefault(row["category"], Counter()), row["answer"]
        c["prompts"] += 1
        label = label_of(row, LABEL_FREE, args.threshold)
        checked = label if label is not None and not refused(row, label) else None
        c["labelled"] += label is not None
        c["labelled_right"] += label is not None and label == truth
        c["checked"] += checked is not None
        c["checked_right"] += checked is not None and checked == truth
        for w in row["worked"]:
            c["worked"] += 1
            c["worked_right"] += w["extracted"] == truth
            c["worked_true_steps"] += w["extracted"] == truth and equations_true(w["text"])
            if checked is not None and w["extracted"] == checked:
                c["worked_agrees"] += 1
                c["worked_agrees_right"] += checked == truth
            if checked is None:
                right = w["extracted"] == truth
                sure = all(by_id[f"{row['id']}.s{k}"]["agreement"] >= args.threshold for k in (1, 2))
                c["worked_unlabelled"] += 1
                c["worked_unlabelled_right"] += right
                c["worked_unlabelled_sure"] += sure
                c["worked_unlabelled_sure_right"] += sure and right
    for cat in sorted(counts):
        print(json.dumps({"category": cat, **counts[cat]}))
    steps = [r for r in rows if is_step(r)]
    print(
        json.dumps(
            {
                "seconds": round(time.perf_counter() - tic, 1),
                "shard_seconds": round(seconds, 1),
                "step_rows": len(steps),
            }
        )
    )


if __name__ == "__main__":
    main()
