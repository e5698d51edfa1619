"""Regenerate ``selfimprove.v2`` (messages, gRPC stubs and ``.pyi`` typing stubs) from ``protos/``.

Run ``python -m selfimprove.core.protogen`` (``make protos``); ``--check`` exits non-zero when the
committed generated code differs from what the protos produce, so CI catches stale code.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
TARGET = ROOT / "services" / "v2"
HEADER = '"""Generated contracts of selfimprove (``make protos``). Do not edit."""\n'


def generate(out: Path) -> None:
    """Run protoc with the Python, gRPC and mypy plugins into ``out`` (flattened to the v2 package)."""
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "selfimprove" / "v2").glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    raw = out / "raw"
    raw.mkdir(parents=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={raw}",
        f"--grpc_python_out={raw}",
        f"--mypy_out={raw}",
        f"--mypy_grpc_out={raw}",
        *sources,
    ]
    # The mypy plugins are scripts beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    flat = out / "v2"
    shutil.copytree(raw / "selfimprove" / "v2", flat)
    (flat / "__init__.py").write_text(HEADER)
    (flat / "py.typed").write_text("")


def differences(a: Path, b: Path) -> list[str]:
    names = {p.name for p in a.iterdir() if p.is_file()} | {p.name for p in b.iterdir() if p.is_file()}
    names.discard("__pycache__")
    return sorted(
        n
        for n in names
        if not (a / n).exists() or not (b / n).exists() or not filecmp.cmp(a / n, b / n, False)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if services/v2 is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "v2"
        if args.check:
            stale = differences(fresh, TARGET) if TARGET.exists() else ["services/v2 missing"]
            if stale:
                print(
                    f"generated contracts are stale ({', '.join(stale)}): run `make protos`", file=sys.stderr
                )
                return 1
            print("generated contracts are up to date")
            return 0
        if TARGET.exists():
            shutil.rmtree(TARGET)
        shutil.copytree(fresh, TARGET)
        print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
