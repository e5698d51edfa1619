"""The deployment files as data, rendered offline by the tools of the test extra: the compose files
through ``docker-compose config`` (no .env: the defaults), each Kubernetes overlay through ``kubectl
kustomize``, and what our images set and run from the Dockerfiles that build them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support import dockerfile

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCKER = ROOT / "deploy" / "docker"
OVERLAYS = sorted(p.name for p in (ROOT / "deploy" / "k8s" / "overlays").iterdir() if p.is_dir())
COMPOSE_SETS = {"cpu": ("docker-compose.yml",), "gpu": ("docker-compose.yml", "docker-compose.gpu.yml")}
# An image built from this repository: <prefix>/selfimprove... or selfimprove/<service>[:tag].
OURS = re.compile(r"(^|/)selfimprove([/-]|$)")


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install the test extra (make install)")
    return str(path)


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr}")
    return done.stdout


def render_compose(files: tuple[str, ...]) -> dict:
    """``docker-compose config --format json`` of ``files`` merged, with no .env (the defaults)."""
    args = [a for f in files for a in ("-f", str(ROOT / f))]
    return json.loads(
        _run([tool("docker-compose"), "--env-file", os.devnull, *args, "config", "--format", "json"])
    )


def render_overlay(overlay: str) -> list[dict]:
    """The objects ``kubectl kustomize deploy/k8s/overlays/<overlay>`` renders."""
    out = _run([tool("kubectl"), "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)])
    return [d for d in yaml.safe_load_all(out) if d]


def compose_images(config: dict) -> dict[str, dockerfile.Image]:
    """What each compose service's image sets and runs, from the Dockerfile its ``build`` names."""
    out = {}
    for name, svc in config["services"].items():
        build = svc.get("build")
        if build:
            path = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
            out[name] = dockerfile.parse(path.read_text(), build.get("args") or {})
    return out


def local_copy(url: str) -> Path | None:
    """The local folder holding a file an image adds from a URL (the GPT-3 evaluation sets, which
    ``make install`` puts in the data folder ``selfimprove.runtime.benchmarks.default_dir`` names)."""
    from selfimprove.runtime.benchmarks import default_dir

    path = default_dir() / url.rsplit("/", 1)[-1]
    return path.parent if path.is_file() else None


def k8s_image(image: str) -> dockerfile.Image:
    """What one of our images runs and sets: ``<repo>/<service>[:tag]`` is built from Dockerfile (or
    Dockerfile.cuda for a ``-cuda`` tag) with ``SERVICE=<service>``."""
    if not OURS.search(image):
        return dockerfile.Image()
    last = image.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    path = DOCKER / ("Dockerfile.cuda" if tag.endswith("-cuda") else "Dockerfile")
    return dockerfile.parse(path.read_text(), {"SERVICE": name})
