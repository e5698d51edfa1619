"""Per iteration and task category of a finished run: prompts, prompts with a right sampled answer of
the model's own, and prompts with a verified worked reply (``acquisition.worked_from_iteration``),
read from the run's stored acquisition shards in a local stack folder (the stack must not be running);
and per iteration the examples selection kept (``kept``), how many of them are worked replies
(``kept_worked``) and sub-questions (``kept_steps``), from its data cards. Sub-question rows count
``steps``, ``steps_right`` (a right sample of the model's own) and ``steps_hinted`` (a right hinted one).

    .venv/bin/python docs/experiments/scripts/worked_yield.py demo-x --data-dir DIR

Prints one JSON line per iteration (the latest attempt of every shard, summed).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from storekit import read_latest, run_parser

from selfimprove.contracts.samples import is_step

FIELDS = ("prompts", "own_right", "worked", "steps", "steps_right", "steps_hinted")


def counts(jsonl: bytes) -> dict[str, dict[str, int]]:
    """Per category: ``prompts``, ``own_right`` and ``worked`` (verified worked reply), and of the
    worked replies' sub-question rows ``steps``, ``steps_right`` (a right sample) and ``steps_hinted``
    (a right hinted sample: asked again with its answer, ``acquisition.rationalize_steps``).

    >>> rows = [{"category": "sub2", "samples": [{"verified": False}], "worked": [{"verified": True}]},
    ...         {"category": "sub2", "samples": [{"verified": True}], "worked": []},
    ...         {"category": "sub2", "meta": {"step": 1}, "samples": [{"verified": True}]},
    ...         {"category": "sub2", "meta": {"step": 2}, "samples": [{"verified": False}],
    ...          "rationales": [{"verified": True}]}]
    >>> counts("\\n".join(map(json.dumps, rows)).encode())
    {'sub2': {'prompts': 2, 'own_right': 1, 'worked': 1, 'steps': 2, 'steps_right': 1, 'steps_hinted': 1}}
    """
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for row in map(json.loads, jsonl.decode().splitlines()):
        c = out[row["category"]]
        right = any(s["verified"] for s in row["samples"])
        if is_step(row):
            c["steps"] += 1
            c["steps_right"] += right
            c["steps_hinted"] += any(s["verified"] for s in row.get("rationales", ()))
            continue
        c["prompts"] += 1
        c["own_right"] += right
        c["worked"] += any(w["verified"] for w in row.get("worked", ()))
    return {k: {f: out[k][f] for f in FIELDS} for k in sorted(out)}


def main() -> None:
    args = run_parser(__doc__).parse_args()
    per_iteration: dict[int, Counter] = defaultdict(Counter)
    for (iteration, _), data in read_latest(args.data_dir, args.run_id, "acquire", "samples.jsonl").items():
        for category, values in counts(data).items():
            per_iteration[iteration].update({f"{category}/{k}": v for k, v in values.items()})
    for (iteration, _), data in read_latest(args.data_dir, args.run_id, "select", "card.json").items():
        card = json.loads(data)["counts"]
        per_iteration[iteration].update(
            kept=card["sft"],
            kept_worked=card.get("prompts_worked", 0),
            kept_steps=card.get("prompts_steps", 0),
        )
    for iteration, values in sorted(per_iteration.items()):
        print(json.dumps({"iteration": iteration, **dict(sorted(values.items()))}))


if __name__ == "__main__":
    main()
