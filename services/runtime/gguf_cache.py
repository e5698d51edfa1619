"""Convert a GGUF model once into a safetensors folder, keyed by the GGUF file's sha256.

Loading SmolLM2 from GGUF dequantizes every tensor (about 30 s); the safetensors copy loads in
seconds. The copy is written to a temporary folder next to its final place and renamed into it,
so concurrent processes never see a half-written cache: the first rename wins, the others discard
their copy.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from selfimprove.core.store import sha256_file_cached

log = logging.getLogger(__name__)


def cached_folder(gguf_path: Path, cache_dir: Path) -> Path:
    """Where the safetensors copy of ``gguf_path`` lives (it may not exist yet)."""
    return cache_dir / "models" / f"gguf-{sha256_file_cached(gguf_path)}"


def ensure_safetensors(gguf_path: Path, cache_dir: Path) -> Path:
    """Return a Hugging Face folder (config, safetensors, tokenizer) equivalent to ``gguf_path``.

    Converts on first use; later calls only hash the file (about 0.3 s for the 98 MB model).
    """
    final = cached_folder(gguf_path, cache_dir)
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        log.info("converting %s to safetensors in %s", gguf_path, final)
        model, tokenizer = load_gguf(gguf_path)
        _save(model, tokenizer, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_gguf(gguf_path: Path):
    """Load model and tokenizer straight from a GGUF file (slow: dequantizes to fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model, tokenizer


def _save(model, tokenizer, dest: Path) -> None:
    # The GGUF-loaded weights are plain fp32, but the gguf quantizer marks the model "not
    # serializable"; dropping the quantizer also leaves a clean config.json.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.config._name_or_path = "SmolLM2-135M-Instruct"
    model.save_pretrained(dest, safe_serialization=True)
    model.generation_config.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
