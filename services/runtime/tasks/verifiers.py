"""Verifiers chosen by name in a run config: how a reply's answer is found and compared with a
reference answer, for tasks read from a data file (:mod:`selfimprove.runtime.tasks.datafile`).

- ``numeric``: the last number in the reply (``1,234``, ``-3``, ``2.5``, ``$7``), equal to the
  reference within ``tolerance`` (absolute, default ``1e-6``; ``relative`` also accepted);
- ``exact``: the reply's last non-empty line, normalised (case, spaces, surrounding punctuation),
  equal to the normalised reference;
- ``choice``: the last option letter in the reply (``A``-``E`` by default, ``letters`` to change),
  equal to the reference letter;
- ``regex``: the last match of ``pattern`` (its first group when it has one), normalised like
  ``exact``;
- ``integer``: the reply's last signed integer, equal to the stripped reference as text (the fixed
  rule of the GPT-3 arithmetic sets: ``1,234`` reads as ``234``, ``2.5`` as ``5``);
- ``package.module:function``: any function ``(reply: str, answer: str) -> bool | None``.

A verifier is pure: the same reply and answer always give the same verdict.
"""

from __future__ import annotations

import importlib
import math
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
BUILTIN = ("numeric", "integer", "exact", "choice", "regex")


class VerifierError(ValueError):
    """A verifier name or its parameters that do not make a verifier; the message says why."""


def normalise(text: str) -> str:
    """Lower case, inner spaces collapsed, surrounding spaces and punctuation removed.

    >>> normalise("  The  Eiffel Tower. ")
    'the eiffel tower'
    """
    return " ".join(text.lower().split()).strip(string.punctuation + " ")


def last_number(reply: str) -> str | None:
    """The last number in ``reply`` in canonical form (thousands separators dropped; an integral
    value without its ``.0``), or ``None``.

    >>> last_number("She pays $1,250.00 in total, so 1,250."), last_number("-3 apples"), last_number("none")
    ('1250', '-3', None)
    """
    found = NUMBER.findall(reply)
    if not found:
        return None
    text = found[-1].replace(",", "").rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


@dataclass(frozen=True)
class Verifier:
    """``extract`` finds the answer in a reply; ``equal`` compares it with a reference."""

    name: str
    extract: Callable[[str], str | None]
    equal: Callable[[str, str], bool]

    def verify(self, reply: str, answer: str) -> bool:
        """Whether ``reply`` answers ``answer``.

        >>> make_verifier("numeric").verify("So the answer is 51.", "51.0")
        True
        """
        got = self.extract(reply)
        return got is not None and self.equal(got, answer)

    def canonical(self, answer: str) -> str:
        """A reference answer in the form ``extract`` gives (labels compare equal to it)."""
        return self.extract(answer) or answer.strip()


def _numeric(tolerance: float = 1e-6, relative: float = 0.0) -> Verifier:
    if tolerance < 0 or relative < 0:
        raise VerifierError("numeric: tolerance and relative must be >= 0")

    def equal(got: str, answer: str) -> bool:
        ref = last_number(answer)
        if ref is None:
            return False
        a, b = float(got), float(ref)
        return math.isclose(a, b, rel_tol=relative, abs_tol=tolerance)

    return Verifier("numeric", last_number, equal)


def _last_integer(reply: str) -> str | None:
    from selfimprove.runtime.extract import last_integer

    value = last_integer(reply)
    return None if value is None else str(value)


def _integer() -> Verifier:
    return Verifier("integer", _last_integer, lambda got, answer: got == answer.strip())


def _last_line(reply: str) -> str | None:
    lines = [line for line in reply.strip().splitlines() if line.strip()]
    return normalise(lines[-1]) if lines else None


def _exact() -> Verifier:
    return Verifier("exact", _last_line, lambda got, answer: got == normalise(answer))


def _choice(letters: str = "ABCDE") -> Verifier:
    if not letters or not letters.isalpha():
        raise VerifierError(f"choice: letters must be option letters, got {letters!r}")
    pattern = re.compile(rf"(?<![A-Za-z])([{re.escape(letters.upper())}])(?![A-Za-z])")

    def extract(reply: str) -> str | None:
        found = pattern.findall(reply.upper().replace("(", " ").replace(")", " "))
        return found[-1] if found else None

    return Verifier("choice", extract, lambda got, answer: got == answer.strip().strip("()").upper())


def _regex(pattern: str | None = None, flags: str = "") -> Verifier:
    if not pattern:
        raise VerifierError("regex: needs a 'pattern'")
    try:
        compiled = re.compile(pattern, re.IGNORECASE if "i" in flags else 0)
    except re.error as exc:
        raise VerifierError(f"regex: bad pattern {pattern!r}: {exc}") from None

    def extract(reply: str) -> str | None:
        found = list(compiled.finditer(reply))
        if not found:
            return None
        last = found[-1]
        return normalise(last.group(1) if compiled.groups else last.group(0))

    return Verifier("regex", extract, lambda got, answer: got == normalise(answer))


def _imported(path: str) -> Verifier:
    module_name, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise VerifierError(f"verifier {path!r}: cannot import it: {exc}") from None
    if not callable(fn):
        raise VerifierError(f"verifier {path!r} is not a function")

    def equal(got: str, answer: str) -> bool:
        return bool(fn(got, answer))

    # the function sees the whole reply: extraction is its business
    return Verifier(path, lambda reply: reply, equal)


_MAKERS: dict[str, Callable[..., Verifier]] = {
    "numeric": _numeric,
    "integer": _integer,
    "exact": _exact,
    "choice": _choice,
    "regex": _regex,
}


def make_verifier(name: str, params: Mapping[str, Any] | None = None) -> Verifier:
    """The verifier ``name`` (see the module docstring) with its ``params``.

    >>> make_verifier("choice").verify("I think (B) is right", "B"), make_verifier("exact").verify("Paris.", "paris")
    (True, True)
    >>> make_verifier("numbers")
    Traceback (most recent call last):
    ...
    selfimprove.runtime.tasks.verifiers.VerifierError: unknown verifier 'numbers': use numeric, integer, exact, choice, regex or 'package.module:function'
    """
    params = dict(params or {})
    if ":" in name:
        if params:
            raise VerifierError(f"verifier {name!r} takes no verifier_params")
        return _imported(name)
    maker = _MAKERS.get(name)
    if maker is None:
        raise VerifierError(
            f"unknown verifier {name!r}: use {', '.join(BUILTIN)} or 'package.module:function'"
        )
    try:
        return maker(**params)
    except TypeError as exc:
        raise VerifierError(f"verifier {name!r}: bad verifier_params {params}: {exc}") from None
