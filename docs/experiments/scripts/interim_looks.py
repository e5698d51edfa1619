"""What ``evaluation.interim_looks`` would have decided in a finished run: each iteration's recorded
dev outcomes (the evaluation details, in the order the worker evaluates them) replayed look by look.

Greedy outcomes do not depend on how many items are evaluated, so the replay is exactly what the
worker would have scored at each look. For each iteration it prints the size the main suite would
have stopped at (or all of it), the decision there and the run's own decision on every item; then
how many main-suite items would have been generated in all, against every model on every item. A
model's items are cached once generated, so a promoted candidate settled early is evaluated further
as the next iteration's incumbent when that iteration needs more items.

    .venv/bin/python docs/experiments/scripts/interim_looks.py RUN --data-dir DIR [--looks 100 200] [--interim-alpha 0.001]
"""

from __future__ import annotations

import json

from storekit import read_latest, run_parser

from selfimprove.evaluator.paired import chunks, decided_early, suite_score


def replay(inc: list[bool], cand: list[bool], looks: list[int], interim_alpha: float, alpha: float) -> dict:
    """The look a main suite's outcomes settle at, and the verdicts there and on every item.

    >>> replay([False] * 8 + [True] * 2, [True] * 10, [4], 0.2, 0.3)
    {'n': 4, 'of': 10, 'p_at_stop': 0.125, 'promote_at_stop': True, 'promote_on_all': True}
    """
    n = len(inc)
    for _, hi in chunks(n, looks):
        if hi < n and decided_early(inc[:hi], cand[:hi], interim_alpha):
            break
    stop, full = suite_score("", inc[:hi], cand[:hi]), suite_score("", inc, cand)

    def promoted(s: dict) -> bool:
        return s["candidate_accuracy"] > s["incumbent_accuracy"] and s["p_value"] < alpha

    return {
        "n": hi,
        "of": n,
        "p_at_stop": round(stop["p_value"], 6),
        "promote_at_stop": promoted(stop),
        "promote_on_all": promoted(full),
    }


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--looks", type=int, nargs="+", default=[100, 200])
    ap.add_argument("--interim-alpha", type=float, default=0.001)
    ap.add_argument("--alpha", type=float, default=0.05)
    args = ap.parse_args()
    stored = read_latest(args.data_dir, args.run_id, "evaluate", "details.jsonl")
    reached: dict[str, int] = {}  # model -> main-suite items generated for it (cached afterwards)
    size, incumbent = 0, "base"
    for (iteration, _), data in sorted(stored.items()):
        rows = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
        main = [r for r in rows if r["suite"] == "dev"]
        inc = [bool(r["incumbent_ok"]) for r in main]
        cand = [bool(r["candidate_ok"]) for r in main]
        out = replay(inc, cand, args.looks, args.interim_alpha, args.alpha)
        size = out["of"]
        candidate = f"iteration {iteration}"
        for model in (incumbent, candidate):
            reached[model] = max(reached.get(model, 0), out["n"])
        print(json.dumps({"iteration": iteration, "incumbent": incumbent, **out}))
        if out["promote_at_stop"]:
            incumbent = candidate
    saved = sum(size - n for n in reached.values())
    print(
        json.dumps(
            {
                "run": args.run_id,
                "looks": args.looks,
                "main_suite_items_generated": sum(reached.values()),
                "without_looks": size * len(reached),
                "not_generated": saved,
            }
        )
    )


if __name__ == "__main__":
    main()
