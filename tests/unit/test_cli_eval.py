"""``selfimprove eval --task``: each bad input is refused naming the option, before any model loads;
``--against`` reports the paired difference per set (over a fake engine)."""

import json

import pytest
from typer.testing import CliRunner

from selfimprove.cli.main import app
from selfimprove.runtime.engine import PromptResult, Sample, to_messages

pytestmark = pytest.mark.unit

ROWS = [
    {"id": "a", "question": "Tom has 3 apples and buys 4. How many?", "answer": "7"},
    {"id": "b", "question": "Ann has 9 pens and loses 2. How many?", "answer": "7"},
    {"id": "c", "question": "What is 6 times 7?", "answer": "42"},
]


def _eval(*args: str):
    return CliRunner().invoke(app, ["eval", *args], env={"COLUMNS": "400"})


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "word.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.mark.parametrize(
    ("make_args", "words"),
    [
        (
            lambda p: ["--task", str(p.parent / "missing.jsonl")],
            ["--task", "no such run config or data file"],
        ),
        (lambda p: ["--task", str(p), "--answer-field", "solution"], ["--task", "no field 'solution'"]),
        (lambda p: ["--task", str(p), "--benchmark", "gpt3"], ["--task", "not both"]),
        (lambda p: ["--task", str(p), "--verifier", "numbers"], ["--verifier", "unknown verifier 'numbers'"]),
        (lambda p: ["--task", str(p), "--verifier-param", "tolerance"], ["--task", "use KEY=VALUE"]),
        (lambda p: ["--verifier", "numeric"], ["--verifier", "use it with --task FILE"]),
        (lambda p: ["--benchmark", "four_digit_division"], ["--benchmark", "unknown benchmark"]),
    ],
)
def test_bad_task_input_is_refused_naming_the_option(data_file, make_args, words):
    done = _eval(*make_args(data_file))
    assert done.exit_code == 2, done.output
    for word in words:
        assert word in done.output


def test_a_run_config_without_test_sets_is_refused_naming_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("task: {name: arithmetic}\n")
    done = _eval("--task", str(config))
    assert done.exit_code == 2, done.output
    assert "--task" in done.output and "declares no evaluation.test_sets" in done.output
    assert "run.yaml" in done.output


class ScriptedEngine:
    """The default model gets the first row right; the other model gets every row right."""

    def __init__(self, good: bool):
        self.good = good

    def generate(self, request):
        out = []
        for prompt in request.prompts:
            text = to_messages(prompt)[-1]["content"]
            row = next(r for r in ROWS if r["question"] == text)
            reply = row["answer"] if self.good or row["id"] == "a" else "0"
            out.append(PromptResult((Sample(f"So {reply}.", 3, "stop"),), prompt_tokens=5))
        return out


def test_against_reports_the_paired_difference_per_set(data_file, tmp_path, monkeypatch):
    import selfimprove.runtime.engine as engine_module

    other = tmp_path / "other-model"
    other.mkdir()
    monkeypatch.setattr(
        engine_module, "make_engine", lambda backend, base, adapters, **_: ScriptedEngine(base == str(other))
    )
    done = _eval("--task", str(data_file), "--verifier", "numeric", "--against", str(other), "--json")
    assert done.exit_code == 0, done.output
    out = json.loads(done.output)
    [row] = out["sets"]
    assert out["against"]["model"] == str(other) and out["task"] == str(data_file)
    assert row["set"] == "word" and row["n"] == 3 and row["correct"] == 1 and row["against"]["correct"] == 3
    paired = row["paired"]
    assert paired["delta"] == round(-2 / 3, 4) and paired["against_only"] == 2 and paired["model_only"] == 0
    assert paired["ci95"][0] <= paired["delta"] <= paired["ci95"][1] and paired["p_value"] == 0.5


def test_report_evaluates_the_declared_sets_and_pairs_final_with_base(data_file, monkeypatch):
    import selfimprove.runtime.engine as engine_module
    from selfimprove.cli.evalsets import declared_test_sets
    from selfimprove.cli.report import evaluate_models

    monkeypatch.setattr(
        engine_module, "make_engine", lambda backend, base, adapters, **_: ScriptedEngine(base == "tuned")
    )
    config = f"evaluation:\n  test_sets:\n    - {{label: word, data: {{path: {data_file}, answer: answer, verifier: numeric}}}}\n"
    sets = declared_test_sets(config)
    scores, paired = evaluate_models([("base", {"base": "b"}), ("iter 2", {"base": "tuned"})], sets, None, 1)
    assert scores["base"]["word"]["n"] == 3 and scores["iter 2"]["word"]["accuracy"] == 1.0
    assert paired["word"]["final"] == "iter 2" and paired["word"]["delta"] == pytest.approx(2 / 3)
    assert declared_test_sets("task: {name: arithmetic}\n") == []
