"""Inference strategies and calibration over a fake engine: batching, votes, judging, the verifier rule."""

import pytest

from selfimprove.refinement.calibration import Row, choose, measure, with_greedy
from selfimprove.runtime import strategies
from selfimprove.runtime.engine import GenerationRequest, PromptResult, Sample, to_messages
from selfimprove.runtime.tasks import load_task

pytestmark = pytest.mark.unit


class FakeEngine:
    """Answers from a script: ``replies[question]`` is the list of sample texts (cycled); judge prompts
    get "Yes" when the proposed answer is in ``good``; every call is recorded."""

    def __init__(self, replies, good=()):
        self.replies, self.good, self.calls = replies, set(good), []

    def generate(self, request: GenerationRequest):
        self.calls.append(request)
        out = []
        for prompt in request.prompts:
            text = to_messages(prompt)[-1]["content"]
            if "\nProposed answer: " in text:  # a judge prompt
                proposed = text.split("Proposed answer: ")[1].split("\n")[0]
                verdict = "Yes" if proposed in self.good else "No"
                samples = [Sample(verdict, 1, "stop", (-0.1,) if request.params.logprobs else None)]
            else:
                key = to_messages(prompt)[0]["content"]
                script = self.replies.get(key, ["I do not know"])
                greedy = request.params.temperature == 0
                samples = [
                    Sample(script[0 if greedy else i % len(script)], 3, "stop")
                    for i in range(request.params.n)
                ]
            out.append(PromptResult(tuple(samples), prompt_tokens=5))
        return out


def extract(reply):
    digits = [w.strip(".") for w in reply.split() if w.strip(".").lstrip("-").isdigit()]
    return digits[-1] if digits else None


def test_self_consistency_votes_in_one_batched_request():
    engine = FakeEngine({"q1": ["It is 4", "It is 5", "so 5", "maybe 6", "5."], "q2": ["7", "8", "8"]})
    done = strategies.run(engine, "self_consistency@5", ["q1", "q2"], extract)
    assert len(engine.calls) == 1 and engine.calls[0].params.n == 5
    assert engine.calls[0].params.temperature == pytest.approx(0.7)
    assert [a.answer for a in done.answers] == ["5", "8"]
    assert done.answers[0].text == "It is 5"  # the first sample with the majority answer
    assert done.tokens == 2 * 5 * 3


def test_greedy_and_best_of_n_by_self_judge():
    engine = FakeEngine({"q": ["is 3", "is 4", "is 5"]}, good={"is 4"})
    assert strategies.run(engine, "greedy", ["q"], extract).answers[0].answer == "3"
    engine.calls.clear()
    done = strategies.run(engine, "best_of_n@3", ["q"], extract)
    assert done.answers[0].answer == "4"
    assert [c.params.n for c in engine.calls] == [3, 1]
    assert len(engine.calls[1].prompts) == 3 and engine.calls[1].params.logprobs
    assert done.tokens == 3 * 3 + 3 * 1  # samples plus judge verdicts


def test_verifier_strategy_needs_verifiers_and_is_never_served():
    engine = FakeEngine({"q": ["is 3", "is 4"]})
    with pytest.raises(ValueError, match="needs one verifier"):
        strategies.run(engine, "best_of_n_verifier@2", ["q"], extract)
    done = strategies.run(engine, "best_of_n_verifier@2", ["q"], extract, verify=[lambda r: r.endswith("4")])
    assert done.answers[0].answer == "4"
    with pytest.raises(ValueError, match="never served"):
        strategies.parse("best_of_n_verifier@2", serving=True)
    from selfimprove.runtime.evaluate import check_strategy

    check_strategy("self_consistency@5")
    with pytest.raises(ValueError):
        check_strategy("best_of_n_verifier@2")
    with pytest.raises(ValueError, match="unknown strategy"):
        strategies.parse("beam@3")


def test_self_refine_runs_critique_and_revision_rounds():
    engine = FakeEngine({"q": ["draft 3"]})
    done = strategies.run(engine, "self_refine@2", ["q"], extract)
    assert len(engine.calls) == 1 + 2 * 2
    revise = engine.calls[2].prompts[0]
    assert [m["role"] for m in revise] == ["user", "assistant", "user", "assistant", "user"]
    assert done.answers[0].tokens == 3 * 5


class SystemEngine:
    """Greedy replies that depend on the system message: ``replies[system]`` (None: no system)."""

    def __init__(self, replies):
        self.replies, self.calls = replies, []

    def generate(self, request: GenerationRequest):
        self.calls.append(request)
        out = []
        for prompt in request.prompts:
            system = next((m["content"] for m in to_messages(prompt) if m["role"] == "system"), None)
            question = to_messages(prompt)[-1]["content"]
            text, finish = self.replies.get(system, ("no idea", "stop"))
            out.append(PromptResult((Sample(f"{question}: {text}", 2, finish),), prompt_tokens=5))
        return out


def test_prompt_ensemble_votes_over_system_prompts_in_one_greedy_batch():
    s1, s2, s3 = strategies.SYSTEM_PROMPTS[:3]
    engine = SystemEngine(
        {None: ("is 3", "stop"), s1: ("is 4", "stop"), s2: ("is 4", "stop"), s3: ("is 9", "length")}
    )
    done = strategies.run(engine, "prompt_ensemble@4", ["q1", "q2"], extract)
    assert len(engine.calls) == 1 and engine.calls[0].params.temperature == 0
    assert len(engine.calls[0].prompts) == 2 * 4
    assert engine.calls[0].prompts[0] == "q1"  # the first voter is the prompt as given
    assert [a.answer for a in done.answers] == ["4", "4"]  # the cut reply does not vote
    assert done.tokens == 2 * 4 * 2
    tie = strategies.run(
        SystemEngine({None: ("is 3", "stop"), s1: ("is 4", "stop")}), "prompt_ensemble@2", ["q"], extract
    )
    assert tie.answers[0].answer == "3"  # a tie keeps the greedy answer
    with pytest.raises(ValueError, match="at most"):
        strategies.parse(f"prompt_ensemble@{len(strategies.SYSTEM_PROMPTS) + 2}")


def test_calibration_measures_same_items_and_chooses_by_paired_test():
    task = load_task("arithmetic", {"categories": ["add1"]})
    items = task.items("dev", 12, seed=1)
    # greedy is always wrong, sampling finds the answer in 2 of 3 samples
    replies = {it.prompt: [f"It is {int(it.answer) + 1}", f"= {it.answer}", f"{it.answer}"] for it in items}
    engine = FakeEngine(replies)
    rows = measure(engine, task, items, ["self_consistency@3", "best_of_n_verifier@3"])
    by = {r.strategy: r for r in rows}
    assert [r.strategy for r in rows] == ["greedy", "self_consistency@3", "best_of_n_verifier@3"]
    assert by["greedy"].accuracy == 0 and by["self_consistency@3"].accuracy == 1
    assert by["self_consistency@3"].p_value < 0.01 and not by["best_of_n_verifier@3"].eligible
    assert choose(rows) == "self_consistency@3"
    assert choose(rows, token_budget=5) == "greedy"  # sc costs 9 tokens per problem


def test_choose_never_picks_verifier_or_insignificant():
    g = Row("greedy", (False,) * 10, 3, 0.1)
    oracle = Row("best_of_n_verifier@4", (True,) * 10, 12, 0.4, p_value=0.002, delta=1.0, eligible=False)
    weak = Row("best_of_n@4", (True,) + (False,) * 9, 16, 0.5, p_value=1.0, delta=0.1)
    assert choose([g, oracle, weak]) == "greedy"
    assert with_greedy([]) == ["greedy"]
