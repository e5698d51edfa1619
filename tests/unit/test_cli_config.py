"""``selfimprove config schema`` and ``config check``: the schema printed is the one in docs and accepts
the shipped configs; a check passes a good file with a summary and names every error of a bad one."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from selfimprove.cli.configcmd import schema_text
from selfimprove.cli.main import app

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS_SCHEMA = ROOT / "docs" / "run-config.schema.json"


def _config(*args: str):
    return CliRunner().invoke(app, ["config", *args], env={"COLUMNS": "400"})


def test_docs_schema_is_up_to_date():
    assert DOCS_SCHEMA.read_text() == schema_text(), (
        "docs/run-config.schema.json is stale: selfimprove config schema > docs/run-config.schema.json"
    )


def test_schema_command_prints_the_schema():
    result = _config("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["title"]
    hparams = schema["$defs"]["Hparams"]["properties"]
    assert {"lr", "learning_rate", "lora_r", "r"} <= set(hparams)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_schema_accepts_the_shipped_configs(path):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(yaml.safe_load(path.read_text()) or {}, json.loads(schema_text()))


def test_schema_refuses_an_unknown_field():
    jsonschema = pytest.importorskip("jsonschema")
    with pytest.raises(jsonschema.ValidationError, match="lrr"):
        jsonschema.validate({"training": {"hparams": {"lrr": 1}}}, json.loads(schema_text()))


def test_check_passes_a_good_config_with_a_summary(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("run_id: r1\nlabel_mode: label-free\nbudget: {iterations: 2}\n")
    result = _config("check", str(path))
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert "\n" not in line
    for words in ("ok:", "run id r1", "task arithmetic", "label mode label-free", "2 iterations"):
        assert words in line


def test_check_names_every_error(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("budget: {iterations: 0}\ntraining: {hparams: {lrr: 1, lr: 1, learning_rate: 2}}\n")
    result = _config("check", str(path))
    assert result.exit_code == 2
    assert "budget.iterations" in result.stderr and "training.hparams" in result.stderr
    assert result.stdout == ""


def test_check_reads_the_data_files_as_run_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text("task: {name: data, params: {path: missing.jsonl}}\n")
    result = _config("check", str(path))
    assert result.exit_code == 2
    assert str(tmp_path / "missing.jsonl") in result.stderr


def test_check_refuses_a_missing_file(tmp_path):
    result = _config("check", str(tmp_path / "none.yaml"))
    assert result.exit_code == 2 and "cannot read run config" in result.stderr
