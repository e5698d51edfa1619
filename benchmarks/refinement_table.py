"""Calibration table of inference strategies on arithmetic dev problems, with the real base model.

Each strategy answers the same dev problems; accuracy is scored by the task verifier, cost is
generated tokens and wall seconds per problem, and every row carries an exact paired (McNemar)
test against greedy. The machine is shared: seconds are indicative only.

    .venv/bin/python benchmarks/refinement_table.py --n 150 --categories add2 \
        --strategies self_consistency@5 best_of_n@4 self_refine@1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="smollm2-135m-instruct")
    ap.add_argument("--adapter", default=None, help="a PEFT adapter folder on the base")
    ap.add_argument("--n", type=int, default=150, help="dev problems")
    ap.add_argument("--categories", nargs="+", default=["add2"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", nargs="+", default=["self_consistency@5", "best_of_n@4", "self_refine@1"])
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--token-budget", type=float, default=0.0)
    ap.add_argument("--json", dest="json_out", default=None, help="also write the table here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from selfimprove.refinement.calibration import choose, measure
    from selfimprove.runtime.engine import make_engine
    from selfimprove.runtime.strategies import Settings
    from selfimprove.runtime.tasks import load_task

    torch.set_num_threads(args.threads)
    task = load_task("arithmetic", {"categories": args.categories})
    items = task.items("dev", args.n, seed=args.seed)
    start = time.perf_counter()
    engine = make_engine(
        "transformers",
        args.base,
        [args.adapter] if args.adapter else [],
        threads=args.threads,
        batch_size=args.batch_size,
    )
    print(f"model loaded in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    def show(row) -> None:
        print(
            f"{row.strategy:<22} acc {row.accuracy:6.1%}  tok/problem {row.tokens_per_problem:7.1f}  "
            f"s/problem {row.seconds_per_problem:6.2f}  delta {row.delta:+.3f}  p {row.p_value:.4f}",
            file=sys.stderr,
            flush=True,
        )

    settings = Settings(max_new_tokens=args.max_new_tokens, seed=args.seed)
    rows = measure(engine, task, items, args.strategies, settings, on_row=show)
    chosen = choose(rows, args.token_budget)
    print(f"\n{args.base} on {'+'.join(args.categories)} dev, n = {len(items)}, seed {args.seed}\n")
    print("| strategy | accuracy | tokens/problem | s/problem | delta vs greedy | McNemar p |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r.strategy} | {r.accuracy:.1%} ({sum(r.outcomes)}/{len(r.outcomes)}) | "
            f"{r.tokens_per_problem:.1f} | {r.seconds_per_problem:.2f} | {r.delta:+.3f} | {r.p_value:.4f} |"
        )
    print(f"\nchosen (budget {args.token_budget or 'none'}): {chosen}")
    if args.json_out:
        table = [{**r.__dict__, "accuracy": r.accuracy, "outcomes": list(r.outcomes)} for r in rows]
        with open(args.json_out, "w") as f:
            json.dump({"n": len(items), "chosen": chosen, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
