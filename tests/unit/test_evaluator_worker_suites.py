"""The evaluation worker's suite plan without a model: which suites it scores, on which split, under
which cache key, and how an interim look trims the held-out-phrasing suite (outcomes faked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfimprove.evaluator.commands import task_spec
from selfimprove.evaluator.settings import WorkerSettings
from selfimprove.evaluator.worker_service import Evaluation
from selfimprove.v2.common_pb2 import ModelRef
from selfimprove.v2.stages_pb2 import EvalSuite, EvaluateCommand

pytestmark = pytest.mark.unit
ADD2 = task_spec("arithmetic", {"categories": ["add2"]})


class FakeEvaluation(Evaluation):
    """Outcomes without a model: the candidate right on every item, the incumbent on none."""

    def __init__(self) -> None:
        self.settings = WorkerSettings()
        self.asked: list[tuple[str, str, list[str]]] = []

    def outcomes(self, model, task, items, suite_key, seed, max_new_tokens, progress=None):
        self.asked.append((model.version, suite_key, [it.prompt for it in items]))
        ok = model.version == "cand"
        return {
            "ids": [it.id for it in items],
            "replies": ["x"] * len(items),
            "ok": [ok] * len(items),
            "tokens": 1,
        }, False


def test_the_heldout_phrasing_suite_is_scored_on_its_split_trimmed_to_an_interim_look(tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"{i} + 1?", "answer": str(i + 1)}) + "\n"
            for i in range(80)
        )
    )
    suites = [
        EvalSuite(name="dev", task=ADD2, dev_size=12),
        EvalSuite(name="heldout_phrasing", task=ADD2, dev_size=12, split="heldout_phrasing"),
        EvalSuite(name="file", task=task_spec("data", {"path": str(data), "answer": "answer"}), dev_size=3),
        EvalSuite(
            name="file_phrasing",
            task=task_spec("data", {"path": str(data), "answer": "answer"}),
            dev_size=3,
            split="heldout_phrasing",
        ),
    ]
    cmd = EvaluateCommand(
        candidate=ModelRef(version="cand"),
        incumbent=ModelRef(version="inc"),
        seed=7,
        suites=suites,
        interim_looks=[6],
        interim_alpha=0.05,  # 6 discordant pairs: p = 0.03
    )
    evaluation = FakeEvaluation()
    files, meta = evaluation.run(cmd)
    scored = meta["suites"]
    # the data task has no held-out phrasings: its suite is skipped, not failed
    assert [(s["name"], s["split"], s["n"]) for s in scored] == [
        ("dev", "", 6),
        ("heldout_phrasing", "heldout_phrasing", 6),  # as many as the main suite settled on
        ("file", "", 3),
    ]
    keys = [json.loads(key.split("#")[0])["split"] for _, key, _ in evaluation.asked]
    assert keys == ["dev", "dev", "heldout_phrasing", "heldout_phrasing", "dev", "dev"]
    dev_prompts, worded_prompts = evaluation.asked[0][2], evaluation.asked[2][2]
    assert len(worded_prompts) == 6 and not set(dev_prompts) & set(worded_prompts)
    rows = [json.loads(x) for x in files["details.jsonl"].decode().splitlines()]
    by_suite = {name: [r["id"] for r in rows if r["suite"] == name] for name in ("dev", "heldout_phrasing")}
    assert by_suite["dev"] == by_suite["heldout_phrasing"]  # the same problems
