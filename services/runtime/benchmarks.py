"""The GPT-3 arithmetic benchmark: loading, the fixed scoring rule, and decontamination keys.

Evaluation only: never train on it, generate prompts from it, or tune on it. The data lives outside
the repository, by default in ``../shared/benchmarks/gpt3-arithmetic/`` next to the repo root,
overridden by ``SELFIMPROVE_BENCHMARKS_DIR`` or a CLI flag.

Scoring, fixed for every reported figure: ``context.strip()`` is the user message in the model's
chat template; greedy decoding; the answer is the last signed integer of the reply; exact match with
``completion.strip()``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from selfimprove.runtime.extract import last_integer
from selfimprove.runtime.tasks.arithmetic import Key, canonical_key

GPT3_SETS = (
    "two_digit_addition",
    "two_digit_subtraction",
    "three_digit_addition",
    "three_digit_subtraction",
    "two_digit_multiplication",
    "single_digit_three_ops",
)
ENV_DIR = "SELFIMPROVE_BENCHMARKS_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_WORDS = {"plus": "+", "minus": "-", "times": "*"}


class BenchmarkNotFoundError(FileNotFoundError):
    """The benchmark files are not where the configuration says."""


@dataclass(frozen=True)
class BenchItem:
    set_name: str
    index: int
    context: str
    completion: str

    @property
    def prompt(self) -> str:
        """The user message: the context, stripped."""
        return self.context.strip()

    @property
    def answer(self) -> str:
        return self.completion.strip()

    @property
    def key(self) -> Key:
        """``(operator, operands)`` of the problem, as arithmetic tasks key theirs."""
        return problem_key(self.context)


def default_dir() -> Path:
    """Where the GPT-3 sets are: ``$SELFIMPROVE_BENCHMARKS_DIR`` or ``../shared/benchmarks/gpt3-arithmetic``."""
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else _REPO_ROOT.parent / "shared" / "benchmarks" / "gpt3-arithmetic"


def resolve_sets(benchmark: str = "gpt3", directory: Path | None = None) -> dict[str, Path]:
    """Files to evaluate: ``"gpt3"`` (all six), one set name, or a JSONL path; name -> path."""
    if benchmark.endswith(".jsonl") or os.sep in benchmark:
        path = Path(benchmark).expanduser()
        if not path.is_file():
            raise BenchmarkNotFoundError(f"benchmark file {path} does not exist")
        return {path.stem: path}
    folder = directory or default_dir()
    names = GPT3_SETS if benchmark == "gpt3" else (benchmark,)
    if benchmark != "gpt3" and benchmark not in GPT3_SETS:
        raise BenchmarkNotFoundError(
            f"unknown benchmark {benchmark!r}: use 'gpt3', one of {', '.join(GPT3_SETS)}, or a .jsonl path"
        )
    paths = {name: folder / f"{name}.jsonl" for name in names}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise BenchmarkNotFoundError(
            f"GPT-3 arithmetic files missing: {', '.join(missing)}; set {ENV_DIR} or --benchmarks-dir"
        )
    return paths


def parse_lines(set_name: str, lines: list[str]) -> list[BenchItem]:
    """Items from JSONL lines with ``context`` and ``completion`` fields."""
    items = []
    for index, line in enumerate(x for x in lines if x.strip()):
        obj = json.loads(line)
        if not isinstance(obj.get("context"), str) or not isinstance(obj.get("completion"), str):
            raise ValueError(f"{set_name}: line {index + 1} needs string fields 'context' and 'completion'")
        items.append(BenchItem(set_name, index, obj["context"], obj["completion"]))
    return items


def load_set(path: Path, limit: int | None = None) -> list[BenchItem]:
    """The first ``limit`` items (all when ``None``) of one JSONL file."""
    items = parse_lines(path.stem, Path(path).read_text().splitlines())
    return items if limit is None else items[:limit]


def problem_key(context: str) -> Key:
    """Canonical key of a benchmark question.

    >>> problem_key("\\n\\nQ: What is 98 plus 45?\\n\\nA:")
    ('+', (98, 45))
    >>> problem_key("Q: What is (4 - 7) - 3?\\n\\nA:")
    ('(_-_)-_', (4, 7, 3))
    """
    m = re.search(r"What is (.+?)\?", context)
    if not m:
        raise ValueError(f"not a GPT-3 arithmetic question: {context!r}")
    expr = re.sub(r"\b(plus|minus|times)\b", lambda w: _WORDS[w.group(1)], m.group(1))
    return canonical_key(expr)


def score(reply: str, item: BenchItem) -> bool:
    """Exact match of the reply's last signed integer with the reference.

    >>> score("So 98 + 45 = 143.", BenchItem("s", 0, "Q: What is 98 plus 45?", " 143"))
    True
    """
    value = last_integer(reply)
    return value is not None and str(value) == item.answer


def decontamination_keys(directory: Path | None = None) -> set[Key]:
    """Keys of every problem in the six GPT-3 sets, for selection to drop from training data."""
    return {item.key for path in resolve_sets("gpt3", directory).values() for item in load_set(path)}
