"""Where a generated text ends: pure helpers shared by the engines.

>>> cut_at_stop("48 + 27 = 75.\\nQ: next", ("\\nQ:",))
('48 + 27 = 75.', True)
>>> cut_at_stop("no stop here", ())
('no stop here', False)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def first_stop(text: str, stops: Iterable[str]) -> int:
    """Index of the earliest stop string in ``text``, or -1."""
    hits = [i for s in stops if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else -1


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to its earliest stop string, and whether one was found."""
    i = first_stop(text, stops)
    return (text, False) if i < 0 else (text[:i], True)


def common_prefix_len(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix shared by every sequence.

    >>> common_prefix_len([[1, 2, 3], [1, 2, 4, 5], [1, 2]])
    2
    """
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    for i in range(shortest):
        if any(s[i] != first[i] for s in sequences):
            return i
    return shortest
