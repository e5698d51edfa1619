"""How often label-free pseudo-labels are right: a run's acquisition samples, read from the local
stack's store, labelled exactly as selection's label-free path does (``selection.labels.label_of``),
then compared with the truth per category and agreement threshold.

    .venv/bin/python docs/experiments/scripts/pseudo_labels.py demo-a --iteration 1 --thresholds 0.5 0.66

Prints, per threshold and category: prompts, prompts with a pseudo-label, and how many are right.
"""

from __future__ import annotations

import json
from collections import Counter

from storekit import read_latest, run_parser

from selfimprove.selection.labels import LABEL_FREE, label_of


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--iteration", type=int, default=1)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.66])
    args = ap.parse_args()
    shards = read_latest(args.data_dir, args.run_id, "acquire", "samples.jsonl", args.iteration)
    rows = [json.loads(line) for data in shards.values() for line in data.decode().splitlines()]
    for threshold in args.thresholds:
        prompts, labelled, right = Counter(), Counter(), Counter()
        for row in rows:
            cat = row["category"]
            prompts[cat] += 1
            label = label_of(row, LABEL_FREE, threshold)
            if label is not None:
                labelled[cat] += 1
                right[cat] += label == row["answer"]
        for cat in sorted(prompts):
            print(
                f"threshold {threshold}: {cat}: {prompts[cat]} prompts, {labelled[cat]} pseudo-labelled, "
                f"{right[cat]} right"
            )


if __name__ == "__main__":
    main()
