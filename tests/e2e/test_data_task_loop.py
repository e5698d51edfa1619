"""A user's own data through the whole loop: ``configs/svamp.yaml`` (SVAMP word problems read from
the train file with the numeric verifier, the test files declared as evaluation sets), shrunk to one
small iteration, with every service as its own process on the real local stack. Checked: the run
completes, every acquired prompt is a row of the train file's train split (none of its dev split,
none of a test file), and selection and evaluation answered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from selfimprove.core.local_loop import LocalLoop
from selfimprove.core.stack import LocalStack
from selfimprove.core.topics import Topics
from selfimprove.runtime.tasks import load_task
from selfimprove.runtime.tasks.base import TooFewProblems
from selfimprove.runtime.tasks.datafile import normalise
from tests.support.buskit import artifact_store, run_events

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SMALL = {
    "budget": {"iterations": 1, "wall_time_s": 1500},
    "acquisition": {"shards": 2, "prompts_per_shard": 12, "samples_per_prompt": 2, "max_new_tokens": 64},
    "training": {"hparams": {"epochs": 1, "batch_size": 4}},
    "evaluation": {"max_new_tokens": 64, "alpha": 0.3},
    "refinement": {"strategies": ["greedy"], "dev_size": 6},
    "stages": {s: {"timeout_s": 900} for s in ("acquire", "select", "train", "evaluate", "refine")},
}


def small_config(tmp_path: Path) -> str:
    from selfimprove.cli.run import prepare_config

    data = yaml.safe_load((ROOT / "configs" / "svamp.yaml").read_text())
    for key, value in SMALL.items():
        data[key] = {**data.get(key, {}), **value}
    data["task"]["dev_size"] = 12
    path = tmp_path / "svamp-small.yaml"
    path.write_text(yaml.safe_dump(data))
    return prepare_config(path, None, None, None)


def every(task, split: str) -> set[str]:
    with pytest.raises(TooFewProblems) as found:
        task.items(split, 10**6)
    return {normalise(i.prompt) for i in found.value.found}


def test_svamp_config_runs_one_iteration_through_every_service(tmp_path, unique_name, monkeypatch):
    from selfimprove.cli.run import follow

    monkeypatch.chdir(ROOT)  # the config's relative paths are read from here
    config = small_config(tmp_path)
    cfg = yaml.safe_load(config)
    task = load_task(cfg["task"]["name"], cfg["task"]["params"])
    train, dev = every(task, "train"), every(task, "dev")
    test = {
        normalise(json.loads(line)["question"])
        for ts in cfg["evaluation"]["test_sets"]
        for line in Path(ts["data"]["path"]).read_text().splitlines()
    }
    prefix = unique_name
    stack = LocalStack(root=tmp_path / "stack")
    loop = LocalLoop(
        stack, env={"SELFIMPROVE_KAFKA_TOPIC_PREFIX": prefix, "SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000"}
    )
    with loop:
        summary = follow(loop.grpc_address("evaluator"), config, run_id=f"svamp-{unique_name}", quiet=True)
        assert summary["state"] == "completed", summary
        topics = Topics(prefix)
        events = run_events(
            stack.kafka_bootstrap,
            [t for s in (1, 2, 3, 4) for t in (topics.command(s), topics.result(s))],
            summary["run_id"],
        )
        for stage in (1, 2, 3, 4):  # acquire, select, train, evaluate: each answered without a failure
            results = events[topics.result(stage)]
            assert results and not any(e.WhichOneof("payload") == "stage_failure" for e in results), stage
        store = artifact_store(stack)
        prompts = set()
        for env in events[topics.result(1)]:
            store.verify(env.acquire_result.samples)
            rows = store.read_file(env.acquire_result.samples, "samples.jsonl").decode().splitlines()
            prompts |= {normalise(json.loads(r)["prompt"]) for r in rows}
        assert len(prompts) >= 24, len(prompts)  # a data retry asks more
        assert prompts <= train and not prompts & dev and not prompts & test
        card = json.loads(store.read_file(events[topics.result(2)][0].select_result.dataset, "card.json"))
        assert card["sources"], card
        evaluated = events[topics.result(4)][0].evaluate_result
        assert evaluated.suites and evaluated.suites[0].n == 12
