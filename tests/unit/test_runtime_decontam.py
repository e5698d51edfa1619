"""Decontamination against any evaluation set: the n-gram rule on real word problems, and the guard
built from a run's declared test sets (exact keys, n-grams, missing files)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from selfimprove.runtime.decontam import Index, words
from selfimprove.runtime.evalguard import TestSetError, guard_for, load_guard, parse_test_sets
from selfimprove.runtime.tasks.datafile import DataSource, text_key
from selfimprove.runtime.testsets import TestSet

pytestmark = pytest.mark.unit
WORD_PROBLEMS = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "word-problems"
SVAMP_TEST = WORD_PROBLEMS / "svamp_test.jsonl"
SVAMP_TRAIN = WORD_PROBLEMS / "svamp_train.jsonl"


def questions(path: Path) -> list[str]:
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    return [json.loads(line)["question"] for line in path.read_text().split("\n") if line.strip()]


def test_a_training_prompt_that_embeds_a_test_question_is_dropped_and_an_unrelated_one_kept():
    test = questions(SVAMP_TEST)
    index = Index(test)
    embedded = f"Solve the problem below and explain each step.\n\n{test[7].upper()}\n\nAnswer:"
    assert index.contaminated(embedded)
    assert index.contaminated(test[7])  # the question itself
    middle = words(test[7])[3:16]  # any 13 words of it, wherever they sit
    assert index.contaminated("Here is part of a story: " + " ".join(middle) + " - what next?")
    unrelated = (
        "A baker made 48 muffins and sold 19 in the morning. How many muffins were left for the evening?"
    )
    assert not index.contaminated(unrelated)
    train = questions(SVAMP_TRAIN)
    kept = [q for q in train if not index.contaminated(q)]
    # SVAMP varies a few base problems, so a quarter of its train questions share a 13-word span
    # (a sentence of the template) with a test question; the rest are kept
    assert 0.6 * len(train) < len(kept) < 0.9 * len(train)


def test_short_texts_count_whole_and_by_containment_from_eight_words_on():
    index = Index(
        ["How many salty cookies did Paco have left?", "Mia has 5 red pens and 6 blue pens in a box today."]
    )
    assert index.contaminated(
        "Paco's story. How many salty cookies did Paco have left? Explain."
    )  # eval inside
    assert index.contaminated("How many salty cookies did Paco have left")  # equal, punctuation aside
    assert index.contaminated("5 red pens and 6 blue pens in a box")  # a 9-word piece of an item
    assert not index.contaminated("red pens and blue pens")  # under eight words: only equality counts
    arithmetic = Index(["Q: What is (9 + 8) * 2?\n\nA:"])
    assert arithmetic.contaminated("Q: What is (9 + 8) * 2?\n\nA:")
    assert not arithmetic.contaminated("What is 9 + 8?")  # another problem, though its words are inside


def test_ten_thousand_prompts_against_the_word_problem_test_sets_take_seconds():
    test = questions(SVAMP_TEST) + questions(WORD_PROBLEMS / "gsm8k_test.jsonl")
    train = questions(WORD_PROBLEMS / "gsm8k_train.jsonl") + questions(SVAMP_TRAIN)
    prompts = (train * 2)[:10_000]
    start = time.perf_counter()
    index = Index(test * 6)  # about ten thousand items
    flagged = sum(index.contaminated(p) for p in prompts)
    assert time.perf_counter() - start < 10
    assert flagged < 0.05 * len(prompts)  # SVAMP train templates and a few GSM8K near-copies


def test_a_guard_keys_data_sets_by_text_and_runs_the_ngram_rule(tmp_path: Path):
    if not SVAMP_TEST.is_file():
        pytest.skip(f"{SVAMP_TEST} is not here")
    svamp = TestSet(label="svamp", data=DataSource(path=str(SVAMP_TEST), answer="answer", id="id"))
    guard = load_guard([svamp])
    question = questions(SVAMP_TEST)[0]
    assert len(guard.index) == len(questions(SVAMP_TEST)) and guard.labels == ("svamp",)
    assert guard.rule(question, text_key(question)) == "key"
    assert guard.rule(f"Please solve: {question}", text_key(f"Please solve: {question}")) == "ngram"
    assert guard.rule("What is 2 + 3?", ("+", (2, 3))) is None


def test_a_guard_keys_gpt3_sets_as_arithmetic_problems(tmp_path: Path):
    (tmp_path / "two_digit_addition.jsonl").write_text(
        json.dumps({"context": "\n\nQ: What is 98 plus 45?\n\nA:", "completion": " 143"}) + "\n"
    )
    guard = load_guard([TestSet(label="2D+", gpt3="two_digit_addition")], tmp_path)
    assert guard.keys == {("+", (98, 45))}
    assert guard.rule("What is 98 + 45?", ("+", (98, 45))) == "key"
    assert guard.rule("What is 45 + 98?", ("+", (45, 98))) is None


def test_a_declared_set_that_cannot_be_read_names_the_set_and_the_file(tmp_path: Path):
    with pytest.raises(TestSetError, match=r"'2D\+'.*two_digit_addition.*nowhere"):
        load_guard([TestSet(label="2D+", gpt3="two_digit_addition")], tmp_path / "nowhere")
    missing = tmp_path / "held_out.jsonl"
    with pytest.raises(TestSetError, match=f"'held'.*{missing}"):
        load_guard([TestSet(label="held", data=DataSource(path=str(missing)))])
    with pytest.raises(TestSetError, match="test_sets_json"):
        parse_test_sets('[{"label": "x"}]')


def test_a_run_declaring_no_set_reads_no_file(tmp_path: Path):
    guard = guard_for("", tmp_path / "nowhere")
    assert not guard.keys and len(guard.index) == 0 and guard.labels == ()
    assert guard.rule("Q: What is 98 plus 45?\n\nA:", ("+", (98, 45))) is None
