"""Malformed data files for the data task (``selfimprove.runtime.tasks.datafile``): pure, seeded.

Each case is a file (its name and bytes, or none for a file that is missing) and the task
parameters naming it, with what a clear refusal must say: the file's name, the row at fault (1-based,
as the loader counts rows) where one is, and a word of what is wrong. A case is made of a few valid
rows with one bad row at a seeded position, so the refusal must find the bad one.

>>> import random
>>> cases = generate(random.Random(1))
>>> sorted({c.kind for c in cases}) == sorted(KINDS)
True
>>> [c.content for c in generate(random.Random(1))] == [c.content for c in cases]
True
>>> bad = next(c for c in cases if c.kind == "not_json")
>>> bad.row is not None and bad.filename.endswith(".jsonl")
True
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

# A field longer than this many characters is refused (the loader's cap); the huge row is over it.
HUGE_CHARS = 2 * 1024 * 1024

KINDS = (
    "not_json",
    "not_object",
    "missing_prompt",
    "empty_prompt",
    "answer_list",
    "answer_object",
    "nan_answer",
    "inf_answer",
    "csv_nan_answer",
    "huge_row",
    "duplicate_id",
    "bad_utf8",
    "csv_bad_utf8",
    "empty_file",
    "blank_file",
    "missing_file",
    "csv_as_jsonl",
    "jsonl_as_csv",
    "ragged_csv",
    "unknown_verifier",
    "missing_verifier_module",
    "missing_verifier_function",
    "unknown_suffix",
)


@dataclass(frozen=True)
class DataCase:
    """One bad data file: ``content`` None means the file does not exist. ``expect`` are words the
    refusal must contain (besides the file's name, and ``row N`` when ``row`` is set)."""

    kind: str
    filename: str
    content: bytes | None
    params: dict[str, Any] = field(default_factory=dict)
    row: int | None = None
    expect: tuple[str, ...] = ()


def _row(rng: random.Random, i: int) -> dict[str, Any]:
    a, b = rng.randrange(100), rng.randrange(100)
    return {"id": f"q{i}", "question": f"What is {a} + {b}?", "answer": a + b}


def _jsonl(rows: list[Any]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def _csv(rows: list[dict[str, Any]]) -> bytes:
    lines = ["id,question,answer"] + [f'{r["id"]},"{r["question"]}",{r["answer"]}' for r in rows]
    return ("\n".join(lines) + "\n").encode()


PARAMS = {"prompt": "question", "answer": "answer", "id": "id", "verifier": "numeric"}


def _with_bad(rng: random.Random, bad: Any, n: int) -> tuple[list[Any], int]:
    """``n`` valid rows with ``bad`` put at a seeded position; returns the rows and its 1-based row."""
    rows: list[Any] = [_row(rng, i) for i in range(n)]
    at = rng.randrange(1, n)  # never first: the loader must read past good rows to find it
    rows.insert(at, bad)
    return rows, at + 1


def one(rng: random.Random, kind: str) -> DataCase:
    """The case ``kind`` (one of :data:`KINDS`)."""
    n = rng.randrange(4, 40)
    name = f"{kind}-{rng.getrandbits(32):08x}"
    jsonl, csv = f"{name}.jsonl", f"{name}.csv"
    good = _row(rng, 999)

    def bad_row(value: Any, expect: tuple[str, ...]) -> DataCase:
        rows, at = _with_bad(rng, value, n)
        return DataCase(kind, jsonl, _jsonl(rows), PARAMS, at, expect)

    if kind == "not_json":
        text = json.dumps(good)
        cut = rng.choice(
            [text[: rng.randrange(1, len(text))], "{'question': 'single quotes'}", "What is 2+2?"]
        )
        return bad_row(cut.encode(), ("JSON",))
    if kind == "not_object":
        return bad_row(json.dumps(rng.choice([[1, 2], "a string", 42, None, True])).encode(), ("object",))
    if kind == "missing_prompt":
        return bad_row({"id": good["id"], "answer": good["answer"]}, ("question",))
    if kind == "empty_prompt":
        return bad_row({**good, "question": rng.choice(["", "   ", "\n\t"])}, ("question", "empty"))
    if kind == "answer_list":
        return bad_row({**good, "answer": [good["answer"], 1]}, ("answer", "list"))
    if kind == "answer_object":
        return bad_row({**good, "answer": {"value": good["answer"]}}, ("answer", "object"))
    if kind in ("nan_answer", "inf_answer"):
        token = "NaN" if kind == "nan_answer" else rng.choice(["Infinity", "-Infinity"])
        line = json.dumps({**good, "answer": 0}).replace("0}", token + "}").encode()
        return bad_row(line, ("answer", "finite"))
    if kind == "csv_nan_answer":
        rows, at = _with_bad(rng, {**good, "answer": rng.choice(["nan", "inf", "-inf"])}, n)
        return DataCase(kind, csv, _csv(rows), PARAMS, at, ("answer",))  # "nan" reads as empty
    if kind == "huge_row":
        return bad_row(
            {**good, "question": "What is 7 + 8? " * (HUGE_CHARS // 15)}, ("question", "characters")
        )
    if kind == "duplicate_id":
        rows = [_row(rng, i) for i in range(n)]
        at = rng.randrange(1, n)
        rows.insert(at, {**_row(rng, 1000), "id": rows[rng.randrange(at)]["id"]})
        return DataCase(kind, jsonl, _jsonl(rows), PARAMS, at + 1, ("same id",))
    if kind in ("bad_utf8", "csv_bad_utf8"):
        invalid = rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\x80abc"])
        if kind == "bad_utf8":
            line = json.dumps({**good, "question": "What is @ + 1?"}).encode().replace(b"@", invalid)
            return bad_row(line, ("UTF-8",))
        rows, at = _with_bad(rng, {**good, "question": "What is @ + 1?"}, n)
        content = _csv(rows).replace(b"@", invalid)
        return DataCase(kind, csv, content, PARAMS, at, ("UTF-8",))
    if kind == "empty_file":
        return DataCase(kind, jsonl, b"", PARAMS, None, ("empty",))
    if kind == "blank_file":
        return DataCase(kind, jsonl, rng.choice([b"\n", b"\n\n  \n", b" "]), PARAMS, None, ("no rows",))
    if kind == "missing_file":
        return DataCase(kind, jsonl, None, PARAMS, None, ("no such",))
    if kind == "csv_as_jsonl":  # CSV text in a .jsonl file
        return DataCase(kind, jsonl, _csv([_row(rng, i) for i in range(n)]), PARAMS, 1, ("JSON",))
    if kind == "jsonl_as_csv":  # JSONL text in a .csv file
        return DataCase(kind, csv, _jsonl([_row(rng, i) for i in range(n)]), PARAMS, None, ("question",))
    if kind == "ragged_csv":
        rows, at = _with_bad(rng, good, n)
        lines = _csv(rows).decode().splitlines()
        lines[at] += ",extra,cells"
        return DataCase(kind, csv, ("\n".join(lines) + "\n").encode(), PARAMS, at, ("fields",))
    if kind.endswith("verifier") or kind.startswith("missing_verifier"):
        verifier = {
            "unknown_verifier": rng.choice(["numbers", "fuzzy", "Numeric"]),
            "missing_verifier_module": "no_such_package.checks:verify",
            "missing_verifier_function": rng.choice(["json:no_such_function", "os.path:no_such_check"]),
        }[kind]
        rows = [_row(rng, i) for i in range(n)]
        return DataCase(kind, jsonl, _jsonl(rows), {**PARAMS, "verifier": verifier}, None, ("verifier",))
    if kind == "unknown_suffix":
        return DataCase(
            kind, f"{name}.txt", _jsonl([_row(rng, i) for i in range(n)]), PARAMS, None, ("suffix",)
        )
    raise ValueError(f"unknown data-file fuzz kind {kind!r}")


def generate(rng: random.Random, per_kind: int = 1) -> list[DataCase]:
    """``per_kind`` cases of every kind in :data:`KINDS`."""
    return [one(rng, kind) for _ in range(per_kind) for kind in KINDS]
