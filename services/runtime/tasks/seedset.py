"""The seed-set format for self-instruct tasks: JSONL, one example per line.

Each line is a JSON object::

    {"instruction": "Write a haiku about autumn.", "input": "", "output": "...",
     "category": "poetry", "answer": null}

- ``instruction`` (string, required): the task, as the user would ask it.
- ``input`` (string, optional): extra context appended to the instruction after a blank line.
- ``output`` (string, optional): an example response, used only as an in-context demonstration.
- ``category`` (string, optional, default ``"general"``): used for balancing and reports.
- ``answer`` (string or null, optional): a reference answer an exact-match verifier can check.

Blank lines and lines starting with ``#`` are skipped. A malformed line raises ``ValueError``
naming the file and line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SeedExample:
    instruction: str
    input: str = ""
    output: str | None = None
    category: str = "general"
    answer: str | None = None

    @property
    def prompt(self) -> str:
        """The user message: the instruction, then the input after a blank line when there is one."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


def parse_seed_line(line: str) -> SeedExample:
    """One seed example from a JSON line (see the module docstring)."""
    obj = json.loads(line)
    if not isinstance(obj, dict) or not isinstance(obj.get("instruction"), str) or not obj["instruction"]:
        raise ValueError("a seed example needs a non-empty string 'instruction'")
    unknown = set(obj) - {"instruction", "input", "output", "category", "answer"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    answer = obj.get("answer")
    return SeedExample(
        instruction=obj["instruction"],
        input=obj.get("input") or "",
        output=obj.get("output"),
        category=obj.get("category") or "general",
        answer=None if answer is None else str(answer),
    )


def load_seed_set(path: Path) -> list[SeedExample]:
    """Every example of a seed-set JSONL file."""
    return parse_seed_lines(Path(path).read_text(), path)


def parse_seed_lines(text: str, where: object = "seed set") -> list[SeedExample]:
    """Every example of a seed set's text; an error names ``where`` (the file) and the line.

    >>> parse_seed_lines('# two\\n{"instruction": "A?"}\\n\\n{"instruction": "B?", "answer": 3}')[1].answer
    '3'
    >>> parse_seed_lines('{"instruction": "A?"}\\n{"task": "B?"}', "s.jsonl")
    Traceback (most recent call last):
    ...
    ValueError: s.jsonl:2: a seed example needs a non-empty string 'instruction'
    """
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            out.append(parse_seed_line(line))
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where}:{number}: {exc}") from None
    return out
