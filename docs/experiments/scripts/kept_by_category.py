"""How many selected (trained-on) examples each iteration of a finished run kept, per task category,
read from the run's stored ``sft.jsonl`` sets in a local stack folder (the stack must not be running).

    .venv/bin/python docs/experiments/scripts/kept_by_category.py demo-u --data-dir DIR

Prints one JSON line per iteration (the latest selection attempt) with, from that selection's data
card, its precision against the truth, measured after selection (per kept label, label-free runs,
and per kept example) and its drops by the label check and the witness, then the totals. Replay means an example can be trained on in two
iterations; these counts are each iteration's new selection.
"""

from __future__ import annotations

import json
from collections import Counter

from storekit import read_latest, run_parser


def by_category(jsonl: bytes) -> dict[str, int]:
    """Selected rows per ``category`` (sorted by name).

    >>> by_category(b'{"category": "sub2"}\\n{"category": "add2"}\\n{"category": "sub2"}\\n')
    {'add2': 1, 'sub2': 2}
    """
    counts = Counter(json.loads(line).get("category", "?") for line in jsonl.splitlines() if line.strip())
    return dict(sorted(counts.items()))


def main() -> None:
    ap = run_parser(__doc__)
    args = ap.parse_args()
    stored = read_latest(args.data_dir, args.run_id, "select", "sft.jsonl")
    cards = {
        k: json.loads(v) for k, v in read_latest(args.data_dir, args.run_id, "select", "card.json").items()
    }
    total: Counter[str] = Counter()
    for (iteration, shard), data in sorted(stored.items()):
        row = by_category(data)
        card = cards.get((iteration, shard), {})
        figures = {
            "pseudo_label_precision": card.get("pseudo_label_precision"),
            "sft_answer_precision": card.get("sft_answer_precision"),
            "dropped_label_check": card.get("dropped", {}).get("label_check", 0),
            "dropped_label_witness": card.get("dropped", {}).get("label_witness", 0),
        }
        print(json.dumps({"iteration": iteration, **row, **figures}))
        total.update(row)
    print(json.dumps({"run": args.run_id, **dict(sorted(total.items()))}))


if __name__ == "__main__":
    main()
