"""What selection would have kept with other parameters: a finished run's stored acquisition shards
(the latest attempt of each, from a local stack folder; the stack must not be running) selected again
offline in verified mode, with ``--params`` and with ``--params`` updated by ``--variant``, side by side.

    .venv/bin/python docs/experiments/scripts/reselect.py demo-pa --data-dir DIR --variant '{"worked_mastered": false}'

Prints one JSON line per iteration: for each setting, the kept examples in all and per category, and
their characters (prompt and response: the trainer's cost grows with them). The embedding diversity
filter is off (``embed: false``), so the counts can differ a little from the run's own.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

from storekit import read_latest, run_parser

from selfimprove.contracts.params import SelectParams
from selfimprove.selection.labels import VERIFIED
from selfimprove.selection.pipeline import select


def summary(sft: Sequence[dict]) -> dict[str, int]:
    """Kept examples in all, per category, and their characters.

    >>> summary([{"category": "sub2", "prompt": "1 - 2?", "response": "-1"}, {"category": "add2", "prompt": "a", "response": "b"}])
    {'kept': 2, 'add2': 1, 'sub2': 1, 'chars': 10}
    """
    per = Counter(x.get("category", "?") for x in sft)
    chars = sum(len(x["prompt"]) + len(x["response"]) for x in sft)
    return {"kept": len(sft), **dict(sorted(per.items())), "chars": chars}


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument(
        "--params",
        default='{"prefer_short": true, "max_per_prompt": 1}',
        help="the run's selection params (JSON)",
    )
    ap.add_argument("--variant", required=True, help="parameters that differ from --params (JSON)")
    args = ap.parse_args()
    base = {**json.loads(args.params), "embed": False}
    settings = {
        "params": SelectParams.model_validate_json(json.dumps(base)),
        "variant": SelectParams.model_validate_json(json.dumps({**base, **json.loads(args.variant)})),
    }
    rows: dict[int, list[dict]] = {}
    for (iteration, _), data in read_latest(args.data_dir, args.run_id, "acquire", "samples.jsonl").items():
        rows.setdefault(iteration, []).extend(map(json.loads, data.decode().splitlines()))
    for iteration, work in sorted(rows.items()):
        out = {name: summary(select(work, VERIFIED, p).sft) for name, p in settings.items()}
        print(json.dumps({"iteration": iteration, **out}))


if __name__ == "__main__":
    main()
