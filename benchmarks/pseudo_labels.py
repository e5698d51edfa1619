"""How often label-free pseudo-labels are right: a run's acquisition samples, read from the local
stack's store, labelled exactly as selection's label-free path does (``selection.labels.label_of``),
then compared with the truth per category and agreement threshold.

    .venv/bin/python benchmarks/pseudo_labels.py demo-a --iteration 1 --thresholds 0.5 0.66

Prints, per threshold and category: prompts, prompts with a pseudo-label, and how many are right.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from selfimprove.core.stack import LocalStack
from selfimprove.selection.labels import LABEL_FREE, label_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_id")
    ap.add_argument("--iteration", type=int, default=1)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.66])
    ap.add_argument("--data-dir", type=Path, default=Path(".stack"))
    args = ap.parse_args()
    prefix = f"runs/{args.run_id}/iter-{args.iteration:03d}/acquire/"
    rows = []
    with LocalStack(root=args.data_dir) as stack:
        client = stack.s3_client()
        for obj in client.list_objects(stack.bucket, prefix=prefix, recursive=True):
            if obj.object_name.endswith("/samples.jsonl"):
                data = client.get_object(stack.bucket, obj.object_name).read().decode()
                rows += [json.loads(line) for line in data.splitlines()]
    if not rows:
        raise SystemExit(f"no samples under s3://{prefix} in {args.data_dir}")
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
