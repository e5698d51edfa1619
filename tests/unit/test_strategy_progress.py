"""Progress of strategies and evaluation: every problem counted once, as the engine finishes it,
whatever the strategy's phases; engines that report nothing are counted per call."""

import pytest

from selfimprove.runtime import strategies
from selfimprove.runtime.engine import GenerationRequest, PromptResult, Sample
from selfimprove.runtime.evaluate import evaluate_items
from selfimprove.runtime.tasks.base import Item
from selfimprove.runtime.tasks.verifiers import make_verifier

pytestmark = pytest.mark.unit


class ReportingEngine:
    """Replies "It is 4" to everything; tells ``on_done`` of each prompt as it finishes (when
    ``reports``), recording the running count it saw before each call returns."""

    def __init__(self, reports: bool = True):
        self.reports, self.calls = reports, []

    def generate(self, request: GenerationRequest):
        self.calls.append(len(request.prompts))
        out = []
        for _ in request.prompts:
            samples = tuple(Sample("It is 4", 3, "stop", (-0.1,)) for _ in range(request.params.n))
            out.append(PromptResult(samples, prompt_tokens=5))
            if self.reports and request.on_done is not None:
                request.on_done(1)
        return out


def extract(reply):
    return reply.split()[-1]


@pytest.mark.parametrize(
    "spec", ["greedy", "self_consistency@3", "best_of_n@2", "self_refine@1", "prompt_ensemble@3"]
)
@pytest.mark.parametrize("reports", [True, False])
def test_progress_sums_to_the_problems_and_never_runs_ahead(spec, reports):
    told = []
    engine = ReportingEngine(reports)
    done = strategies.run(engine, spec, ["q1", "q2", "q3"], extract, progress=told.append)
    assert len(done.answers) == 3
    assert sum(told) == 3 and all(k > 0 for k in told)
    if reports and spec == "greedy":
        assert told == [1, 1, 1]  # one tick per finished prompt, not one at the end


def test_no_progress_callback_means_no_hook_on_the_request():
    seen = []

    class Recording(ReportingEngine):
        def generate(self, request):
            seen.append(request.on_done)
            return super().generate(request)

    strategies.run(Recording(), "greedy", ["q"], extract)
    assert seen == [None]


def test_evaluate_items_reports_each_item():
    told = []
    items = [Item(id=str(i), prompt=f"q{i}", category="c", difficulty=1, answer="4") for i in range(5)]
    result = evaluate_items(ReportingEngine(), "set", items, make_verifier("integer"), progress=told.append)
    assert result.accuracy.correct == 5 and sum(told) == 5


def test_ticker_counts_whole_problems_across_phases():
    told = []
    t = strategies.Ticker(told.append, per=strategies.units_per_problem(strategies.parse("best_of_n@2")))
    t.add(2)  # the samples of two problems
    assert told == []
    t.add(4)  # their verdicts
    assert sum(told) == 2
