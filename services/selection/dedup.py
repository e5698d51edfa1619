"""Near-duplicate removal with MinHash over word shingles (``datasketch``)."""

from __future__ import annotations

from collections.abc import Sequence


def shingles(text: str, size: int = 3) -> set[str]:
    """Word ``size``-grams of lower-cased text (the whole text when shorter).

    >>> sorted(shingles("What is 4 + 5?", 3))
    ['4 + 5?', 'is 4 +', 'what is 4']
    """
    words = text.lower().split()
    if len(words) <= size:
        return {" ".join(words)}
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


def near_dedup(texts: Sequence[str], threshold: float, num_perm: int = 64) -> tuple[list[int], int]:
    """Indices of texts kept when each is dropped if its estimated Jaccard similarity to an
    earlier kept one is at least ``threshold``.

    >>> a = "first we add the tens then the ones so 48 plus 27 is 75"
    >>> near_dedup([a, a + " .", "a totally different answer about 12 times 3 which is 36"], 0.8)
    ([0, 2], 1)
    """
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=1)
        for s in shingles(text):
            m.update(s.encode())
        if lsh.query(m):
            continue
        lsh.insert(str(i), m)
        kept.append(i)
    return kept, len(texts) - len(kept)
