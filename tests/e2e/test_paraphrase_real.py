"""The real SmolLM2 model restates a small shard's prompts; the restatements kept have verified answers.

A short check of acquisition's paraphrasing (docs/data.md, "Paraphrased prompts") with the real base
model in this process: eight 1-digit sums, two samples each, three restatements asked per prompt,
screened against the GPT-3 sets the arithmetic configs declare. The base model writes many unusable
restatements (answers, chatter, other numbers); the test checks that what is kept is right, not how much.
"""

import pytest
import torch

from selfimprove.acquisition.generate import ParaphraseJob, ShardJob, paraphrase, run_shard
from selfimprove.acquisition.shard import shard_stats
from selfimprove.contracts.samples import from_jsonl, is_paraphrase, to_jsonl
from selfimprove.runtime.engine import SamplingParams
from selfimprove.runtime.evalguard import dump_test_sets, guard_for
from selfimprove.runtime.hf_engine import TransformersEngine
from selfimprove.runtime.models import load_model
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask, equations
from selfimprove.runtime.tasks.base import problem_key
from selfimprove.runtime.testsets import gpt3_sets

pytestmark = pytest.mark.e2e


def test_real_model_restatements_kept_only_with_verified_answers():
    torch.set_num_threads(2)
    engine = TransformersEngine(*load_model())
    task = ArithmeticTask(("add1",))
    items = task.items("train", 8, seed=11)
    sampling = SamplingParams(n=2, temperature=0.7, top_p=0.95, max_new_tokens=32, seed=3)
    rows, _, seconds = run_shard(engine, task, ShardJob(items, sampling))
    guard = guard_for(dump_test_sets(gpt3_sets()), None)
    job = ParaphraseJob(per_prompt=3, max_new_tokens=48, rule=guard.rule)
    kept, counts = paraphrase(engine, task, items, rows, job, sampling)

    assert counts.asked == 24 and counts.kept == len(kept) <= counts.sampled <= counts.asked
    assert kept, f"no restatement kept: {counts}"
    sources = {i.id: i for i in items}
    for row in from_jsonl(to_jsonl(kept)):
        source = sources[row["paraphrase_of"]]
        assert is_paraphrase(row) and row["id"].startswith(f"{source.id}.p")
        assert row["prompt"] != source.prompt and "\n" not in row["prompt"]
        assert row["answer"] == source.answer and problem_key(row["meta"]) == problem_key(source.meta)
        assert guard.rule(row["prompt"], None) is None
        right = [s for s in row["samples"] if s["verified"]]
        assert right and all(s["extracted"] == source.answer and all(equations(s["text"])) for s in right)
    stats = shard_stats([*rows, *kept], seconds, counts.tokens)
    assert stats.prompts == 8 and stats.paraphrases_kept == len(kept)
