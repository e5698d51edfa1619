"""What the server answers with right now: a model version, its engine and a strategy, swapped whole.

A request takes one :class:`Served` snapshot and uses it to the end, so a promotion or a new
calibration choice that lands mid-request never mixes two models.

Every engine call of the process runs on the one compute thread (:mod:`selfimprove.core.compute`),
one call at a time: a served request runs there whole (its strategy's few calls), a model swap
loads there, and a calibration runs its own loop on a worker thread and sends each engine call
there (:class:`ComputeEngine`), split into calls of at most one engine batch. So a request or a swap
waits for the calibration's call in progress, never for the whole calibration (serving latency while
calibrating: ``benchmarks/serving_latency.py``). A calibration holds its own engine, so a swap
that lands mid-calibration changes what is served, never the model being measured.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from selfimprove.core import compute
from selfimprove.runtime.engine import Engine, GenerationRequest, PromptResult
from selfimprove.runtime.policy import version_key
from selfimprove.runtime.strategies import Extract, parse
from selfimprove.v2.common_pb2 import ModelRef


class Abandoned(RuntimeError):
    """The caller stopped waiting for this engine's work (the service stops, the handler timed out)."""


def part_seed(seed: int | None, part: int) -> int | None:
    """The sampling seed of part ``part`` of a split request: the request's own for the first part
    (a request that fits one call is unchanged), a distinct one for each further part (the same seed
    would repeat the first part's random draws).

    >>> part_seed(7, 0), part_seed(7, 1) != part_seed(7, 2), part_seed(None, 3)
    (7, True, None)
    """
    if seed is None or part == 0:
        return seed
    return (seed * 1_000_003 + part) % 2**63


def split(request: GenerationRequest, max_sequences: int) -> list[GenerationRequest]:
    """``request`` as calls of at most ``max_sequences`` sequences (prompts x n, at least one prompt
    a call; 0: one call), in prompt order.

    >>> from selfimprove.runtime.engine import SamplingParams
    >>> parts = split(GenerationRequest(list("abcde"), SamplingParams(n=2, seed=1)), 4)
    >>> [list(p.prompts) for p in parts], [p.params.seed for p in parts][:2]
    ([['a', 'b'], ['c', 'd'], ['e']], [1, 1000004])
    >>> len(split(GenerationRequest(list("abc"), SamplingParams(n=8)), 4)), len(split(GenerationRequest(["a"]), 0))
    (3, 1)
    """
    if max_sequences < 0:
        raise ValueError(f"max_sequences must be >= 0, got {max_sequences}")
    prompts, params = list(request.prompts), request.params
    per_call = max(1, max_sequences // params.n) if max_sequences else len(prompts)
    if len(prompts) <= per_call:
        return [request]
    return [
        replace(
            request,
            prompts=prompts[at : at + per_call],
            params=replace(params, seed=part_seed(params.seed, i)),
        )
        for i, at in enumerate(range(0, len(prompts), per_call))
    ]


class ComputeEngine:
    """An engine whose calls run on the compute thread, one at a time, from whichever thread makes
    them. ``max_sequences`` (0: no limit) splits a request into calls of at most that many sequences,
    so that other work waits for one of them at most; ``abandon``, once set, refuses the next call
    (:class:`Abandoned`)."""

    def __init__(
        self, engine: Engine, max_sequences: int = 0, abandon: threading.Event | None = None
    ) -> None:
        self.engine, self.max_sequences, self.abandon = engine, max_sequences, abandon

    def generate(self, request: GenerationRequest) -> list[PromptResult]:
        results: list[PromptResult] = []
        for part in split(request, self.max_sequences):
            if self.abandon is not None and self.abandon.is_set():
                raise Abandoned("the engine's caller stopped waiting")
            results.extend(compute.call(self.engine.generate, part))
        return results

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
    engine: ComputeEngine
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

    def use_model(self, ref: ModelRef, engine: ComputeEngine) -> Served:
        with self._swap:
            self._served = replace(self._served, ref=ref, engine=engine)
            return self._served

    def use_strategy(self, strategy: str) -> Served:
        name = parse(strategy, serving=True).name
        with self._swap:
            self._served = replace(self._served, strategy=name)
            return self._served
