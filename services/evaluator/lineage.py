"""What a run ran with: code version (``git describe`` when available, else the package version)
and the versions of the packages that matter. Read once at start-up."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "selfimprove",
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "vllm",
    "aiokafka",
    "grpcio",
    "protobuf",
    "pydantic",
    "sentence-transformers",
)


def code_version() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"selfimprove=={package_version('selfimprove') or 'unknown'}"


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    packages = {p: v for p in PACKAGES if (v := package_version(p))}
    return {"code_version": code_version(), "packages": packages}
