"""Self-instruct through the whole loop with the real model: a label-free run whose prompts the model
writes from a tiny seed set of word problems (``acquisition.self_instruct``, ``acquisition.seed_set``),
one small iteration with every service as its own process on the real local stack. Checked: the run
completes; the evaluator stored the seed set under the run's prefix and every acquire command carries
it; acquisition wrote new prompts (no reference answer, none a seed example, counted in the shard's
``instruct_*`` stats); label-free selection ran on them."""

from __future__ import annotations

import json

import pytest

from selfimprove.core.local_loop import LocalLoop
from selfimprove.core.stack import LocalStack
from selfimprove.core.topics import Topics
from selfimprove.runtime.tasks.datafile import text_key
from tests.support.buskit import artifact_store, run_events

pytestmark = pytest.mark.e2e

SEEDS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "A box holds 6 pens. How many pens are in 2 boxes?",
    "Mia had 9 stickers and gave away 5. How many stickers does she have left?",
    "There are 7 birds on a tree and 2 fly away. How many birds are on the tree?",
    "Sam reads 5 pages each day. How many pages does he read in 3 days?",
]
PROMPTS = 8
CONFIG = """
base_model: smollm2-135m-instruct
label_mode: label-free
seed: 5
task: {{name: arithmetic, params: {{categories: [add1]}}, dev_size: 8}}
budget: {{iterations: 1, wall_time_s: 900}}
acquisition: {{self_instruct: true, seed_set: {seed_set}, shards: 1, prompts_per_shard: {prompts},
  samples_per_prompt: 3, max_new_tokens: 40}}
selection: {{params: {{band: [-0.01, 1.01], embed: false}}}}
training: {{method: sft, hparams: {{epochs: 1, batch_size: 4}}, require_loss_drop: false}}
evaluation: {{max_new_tokens: 24, alpha: 0.3}}
refinement: {{enabled: false}}
stages:
  acquire: {{timeout_s: 600}}
  select: {{timeout_s: 300}}
  train: {{timeout_s: 600}}
  evaluate: {{timeout_s: 600}}
"""


def test_a_label_free_self_instruct_iteration_with_the_real_model(tmp_path, unique_name):
    from selfimprove.cli.run import follow

    seed_set = tmp_path / "word-problems.jsonl"
    seed_set.write_text("".join(json.dumps({"instruction": s, "category": "word"}) + "\n" for s in SEEDS))
    config = CONFIG.format(seed_set=seed_set, prompts=PROMPTS)
    prefix = unique_name
    stack = LocalStack(root=tmp_path / "stack")
    loop = LocalLoop(
        stack, env={"SELFIMPROVE_KAFKA_TOPIC_PREFIX": prefix, "SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000"}
    )
    with loop:
        summary = follow(loop.grpc_address("evaluator"), config, run_id=f"si-{unique_name}", quiet=True)
        assert summary["state"] == "completed", summary
        topics = Topics(prefix)
        events = run_events(
            stack.kafka_bootstrap,
            [t for s in (1, 2) for t in (topics.command(s), topics.result(s))],
            summary["run_id"],
        )
        store = artifact_store(stack)

        commands = [e.acquire_command for e in events[topics.command(1)]]
        assert commands and all(c.self_instruct for c in commands)
        seed_ref = commands[0].task.seed_set
        assert f"/runs/{summary['run_id']}/inputs/seed-set/" in seed_ref.uri
        assert all(c.task.seed_set == seed_ref for c in commands)
        assert store.read_file(seed_ref, "seed_set.jsonl") == seed_set.read_bytes()

        results = events[topics.result(1)]
        assert results and not any(e.WhichOneof("payload") == "stage_failure" for e in results), results
        seeds = {text_key(s) for s in SEEDS}
        written = 0
        for env in results:  # a data retry, if any, asks more prompts
            stats = env.acquire_result.stats
            assert stats.instruct_asked >= PROMPTS and stats.prompts > 0, stats
            assert stats.prompts + stats.instruct_dropped == stats.instruct_asked, stats
            rows = [
                json.loads(line)
                for line in store.read_file(env.acquire_result.samples, "samples.jsonl").splitlines()
            ]
            prompts = [r for r in rows if r["id"].startswith("si-")]
            assert len(prompts) == stats.prompts and all(r["answer"] is None for r in prompts), rows
            keys = [text_key(r["prompt"]) for r in prompts]
            assert len(set(keys)) == len(keys) and not set(keys) & seeds  # no repeat, no seed copied
            written += len(prompts)

        selections = events[topics.result(2)]
        assert selections and all(e.WhichOneof("payload") == "select_result" for e in selections), selections
        card = json.loads(store.read_file(selections[-1].select_result.dataset, "card.json"))
        assert 0 < card["counts"]["prompts_in"] <= written, card
        assert {e.select_command.label_mode for e in events[topics.command(2)]} == {2}  # label-free
