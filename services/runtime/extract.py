"""Read a model's numeric answer without trusting it to follow a format.

The answer is the last signed integer in the reply. Handles the Unicode minus sign, thousands
separators ("1,234"), trailing punctuation, and a sign glued to the number ("-5", "= -5").

>>> last_integer("48 + 27 = 75.")
75
>>> last_integer("The difference is -164, so the answer is −164!")
-164
>>> last_integer("It is 1,234 apples")
1234
>>> last_integer("no digits") is None
True
>>> last_integer("5-3 = 2")
2
>>> last_integer("3 - 5")
5
"""

from __future__ import annotations

import re

_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-", "\ufe63": "-", "\uff0d": "-"})
# A sign counts only when it is not preceded by a digit or letter (so "5-3" reads 5 and 3); a
# comma group needs exactly three digits ("1,234" but not "5,6"); digits glued to a letter ("x2")
# still count, unsigned.
_INTEGER = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+|\d+)(?!\d)|(?<=[^\W\d])()(\d+)")


def integers(text: str) -> list[int]:
    """Every signed integer in ``text``, in order.

    >>> integers("2 + -3 = -1")
    [2, -3, -1]
    """
    out = []
    for m in _INTEGER.finditer(text.translate(_MINUS)):
        sign, digits = (m.group(1), m.group(2)) if m.group(2) is not None else ("", m.group(4))
        out.append(int(sign + digits.replace(",", "")))
    return out


def last_integer(text: str) -> int | None:
    """The last signed integer of ``text``, or ``None`` when it has none."""
    found = integers(text)
    return found[-1] if found else None
