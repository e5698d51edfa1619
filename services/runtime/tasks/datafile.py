"""A task read from a user's data file, with no code: the built-in task ``data``.

The file is JSONL, CSV or Parquet, or a folder saved by ``datasets``' ``save_to_disk``; the
``datasets`` library reads it. A run config names the fields::

    task:
      name: data
      params:
        path: /data/svamp_train.jsonl
        prompt: question            # the field holding the question
        answer: answer              # optional: without it the task runs label-free only
        verifier: numeric           # numeric | exact | choice | regex | package.module:function
        template: "{question}"      # optional: the prompt built from the row's fields

Train and dev are split by a salted hash of each row's id (the ``id`` field, else the prompt), so
they are disjoint and a row stays on its side when the file grows. Every problem of the file is
checked when the task loads (the run config's validation), so a bad file fails with the file, row
and field named before any compute is spent. :class:`DataSource` is the same description for an
evaluation file (``evaluation.test_sets``), read whole.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfimprove.runtime.tasks.base import Item, Split, Task, TooFewProblems
from selfimprove.runtime.tasks.verifiers import Verifier, VerifierError, make_verifier, normalise

Format = Literal["auto", "json", "csv", "parquet", "arrow"]
SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
_FIELD = re.compile(r"{([^{}:!]+)[^{}]*}")
# A longer field is refused: no prompt this long fits a model served here, and no answer is this long.
MAX_FIELD_CHARS = 100_000


class DataFileError(ValueError):
    """A data file that cannot serve as a task; the message names the file, and the row and field
    where one is at fault."""


class DataSource(BaseModel):
    """Where a task's (or an evaluation set's) problems are, and how they are judged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="JSONL, CSV or Parquet file, or a datasets save_to_disk folder.")
    prompt: str = Field("question", description="The field holding the question.")
    answer: str | None = Field(None, description="The field holding the reference answer, if any.")
    id: str | None = Field(None, description="A field with a stable row id; default: the prompt's hash.")
    category: str | None = Field(None, description="A field to balance and report by.")
    template: str | None = Field(
        None, description="The prompt made from the row's fields, e.g. '{question} Answer with a number.'"
    )
    verifier: str = Field("exact", description="numeric, exact, choice, regex or package.module:function.")
    verifier_params: dict[str, Any] = Field(default_factory=dict, description="e.g. {tolerance: 0.01}")
    format: Format = Field("auto", description="auto: from the file suffix (a folder: save_to_disk).")

    def make_verifier(self) -> Verifier:
        return make_verifier(self.verifier, self.verifier_params)


@dataclass(frozen=True)
class Problem:
    """One row of a data file: its id, the prompt as the model sees it, the reference answer (or
    ``None``), its category and its 1-based row number (for messages)."""

    id: str
    prompt: str
    answer: str | None
    category: str
    row: int


def text_key(prompt: str) -> tuple[str, tuple[str]]:
    """The decontamination key of a free-text problem: its normalised text (the same key in
    selection, acquisition and the evaluation sets).

    >>> text_key("  How many   apples? ")
    ('text', ('how many apples',))
    """
    return ("text", (normalise(prompt),))


def _format(source: DataSource, path: Path) -> str:
    if source.format != "auto":
        return source.format
    if path.is_dir():
        return "disk"
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataFileError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; use .jsonl, .csv, .parquet or "
            "set format:"
        )
    return fmt


def _text_error(path: Path, fmt: str) -> str | None:
    """The first line of a text file (JSONL or CSV) that is not UTF-8, named as the row it holds (a
    CSV's first line is its header), or a file of blank lines: ``datasets`` fails on both without
    saying where or why."""
    blank = True
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                where = f"row {number}" if fmt == "json" else f"row {number - 1} (line {number})"
                return f"{where}: not valid UTF-8 (byte {line[exc.start]:#04x} at column {exc.start + 1})"
            blank = blank and not line.strip()
    return "the file has no rows (only blank lines)" if blank else None


def _kind(value: Any) -> str:
    return (
        "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__
    )


def _json_row_error(path: Path) -> str | None:
    """The first unparseable line of a JSONL file, or the first whose field changes type from the row
    before (the two ways ``datasets`` fails on a JSONL file without saying where)."""
    kinds: dict[str, tuple[str, int]] = {}
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                return f"row {number}: not valid JSON ({exc.msg} at column {exc.colno})"
            if not isinstance(obj, dict):
                return f"row {number}: a JSON object is needed, got {type(obj).__name__}"
            for key, value in obj.items():
                if value is None:
                    continue
                first = kinds.setdefault(key, (_kind(value), number))
                if first[0] != _kind(value):
                    return f"row {number}: field {key!r} is a {_kind(value)}, row {first[1]} has a {first[0]}"
    return None


def _cause(exc: BaseException) -> BaseException:
    """The innermost cause of ``exc`` (``datasets`` wraps the parser's error that names the line)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def read_rows(source: DataSource) -> list[dict[str, Any]]:
    """Every row of the file, as dicts, read by ``datasets``."""
    import datasets

    path = Path(source.path).expanduser()
    if not path.exists():
        raise DataFileError(f"{path}: no such data file")
    fmt = _format(source, path)
    datasets.disable_progress_bars()
    try:
        if fmt == "disk":
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if len(loaded) != 1:
                    raise DataFileError(
                        f"{path}: a DatasetDict with splits {sorted(loaded)}; point at one split's folder"
                    )
                loaded = next(iter(loaded.values()))
        else:
            if path.is_file() and path.stat().st_size == 0:
                raise DataFileError(f"{path}: the file is empty")
            bad = _text_error(path, fmt) if fmt in ("json", "csv") and path.is_file() else None
            if bad:
                raise DataFileError(f"{path}: {bad}")
            loaded = datasets.load_dataset(fmt, data_files=str(path), split="train")
        rows = loaded.to_list()
    except DataFileError:
        raise
    except Exception as exc:  # datasets wraps parser errors in several types
        where = _json_row_error(path) if fmt == "json" and path.is_file() else None
        cause = _cause(exc)
        raise DataFileError(
            f"{path}: {where or f'cannot read it as {fmt}: {type(cause).__name__}: {cause}'.strip()}"
        ) from None
    if not rows:
        raise DataFileError(f"{path}: the file has no rows")
    return rows


def _bad_value(value: Any) -> str | None:
    """What is wrong with a field's value, or None: a field is text or a finite number (or a
    bool), present, not blank and at most :data:`MAX_FIELD_CHARS` characters.

    >>> _bad_value("12"), _bad_value(float("nan")), _bad_value([1]), _bad_value("  ")
    (None, 'is nan, not a finite number', 'is a list; text or a number is needed', 'is empty')
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return "is empty"
    if isinstance(value, float) and not math.isfinite(value):
        return f"is {value}, not a finite number"
    if not isinstance(value, str | int | float):
        kind = "an object" if isinstance(value, dict) else f"a {type(value).__name__}"
        return f"is {kind}; text or a number is needed"
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        return f"is {len(value):,} characters, over the limit of {MAX_FIELD_CHARS:,}"
    return None


def _template_fields(template: str) -> list[str]:
    return [m.split(".")[0].split("[")[0] for m in _FIELD.findall(template)]


def problems(source: DataSource) -> list[Problem]:
    """Every problem of ``source``, checked: each row has a non-empty prompt (and answer, when the
    source names an answer field), the template's fields, and an id no other row has."""
    try:
        source.make_verifier()
    except VerifierError as exc:
        raise DataFileError(f"{source.path}: {exc}") from None
    rows = read_rows(source)
    path = Path(source.path).expanduser()
    needed = [source.prompt] if source.template is None else _template_fields(source.template)
    if source.answer:
        needed.append(source.answer)
    needed += [f for f in (source.id, source.category) if f]
    columns = set(rows[0])
    for field in needed:
        if field not in columns:
            raise DataFileError(f"{path}: no field {field!r} (the rows have {', '.join(sorted(columns))})")
    out: list[Problem] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        for field in needed:
            bad = _bad_value(row.get(field))
            if bad:
                raise DataFileError(f"{path}: row {number}: field {field!r} {bad}")
        if source.template is None:
            prompt = str(row[source.prompt]).strip()
        else:
            try:
                prompt = source.template.format(**row).strip()
            except (KeyError, IndexError, ValueError) as exc:
                raise DataFileError(f"{path}: row {number}: the template does not fill: {exc!r}") from None
        ident = str(row[source.id]) if source.id else hashlib.sha256(prompt.encode()).hexdigest()[:16]
        if ident in seen:
            what = f"id {ident!r}" if source.id else "prompt"
            raise DataFileError(f"{path}: row {number}: the same {what} as row {seen[ident]}")
        seen[ident] = number
        answer = str(row[source.answer]).strip() if source.answer else None
        category = str(row[source.category]) if source.category else "all"
        out.append(Problem(ident, prompt, answer, category, number))
    return out


@lru_cache(maxsize=8)
def _cached(source_json: str, mtime: float) -> tuple[Problem, ...]:
    return tuple(problems(DataSource.model_validate_json(source_json)))


def load_problems(source: DataSource) -> tuple[Problem, ...]:
    """:func:`problems`, read once per process while the file is unchanged."""
    path = Path(source.path).expanduser()
    mtime = path.stat().st_mtime if path.exists() else -1.0
    return _cached(source.model_dump_json(), mtime)


def in_dev(ident: str, dev_share: float) -> bool:
    """Whether a row belongs to the dev split: a hash of its id salted with ``dev:``, so a file
    already split by an unsalted hash of the same ids (as public test splits often are) still
    splits evenly.

    >>> sum(in_dev(str(i), 0.1) for i in range(10_000))
    1017
    """
    digest = hashlib.sha256(f"dev:{ident}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < dev_share


def _order(ident: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{ident}".encode()).digest()


class DataTask(Task):
    """The problems of a data file (see the module docstring), split by hash into train and dev."""

    name = "data"

    def __init__(self, dev_share: float = 0.1, **source: Any) -> None:
        try:
            self.source = DataSource.model_validate(source)
        except ValueError as exc:
            raise DataFileError(f"task data: {exc}") from None
        if not 0 < dev_share < 1:
            raise DataFileError(f"task data: dev_share must be between 0 and 1, got {dev_share}")
        self.dev_share = dev_share
        try:
            self.verifier = self.source.make_verifier()
        except VerifierError as exc:
            raise DataFileError(f"{self.source.path}: {exc}") from None
        rows = load_problems(self.source)
        self._split: dict[str, list[Problem]] = {"train": [], "dev": []}
        for p in rows:
            self._split["dev" if in_dev(p.id, dev_share) else "train"].append(p)
        for split, found in self._split.items():
            if not found:
                raise DataFileError(
                    f"{self.source.path}: the {split} split is empty ({len(rows)} rows, dev_share {dev_share})"
                )
        self._categories = tuple(sorted({p.category for p in rows}))

    @property
    def has_answers(self) -> bool:
        return self.source.answer is not None

    @property
    def categories(self) -> tuple[str, ...]:
        return self._categories

    def item(self, p: Problem) -> Item:
        answer = self.verifier.canonical(p.answer) if p.answer is not None else None
        return Item(
            id=p.id,
            prompt=p.prompt,
            category=p.category,
            difficulty=1,
            answer=answer,
            meta={"key": _as_lists(text_key(p.prompt)), "row": p.row},
        )

    def items(self, split: Split, n: int, seed: int = 0, difficulty: int | None = None) -> list[Item]:
        if split not in self._split:  # a data file has no templates, so no held-out phrasings
            raise ValueError(f"{self.source.path}: a data task has no {split!r} split (it has train, dev)")
        pool = sorted(self._split[split], key=lambda p: _order(p.id, seed))
        chosen = [self.item(p) for p in pool[:n]]
        if len(pool) < n:
            raise TooFewProblems(
                f"{self.source.path}: the {split} split has {len(pool)} problems, fewer than {n}", chosen
            )
        return chosen

    def extract(self, reply: str) -> str | None:
        return self.verifier.extract(reply)

    def verify(self, item: Item, reply: str) -> bool | None:
        if item.answer is None:
            return None
        return self.verifier.verify(reply, item.answer)


def _as_lists(key: tuple) -> list:
    return [key[0], list(key[1])]


def data_items(source: DataSource | Mapping[str, Any]) -> list[Item]:
    """Every problem of an evaluation file as items, in file order (ids, prompts, answers)."""
    src = source if isinstance(source, DataSource) else DataSource.model_validate(source)
    verifier = src.make_verifier()
    return [
        Item(
            id=p.id,
            prompt=p.prompt,
            category=p.category,
            difficulty=1,
            answer=verifier.canonical(p.answer) if p.answer is not None else None,
            meta={"key": _as_lists(text_key(p.prompt)), "row": p.row},
        )
        for p in load_problems(src)
    ]
