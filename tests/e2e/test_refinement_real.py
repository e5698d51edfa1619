"""Strategies and calibration with the real base model on a few 2-digit additions (minutes on a
shared CPU). The full table with a significance test is ``benchmarks/refinement_table.py``."""

import pytest

from selfimprove.refinement.calibration import choose, measure
from selfimprove.runtime import strategies
from selfimprove.runtime.tasks import load_task

pytestmark = pytest.mark.e2e


def test_calibration_table_on_the_real_model():
    import torch

    from selfimprove.runtime.engine import GenerationRequest, SamplingParams, make_engine

    torch.set_num_threads(2)
    engine = make_engine("transformers", "smollm2-135m-instruct", threads=2, batch_size=32)
    task = load_task("arithmetic", {"categories": ["add2"]})
    items = task.items("dev", 6, seed=0)
    settings = strategies.Settings(max_new_tokens=48, seed=0)
    rows = measure(engine, task, items, ["self_consistency@3"], settings)
    assert [r.strategy for r in rows] == ["greedy", "self_consistency@3"]
    assert all(len(r.outcomes) == 6 for r in rows)
    assert rows[1].tokens_per_problem > rows[0].tokens_per_problem > 0
    assert choose(rows) in {"greedy", "self_consistency@3"}
    # the chosen self-consistency text is one of the model's own samples for that prompt
    done = strategies.run(engine, "self_consistency@3", [items[0].prompt], task.extract, settings)
    params = SamplingParams(n=3, temperature=0.7, top_p=0.95, max_new_tokens=48, seed=0)
    [again] = engine.generate(GenerationRequest([items[0].prompt], params))
    assert done.answers[0].text in again.texts
