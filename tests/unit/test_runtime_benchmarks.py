import json

import pytest

from selfimprove.runtime.benchmarks import (
    GPT3_SETS,
    BenchItem,
    BenchmarkNotFoundError,
    decontamination_keys,
    load_set,
    problem_key,
    resolve_sets,
    score,
)

pytestmark = pytest.mark.unit

ROWS = {
    "two_digit_addition": ("\n\nQ: What is 98 plus 45?\n\nA:", " 143"),
    "two_digit_subtraction": ("\n\nQ: What is 17 minus 44?\n\nA:", " -27"),
    "three_digit_addition": ("\n\nQ: What is 556 plus 497?\n\nA:", " 1053"),
    "three_digit_subtraction": ("\n\nQ: What is 87 minus 251?\n\nA:", " -164"),
    "two_digit_multiplication": ("\n\nQ: What is 54 times 4?\n\nA:", " 216"),
    "single_digit_three_ops": ("\n\nQ: What is (9 + 8) * 2?\n\nA:", " 34"),
}


@pytest.fixture
def bench_dir(tmp_path, monkeypatch):
    for name, (context, completion) in ROWS.items():
        (tmp_path / f"{name}.jsonl").write_text(
            json.dumps({"context": context, "completion": completion}) + "\n"
        )
    monkeypatch.setenv("SELFIMPROVE_BENCHMARKS_DIR", str(tmp_path))
    return tmp_path


def test_resolve_all_one_and_path(bench_dir):
    assert list(resolve_sets("gpt3")) == list(GPT3_SETS)
    assert list(resolve_sets("two_digit_addition")) == ["two_digit_addition"]
    path = bench_dir / "two_digit_addition.jsonl"
    assert resolve_sets(str(path)) == {"two_digit_addition": path}


def test_missing_and_unknown_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFIMPROVE_BENCHMARKS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(BenchmarkNotFoundError, match="SELFIMPROVE_BENCHMARKS_DIR"):
        resolve_sets("gpt3")
    with pytest.raises(BenchmarkNotFoundError, match="unknown benchmark"):
        resolve_sets("four_digit_division")


def test_load_and_score(bench_dir):
    [item] = load_set(bench_dir / "two_digit_subtraction.jsonl")
    assert item.prompt == "Q: What is 17 minus 44?\n\nA:" and item.answer == "-27"
    assert score("17 - 44 = -27.", item)
    assert score("The result is \u221227", item)
    assert not score("17 - 44 = 27", item)
    assert not score("I don't know", item)


def test_decontamination_keys(bench_dir):
    keys = decontamination_keys()
    assert ("+", (98, 45)) in keys and ("-", (87, 251)) in keys and ("*", (54, 4)) in keys
    assert ("(_+_)*_", (9, 8, 2)) in keys and len(keys) == 6


def test_problem_key_rejects_other_text():
    with pytest.raises(ValueError):
        problem_key("Tell me a story")
    assert BenchItem("s", 0, "Q: What is 2 plus 3?", " 5").key == ("+", (2, 3))
