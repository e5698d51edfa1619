"""``selfimprove export`` folders load with plain transformers and PEFT, in a fresh process that imports
no selfimprove and has no network: the adapter onto the local base, the merged model through ``pipeline``, and
both reply alike. The adapter is a random LoRA on the real default base (the run's lookup is faked:
what is under test is the folder written)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from selfimprove.cli import export
from selfimprove.cli.main import app
from selfimprove.runtime.models import DEFAULT_BASE

pytestmark = pytest.mark.integration

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MESSAGES = [{"role": "user", "content": "Name a colour."}]
NEW_TOKENS = 8

LOAD_PEFT = """
import json, sys
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base_dir, folder, messages = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(base_dir)
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), folder)
enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**enc, max_new_tokens=int(sys.argv[4]), do_sample=False)
print(json.dumps(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)))
"""

LOAD_MERGED = """
import json, sys
from transformers import AutoModelForCausalLM, pipeline
folder, messages = sys.argv[1], json.loads(sys.argv[2])
assert type(AutoModelForCausalLM.from_pretrained(folder)).__name__ == "LlamaForCausalLM"
chat = pipeline("text-generation", model=folder)
reply = chat(messages, max_new_tokens=int(sys.argv[3]), do_sample=False)[0]["generated_text"][-1]
assert reply["role"] == "assistant", reply
print(json.dumps(reply["content"]))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(adapter folder, the base's greedy reply)``: a LoRA on the default base with random B weights
    (not the zero-initialized ones), so it changes the reply."""
    import torch
    from peft import LoraConfig, get_peft_model

    from selfimprove.runtime.models import load_model

    model, tokenizer = load_model(DEFAULT_BASE)
    enc = tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False)
    base_reply = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    torch.manual_seed(0)
    targets = ["q_proj", "v_proj", "up_proj", "down_proj"]
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))
    for name, weight in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.1)
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    lora.save_pretrained(folder)
    return folder, base_reply


@pytest.fixture
def run_is(monkeypatch):
    """Make ``export`` see a run whose model is ``(base, adapter, iteration)``."""

    def set_model(base, adapter_folder, iteration):
        monkeypatch.setattr(export, "run_model", lambda ref, address: (base, adapter_folder, iteration))

    return set_model


def _fresh_python(script: str, *args: str, cwd) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFIMPROVE_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH="")
    done = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _export(*args: str):
    return CliRunner().invoke(app, ["export", *args], env={"COLUMNS": "400"})


def test_peft_and_merged_exports_load_without_selfimprove(trained, run_is, tmp_path):
    from selfimprove.runtime.models import resolve_base

    adapter, base_reply = trained

    run_is(DEFAULT_BASE, adapter, 2)
    peft_dir, merged_dir = tmp_path / "peft", tmp_path / "merged"
    for fmt, dest in (("peft", peft_dir), ("merged", merged_dir)):
        result = _export("r1", "--format", fmt, "--out", str(dest))
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == str(dest)

    config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == HUB_ID
    card = (peft_dir / "README.md").read_text()
    for words in ("`r1`", "iteration 2", "Q4_1", HUB_ID, "PeftModel.from_pretrained"):
        assert words in card
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert (merged_dir / name).is_file(), name
    assert "pipeline(" in (merged_dir / "README.md").read_text()

    messages = json.dumps(MESSAGES)
    base_dir = str(resolve_base(DEFAULT_BASE))
    n = str(NEW_TOKENS)
    via_peft = _fresh_python(LOAD_PEFT, base_dir, str(peft_dir), messages, n, cwd=tmp_path)
    via_pipeline = _fresh_python(LOAD_MERGED, str(merged_dir), messages, n, cwd=tmp_path)
    assert via_peft.strip() == via_pipeline.strip()
    assert via_peft.strip() != base_reply.strip()  # the adapter's weights are in both


def test_export_refusals_name_the_way_out(trained, run_is, tmp_path):
    adapter, _ = trained
    run_is(DEFAULT_BASE, None, 0)
    result = _export("r1", "--format", "peft", "--out", str(tmp_path / "a"))
    assert result.exit_code == 2 and "use --format merged" in result.output
    run_is(DEFAULT_BASE, adapter, 1)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    result = _export("r1", "--format", "peft", "--out", str(full))
    assert result.exit_code == 2 and "refusing to overwrite" in result.output
    result = _export("r1", "--format", "gguf")
    assert result.exit_code == 2 and "choose peft or merged" in result.output
