"""Selection parameters, read from ``SelectCommand.params_json`` (every key optional).

>>> SelectParams.from_json('{"band": [0.1, 0.9], "max_per_prompt": 1}').band
(0.1, 0.9)
>>> SelectParams.from_json('{"nope": 1}')
Traceback (most recent call last):
...
ValueError: unknown selection parameters ['nope']
>>> SelectParams.from_json('{"worked_repeat": {"sub2": 0}}')
Traceback (most recent call last):
...
ValueError: selection parameter worked_repeat: {'sub2': 0} must map categories to whole numbers of at least 1
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SelectParams:
    agreement_threshold: float = 0.5  # label-free: least majority share for a pseudo-label
    band: tuple[float, float] = (0.0, 1.0)  # keep prompts with low < rate < high
    max_per_prompt: int = 2  # distinct kept responses per prompt
    prefer_short: bool = False  # keep a prompt's shortest correct responses (else sampling order)
    max_tokens: int = 256  # longest kept response, in tokens
    max_chars: int = 2000
    near_duplicate: float = 0.85  # MinHash Jaccard above which two responses of a prompt are one
    prompt_duplicate: float = 0.95  # ... and two prompts are one
    num_perm: int = 64
    diversity_threshold: float = 0.985  # cosine above which an item repeats a kept one
    embed: bool = True
    category_cap: int | None = None  # prompts per category; None: balance_ratio x the mean
    balance_ratio: float = 2.0
    pairs_per_prompt: int = 2
    # category -> times each kept worked reply of it is trained (once when absent): a form the model
    # is still taking up learns from several passes over few examples (README, "turns round first")
    worked_repeat: Mapping[str, int] = field(default_factory=dict)
    # verified: a worked reply keeps a prompt every sample already answered (false: the band drops
    # it like any other, for shorter trainings; on in the demo, where such rows hold what the model
    # has learned: README, "Mastered prompts left out")
    worked_mastered: bool = True

    @classmethod
    def from_json(cls, text: str) -> SelectParams:
        raw = json.loads(text or "{}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown selection parameters {unknown}")
        if "band" in raw:
            raw["band"] = tuple(float(x) for x in raw["band"])
        repeat = raw.get("worked_repeat", {})
        if not isinstance(repeat, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in repeat.values()
        ):
            raise ValueError(
                f"selection parameter worked_repeat: {repeat!r} must map categories to whole numbers of at least 1"
            )
        return cls(**raw)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
