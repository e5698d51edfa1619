"""Scoring any test set with its verifier over a fake engine: the GPT-3 sets keep the fixed rule (same
prompts, same verdicts as the GPT-3 scorer), a data file is judged by its named verifier, and items
or files without reference answers are refused."""

import json

import pytest

from selfimprove.runtime.benchmarks import load_set, score
from selfimprove.runtime.engine import GenerationRequest, PromptResult, Sample, to_messages
from selfimprove.runtime.evaluate import evaluate_items, evaluate_set, load_test_set
from selfimprove.runtime.tasks.base import Item
from selfimprove.runtime.tasks.datafile import DataSource
from selfimprove.runtime.tasks.verifiers import make_verifier
from selfimprove.runtime.testsets import TestSet

pytestmark = pytest.mark.unit

GPT3_ROWS = [  # context, completion, the fake model's reply
    ("\n\nQ: What is 98 plus 45?\n\nA:", " 143", "98 + 45 = 143."),
    ("\n\nQ: What is 17 plus 44?\n\nA:", " 61", "The answer is 61, not 60"),
    ("\n\nQ: What is 12 plus 30?\n\nA:", " 42", "I do not know"),
    ("\n\nQ: What is 50 plus 50?\n\nA:", " 100", "100.0"),
    ("\n\nQ: What is 10 plus 11?\n\nA:", " 21", "-21"),
]


class FakeEngine:
    """Replies from a script keyed by the user message (samples cycle through a list); records prompts."""

    def __init__(self, replies):
        self.replies, self.prompts = replies, []

    def generate(self, request: GenerationRequest):
        out = []
        for prompt in request.prompts:
            text = to_messages(prompt)[-1]["content"]
            self.prompts.append(text)
            script = self.replies.get(text, ["no idea"])
            script = script if isinstance(script, list) else [script]
            greedy = request.params.temperature == 0
            samples = [
                Sample(script[0 if greedy else i % len(script)], 4, "stop") for i in range(request.params.n)
            ]
            out.append(PromptResult(tuple(samples), prompt_tokens=5))
        return out


@pytest.fixture
def bench_dir(tmp_path):
    path = tmp_path / "two_digit_addition.jsonl"
    path.write_text("".join(json.dumps({"context": c, "completion": a}) + "\n" for c, a, _ in GPT3_ROWS))
    return tmp_path


def test_gpt3_set_keeps_the_prompts_and_the_fixed_rule(bench_dir):
    engine = FakeEngine({c.strip(): reply for c, _, reply in GPT3_ROWS})
    loaded = load_test_set(TestSet(label="2D+", gpt3="two_digit_addition"), bench_dir)
    result = evaluate_set(engine, loaded)
    old = load_set(bench_dir / "two_digit_addition.jsonl")
    assert engine.prompts == [item.prompt for item in old]
    assert result.outcomes == tuple(
        score(reply, item) for item, (_, _, reply) in zip(old, GPT3_ROWS, strict=True)
    )
    assert result.outcomes == (True, False, False, True, False)
    assert result.set_name == "2D+" and result.accuracy.n == 5 and result.accuracy.correct == 2
    assert result.accuracy.low <= 0.4 <= result.accuracy.high
    assert result.tokens == 20


def test_gpt3_rule_votes_on_the_last_integer(bench_dir):
    first = GPT3_ROWS[0][0].strip()
    engine = FakeEngine({first: ["so it is 143.", "143", "it is 142"]})
    loaded = load_test_set(TestSet(label="2D+", gpt3="two_digit_addition"), bench_dir, limit=1)
    result = evaluate_set(engine, loaded, strategy="self_consistency@3")
    assert loaded.verifier.name == "integer" and result.outcomes == (True,)


def test_data_file_is_judged_by_its_verifier(tmp_path):
    path = tmp_path / "word.jsonl"
    rows = [
        {"id": "a", "question": "Tom has 3 apples and buys 4. How many?", "answer": "7"},
        {"id": "b", "question": "A box holds 1,200 pins; 200 go. How many stay?", "answer": "1000"},
        {"id": "c", "question": "Half of 5?", "answer": "2.5"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = FakeEngine(
        {rows[0]["question"]: "He has 7.", rows[1]["question"]: "1,000 pins", rows[2]["question"]: "2"}
    )
    source = DataSource(path=str(path), answer="answer", id="id", verifier="numeric")
    result = evaluate_set(engine, load_test_set(TestSet(label="word", data=source), limit=3))
    assert result.outcomes == (True, True, False)
    assert [r for r in result.replies] == ["He has 7.", "1,000 pins", "2"]


def test_items_without_answers_or_a_file_without_an_answer_field_are_refused(tmp_path):
    item = Item(id="q1", prompt="What is love?", category="all", difficulty=1)
    with pytest.raises(ValueError, match="no reference answer.*q1"):
        evaluate_items(FakeEngine({}), "s", [item], make_verifier("exact"))
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "What is love?"}) + "\n")
    with pytest.raises(ValueError, match="names no answer field"):
        load_test_set(TestSet(label="q", data=DataSource(path=str(path))))


def test_a_strategy_that_needs_the_verifier_is_refused():
    item = Item(id="q1", prompt="1+1?", category="all", difficulty=1, answer="2")
    with pytest.raises(ValueError, match="data generation only"):
        evaluate_items(FakeEngine({}), "s", [item], make_verifier("numeric"), strategy="best_of_n_verifier@2")
