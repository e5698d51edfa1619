"""The policy a command names (``ModelRef``: base model plus optional adapter), loaded once and kept.

Services that run the model (acquisition, refinement, evaluation workers) ask a ``PolicyCache`` for
the engine of a ``ModelRef``; adapters (or a fully fine-tuned whole model, loaded in place of the
base) come from the artifact store, verified by sha256, into the local model cache. The base is
loaded once per process; up to ``keep`` versions stay in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from selfimprove.runtime import adapters
from selfimprove.runtime.engine import Engine, make_engine
from selfimprove.v2.common_pb2 import ModelRef

DEFAULT_BASE = "smollm2-135m-instruct"


def version_key(ref: ModelRef) -> str:
    """A stable identity of a model version.

    >>> from selfimprove.v2.common_pb2 import ArtifactRef
    >>> version_key(ModelRef(base="smollm2-135m-instruct"))
    'smollm2-135m-instruct'
    >>> version_key(ModelRef(base="b", adapter=ArtifactRef(uri="s3://x/m.json", sha256="ab")))
    'b+ab'
    """
    base = ref.base or DEFAULT_BASE
    return f"{base}+{ref.adapter.sha256}" if ref.adapter.uri else base


class PolicyCache:
    """Engines by model version, built with ``make_engine``; thread-safe."""

    def __init__(
        self,
        store: Any | None = None,
        backend: str = "transformers",
        keep: int = 2,
        cache_dir: Path | None = None,
        **engine_options: Any,
    ) -> None:
        self.backend = backend
        self.keep = keep
        self.cache_dir = cache_dir
        self.engine_options = engine_options
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._lock = threading.Lock()
        if store is not None:
            adapters.set_fetcher(lambda ref, dest: store.get_folder(ref, dest))

    def engine(self, ref: ModelRef) -> Engine:
        key = version_key(ref)
        with self._lock:
            if key in self._engines:
                self._engines.move_to_end(key)
                return self._engines[key]
            chosen: list[Any] = [ref.adapter] if ref.adapter.uri else []
            options = dict(self.engine_options)
            if self.cache_dir is not None:
                options["cache_dir"] = self.cache_dir
            engine = make_engine(self.backend, ref.base or DEFAULT_BASE, chosen, **options)
            self._engines[key] = engine
            while len(self._engines) > self.keep:
                self._engines.popitem(last=False)
            return engine
