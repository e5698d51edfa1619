"""Corrupt Hugging Face model folders for the fuzz suite: which damage to do, seeded and pure
(:func:`generate`), and the one function that does it to a copy of a good folder (:func:`corrupt`).

A case names the damage and what a clear refusal must say besides the folder's name: the file at
fault or the word for what is wrong.

>>> import random
>>> cases = generate(random.Random(1))
>>> [c.kind for c in cases] == list(KINDS)
True
>>> generate(random.Random(1)) == cases
True
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

KINDS = (
    "missing_config",
    "config_not_json",
    "config_not_object",
    "unknown_model_type",
    "missing_model_type",
    "missing_weights",
    "truncated_weights",
    "garbage_weights",
    "wrong_shapes",
    "missing_tokenizer",
    "tokenizer_not_json",
    "no_chat_template",
    "bad_generation_config",
    "folder_is_file",
    "empty_folder",
    "missing_folder",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
)


@dataclass(frozen=True)
class ModelCase:
    """``kind`` of damage; ``fraction`` how much of the weights file a truncation keeps, ``junk`` the
    bytes written where a file is garbled; ``expect`` a word the refusal must contain."""

    kind: str
    fraction: float = 0.0
    junk: bytes = b""
    expect: str = ""


EXPECT = {
    "missing_config": "config.json",
    "config_not_json": "config.json",
    "config_not_object": "config.json",
    "unknown_model_type": "model_type",
    "missing_model_type": "model_type",
    "missing_weights": "weights",
    "truncated_weights": "weights",
    "garbage_weights": "weights",
    "wrong_shapes": "weights",
    "missing_tokenizer": "tokenizer",
    "tokenizer_not_json": "tokenizer",
    "no_chat_template": "chat template",
    "bad_generation_config": "eos_token_id",
    "folder_is_file": "not a folder",
    "empty_folder": "config.json",
    "missing_folder": "config.json",
}


def one(rng: random.Random, kind: str) -> ModelCase:
    junk = rng.choice([b"{", b"", b"not json at all", rng.randbytes(64), b'{"model_type": '])
    return ModelCase(kind, round(rng.uniform(0.05, 0.95), 3), junk, EXPECT[kind])


def generate(rng: random.Random) -> list[ModelCase]:
    """One case of every kind in :data:`KINDS`."""
    return [one(rng, kind) for kind in KINDS]


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def corrupt(case: ModelCase, good: Path, dest: Path) -> Path:
    """Write ``good`` damaged as ``case`` says at ``dest`` (which must not exist) and return it."""
    if case.kind == "missing_folder":
        return dest
    if case.kind == "folder_is_file":
        dest.write_bytes(b"this is a file, not a model folder\n")
        return dest
    if case.kind == "empty_folder":
        dest.mkdir()
        return dest
    shutil.copytree(good, dest)
    weights = sorted(dest.glob("*.safetensors"))
    if case.kind == "missing_config":
        (dest / "config.json").unlink()
    elif case.kind == "config_not_json":
        (dest / "config.json").write_bytes(case.junk)
    elif case.kind == "config_not_object":
        (dest / "config.json").write_text(json.dumps(["model_type", "llama"]))
    elif case.kind == "unknown_model_type":
        _edit_json(dest / "config.json", model_type="fuzz-no-such-architecture")
    elif case.kind == "missing_model_type":
        _edit_json(dest / "config.json", model_type=None, architectures=None)
    elif case.kind == "missing_weights":
        for w in weights:
            w.unlink()
    elif case.kind == "truncated_weights":
        for w in weights:
            data = w.read_bytes()
            w.write_bytes(data[: int(len(data) * case.fraction)])
    elif case.kind == "garbage_weights":
        for w in weights:
            w.write_bytes(case.junk * 4 + b"\x00" * 64)
    elif case.kind == "wrong_shapes":
        config = json.loads((dest / "config.json").read_text())
        _edit_json(dest / "config.json", hidden_size=config["hidden_size"] * 2)
    elif case.kind == "missing_tokenizer":
        for name in TOKENIZER_FILES:
            (dest / name).unlink(missing_ok=True)
    elif case.kind == "tokenizer_not_json":
        (dest / "tokenizer.json").write_bytes(case.junk)
        (dest / "tokenizer_config.json").write_bytes(case.junk)
    elif case.kind == "no_chat_template":
        (dest / "chat_template.jinja").unlink(missing_ok=True)
        _edit_json(dest / "tokenizer_config.json", chat_template=None)
    elif case.kind == "bad_generation_config":
        _edit_json(dest / "generation_config.json", eos_token_id="end")
    else:
        raise ValueError(f"unknown model-folder fuzz kind {case.kind!r}")
    return dest
