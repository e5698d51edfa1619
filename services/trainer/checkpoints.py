"""Checkpoints that outlive the process: a local folder per step, mirrored to the artifact store.

A checkpoint is a folder (adapter or trainable weights, optimizer, scheduler, RNG states, step)
published as a folder artifact under ``<attempt prefix>checkpoints/step-<NNNNNN>/``. A trainer
killed mid-run and handed the same command again pulls the newest complete checkpoint (one with
its manifest) and resumes from it. Only the newest ``keep`` checkpoints stay in the store.

>>> step_of("runs/r/iter-001/train/shard-000/attempt-1/checkpoints/step-000040/manifest.json")
40
>>> step_of("runs/r/iter-001/train/shard-000/attempt-1/checkpoints/step-000040/state.pt") is None
True
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from selfimprove.core.keys import MANIFEST
from selfimprove.core.store import ArtifactStore

log = logging.getLogger(__name__)
_STEP = re.compile(r"/step-(\d{6})/" + re.escape(MANIFEST) + "$")


def step_of(key: str) -> int | None:
    """The step of a checkpoint manifest key, else None."""
    m = _STEP.search(key)
    return int(m.group(1)) if m else None


class CheckpointSync:
    """Pushes local checkpoint folders to the store and pulls the newest one back."""

    def __init__(self, store: ArtifactStore, attempt_prefix: str, keep: int = 2) -> None:
        self.store = store
        self.prefix = attempt_prefix + "checkpoints/"
        self.keep = keep

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints in the store, ascending."""
        found = (step_of(k) for k in self.store.list_keys(self.prefix))
        return sorted(s for s in found if s is not None)

    def push(self, step: int, folder: Path) -> None:
        """Publish ``folder`` as the checkpoint of ``step``, then drop the oldest beyond ``keep``."""
        self.store.publish_folder(f"{self.prefix}step-{step:06d}/", folder, {"step": step})
        for old in self.steps()[: -self.keep]:
            self.store.delete_prefix(f"{self.prefix}step-{old:06d}/")
        log.info("checkpoint of step %d stored under %s", step, self.prefix)

    def pull(self, dest: Path) -> tuple[int, Path] | None:
        """The newest stored checkpoint, downloaded and verified into ``dest/step-<N>``; None if none."""
        for step in reversed(self.steps()):
            ref = self.store.find_manifest(f"{self.prefix}step-{step:06d}/")
            if ref is None:
                continue
            folder = self.store.get_folder(ref, dest / f"step-{step:06d}")
            log.info("resuming from the checkpoint of step %d", step)
            return step, folder
        return None
