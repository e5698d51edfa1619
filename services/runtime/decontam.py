"""N-gram decontamination in the style of the GPT-3 paper (Brown et al. 2020, appendix C): whether a
training prompt overlaps an evaluation item. Pure: texts in, verdicts out.

Texts are normalised the same way on both sides: lower case, punctuation removed, split into
words (``"Paco had 26 cookies."`` is ``paco had 26 cookies``). A training prompt is contaminated
when, against any evaluation item,

- the two share a 13-gram (13 consecutive words), or
- the shorter of the two has fewer than 13 words and all of its words, in order, appear inside the
  other (a training prompt that embeds a short test question; a short prompt cut out of a test
  item), or
- their normalised texts are equal.

The containment rule needs the shorter text to have at least ``min_words`` words (8, the GPT-3
paper's smallest n-gram): punctuation carries meaning in very short texts, so ``What is 9 + 8?`` is
inside ``What is (9 + 8) * 2?`` once normalised, though it is another problem. Texts below
``min_words`` count only when equal. Exact problem keys (an arithmetic problem's operator and
operands) are the stage's own business; this rule is the one every evaluation set gets.

:class:`Index` hashes the evaluation items' n-grams once; checking a prompt then costs one set
look-up per word per n-gram length in play, so ten thousand prompts against ten thousand items is
a matter of seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

N = 13
MIN_WORDS = 8
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> tuple[str, ...]:
    """The normalised words of ``text``: lower case, punctuation removed, split on the rest.

    >>> words("  Paco had 26 salty cookies. How many did he have left?")
    ('paco', 'had', '26', 'salty', 'cookies', 'how', 'many', 'did', 'he', 'have', 'left')
    >>> words("Q: What is (9 + 8) * 2?\\n\\nA:")
    ('q', 'what', 'is', '9', '8', '2', 'a')
    """
    return tuple(_WORD.findall(text.lower()))


def ngrams(seq: Sequence[str], n: int) -> Iterator[int]:
    """Hashes of the ``n``-word windows of ``seq`` (none when it is shorter).

    >>> len(list(ngrams(words("a b c d"), 2))), list(ngrams(("a",), 2))
    (3, [])
    """
    for start in range(len(seq) - n + 1):
        yield hash(tuple(seq[start : start + n]))


class Index:
    """The evaluation items, hashed for :meth:`contaminated` (see the module docstring).

    >>> index = Index(["Paco had 26 salty cookies and 17 sweet cookies. How many salty cookies "
    ...                "did Paco have left?", "What is 2 + 3?"])
    >>> len(index)
    2
    >>> index.contaminated("Solve this: paco had 26 SALTY cookies and 17 sweet cookies; how many "
    ...                    "salty cookies did he keep? Think step by step.")  # 14 words in common
    True
    >>> index.contaminated("How many salty cookies did Paco have left?")  # a fragment of 8 words
    True
    >>> index.contaminated("what is 2 + 3"), index.contaminated("What is 2 + 3 + 4?")
    (True, False)
    >>> index.contaminated("Mia had 26 salty cookies. How many did she eat?")
    False
    """

    def __init__(self, texts: Iterable[str], n: int = N, min_words: int = MIN_WORDS) -> None:
        if not 1 <= min_words <= n:
            raise ValueError(f"min_words must be between 1 and n ({n}), got {min_words}")
        self.n, self.min_words = n, min_words
        self._items: list[tuple[str, ...]] = []
        self._grams: set[int] = set()  # every n-gram of the items
        self._wholes: set[int] = set()  # the whole word sequence of each item shorter than n
        self._short_lengths: set[int] = set()  # lengths of those, min_words and up
        self._windows: dict[int, set[int]] = {}  # k-grams of the items, built when a prompt of k words comes
        for text in texts:
            seq = words(text)
            if not seq:
                continue
            self._items.append(seq)
            if len(seq) >= n:
                self._grams.update(ngrams(seq, n))
            else:
                self._wholes.add(hash(seq))
                if len(seq) >= min_words:
                    self._short_lengths.add(len(seq))

    def __len__(self) -> int:
        return len(self._items)

    def _windows_of(self, k: int) -> set[int]:
        if k not in self._windows:
            self._windows[k] = {h for seq in self._items for h in ngrams(seq, k)}
        return self._windows[k]

    def contaminated(self, text: str) -> bool:
        """Whether ``text`` overlaps an evaluation item by the module's rule."""
        seq = words(text)
        if not seq or not self._items:
            return False
        if len(seq) < self.n and hash(seq) in self._wholes:
            return True
        if any(h in self._grams for h in ngrams(seq, self.n)):
            return True
        for k in self._short_lengths:  # a short item inside the prompt
            if k <= len(seq) and any(h in self._wholes for h in ngrams(seq, k)):
                return True
        return self.min_words <= len(seq) < self.n and hash(seq) in self._windows_of(len(seq))
