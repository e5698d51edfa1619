"""Each iteration's prompts per category in a finished run, and what label-free focus reads from
them: the stored acquisition shards (each iteration's latest attempts), counted by the shard's own
statistics (``shard_stats``: each category's ``asked`` and ``open_labels``). The truth is not read.

    .venv/bin/python docs/experiments/scripts/prompt_mix.py demo-lfh --data-dir DIR [--floor 0.1]

Prints one JSON line per iteration: per category the prompts asked and those with an open label (a
majority answer that passed its checks though not every sample gave it), and the shares label-free
focus derives from them (``focus.shares`` at ``--floor``: the next iteration's weights, once a
trained model samples). Then, per category of the run, its distinct train problems: a long train
stream with and without the evaluation problems skipped (acquisition skips them), which bounds how
many prompts focus can give a category.
"""

from __future__ import annotations

import json
from collections import Counter

from storekit import read_latest, run_parser

from selfimprove.acquisition.prompts import stream_seed, train_stream
from selfimprove.acquisition.shard import shard_stats
from selfimprove.contracts.samples import from_jsonl
from selfimprove.evaluator.focus import category_asked, category_open, shares
from selfimprove.runtime.benchmarks import decontamination_keys
from selfimprove.runtime.tasks import load_task

STREAM = 4096  # items drawn when counting a category's distinct train problems


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--floor", type=float, default=0.1, help="focus_floor of the shares printed")
    args = ap.parse_args()
    stored = read_latest(args.data_dir, args.run_id, "acquire", "samples.jsonl")
    iterations: dict[int, list] = {}
    for (iteration, _), data in sorted(stored.items()):
        iterations.setdefault(iteration, []).append(shard_stats(from_jsonl(data), 1.0))
    for iteration, shards in sorted(iterations.items()):
        opened = {c.category: 0 for s in shards for c in s.categories}
        for s in shards:
            for c in s.categories:
                opened[c.category] += c.open_labels
        figures = {c: {"asked": int(n), "open": opened.get(c, 0)} for c, n in category_asked(shards).items()}
        print(
            json.dumps(
                {"iteration": iteration, **figures, "shares": shares(category_open(shards), args.floor)}
            )
        )
    categories = sorted({c for shards in iterations.values() for c in category_asked(shards)})
    task = load_task("arithmetic", {"categories": categories})
    plain = Counter(i.category for i in train_stream(task, STREAM, stream_seed(0, 1)))
    skipped = Counter(
        i.category for i in train_stream(task, STREAM, stream_seed(0, 1), decontamination_keys())
    )
    print(
        json.dumps(
            {
                "distinct_train_problems": dict(sorted(plain.items())),
                "evaluation_skipped": dict(sorted(skipped.items())),
            }
        )
    )


if __name__ == "__main__":
    main()
