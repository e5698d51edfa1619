"""What the server answers with right now: a model version, its engine and a strategy, swapped whole.

A request takes one :class:`Served` snapshot and uses it to the end, so a promotion or a new
calibration choice that lands mid-request never mixes two models. Every engine call of the process
goes through one lock: calibration and serving share two CPU cores, and interleave per engine call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from selfimprove.runtime.engine import Engine, GenerationRequest, PromptResult
from selfimprove.runtime.policy import version_key
from selfimprove.runtime.strategies import Extract, parse
from selfimprove.v2.common_pb2 import ModelRef


class LockedEngine:
    """An engine whose calls take a shared lock (one generation at a time per process)."""

    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine, self.lock = engine, lock

    def generate(self, request: GenerationRequest) -> list[PromptResult]:
        with self.lock:
            return self.engine.generate(request)

    def count_tokens(self, prompt: str) -> int | None:
        """Prompt length in tokens when the engine can tell (the transformers backend can)."""
        encode = getattr(self.engine, "encode", None)
        return len(encode(prompt)) if encode is not None else None


def model_version(ref: ModelRef) -> str:
    """The version name of ``ref``: its own, else its identity.

    >>> model_version(ModelRef(base="b", version="run/iter-002")), model_version(ModelRef(base="b"))
    ('run/iter-002', 'b')
    """
    return ref.version or version_key(ref)


@dataclass(frozen=True)
class Served:
    ref: ModelRef
    engine: LockedEngine
    strategy: str
    extract: Extract

    @property
    def version(self) -> str:
        return model_version(self.ref)


class ServedModel:
    """Holds the current :class:`Served`; replacing it is one reference assignment (atomic)."""

    def __init__(self, served: Served) -> None:
        parse(served.strategy, serving=True)
        self._served = served
        self._swap = threading.Lock()

    def current(self) -> Served:
        return self._served

    def use_model(self, ref: ModelRef, engine: LockedEngine) -> Served:
        with self._swap:
            self._served = replace(self._served, ref=ref, engine=engine)
            return self._served

    def use_strategy(self, strategy: str) -> Served:
        name = parse(strategy, serving=True).name
        with self._swap:
            self._served = replace(self._served, strategy=name)
            return self._served
