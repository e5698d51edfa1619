"""Copy an iteration's trained candidate out of a finished run's stack folder, for ``selfimprove eval
--adapter DIR`` (an adapter, or with ``training.method: full`` a whole model; the incumbent is the
candidate of the iteration last promoted). Reads the store as it was left; no control plane needed.

    .venv/bin/python docs/experiments/scripts/candidate.py RUN --iteration N --out DIR [--data-dir .stack]
"""

from __future__ import annotations

from pathlib import Path

from storekit import fetch_candidate, run_parser


def main() -> None:
    ap = run_parser(__doc__)
    ap.add_argument("--iteration", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} exists and is not empty")
    print(fetch_candidate(args.data_dir, args.run_id, args.iteration, args.out))


if __name__ == "__main__":
    main()
