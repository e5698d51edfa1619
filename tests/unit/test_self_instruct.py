"""Self-instruct runs: the seed set's config checks, its trip to the store and into every acquire
command, and the screen generated prompts pass (repeats, evaluation problems) before sampling."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from minio.error import S3Error

from selfimprove.acquisition import instruct, prompts
from selfimprove.core import envelope as envelopes
from selfimprove.core.metrics import Metrics
from selfimprove.core.store import ArtifactStore
from selfimprove.core.topics import Topics
from selfimprove.evaluator import decide, inputs
from selfimprove.evaluator.commands import command
from selfimprove.evaluator.config import ConfigError, dump_config, load_config
from selfimprove.evaluator.controller import Controller
from selfimprove.evaluator.loopmetrics import LoopMetrics
from selfimprove.evaluator.state import RunState
from selfimprove.runtime.decontam import Index
from selfimprove.runtime.evalguard import EvalGuard
from selfimprove.runtime.tasks.datafile import text_key
from selfimprove.runtime.tasks.seedset import SeedExample, load_seed_set
from selfimprove.v2.stages_pb2 import RunControl

pytestmark = pytest.mark.unit
SEEDS = [
    {"instruction": "Tom has 3 apples and buys 4 more. How many apples does he have?", "category": "word"},
    {"instruction": "A box holds 6 pens. How many pens are in 2 boxes?", "category": "word"},
]


def seed_file(tmp_path, lines=None, name="seeds.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines if lines is not None else [json.dumps(s) for s in SEEDS]) + "\n")
    return path


def config(path, mode="label-free", extra=""):
    return f"label_mode: {mode}\nacquisition: {{self_instruct: true, seed_set: {path}{extra}}}\n"


# -- config ------------------------------------------------------------------------------------


def test_a_label_free_self_instruct_config_with_a_seed_set_loads(tmp_path):
    cfg = load_config(config(seed_file(tmp_path)))
    assert cfg.acquisition.self_instruct and cfg.acquisition.seed_set == str(tmp_path / "seeds.jsonl")
    assert load_config(dump_config(cfg)) == cfg


def test_a_relative_seed_set_path_is_made_absolute(tmp_path, monkeypatch):
    seed_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert load_config(config("seeds.jsonl")).acquisition.seed_set == str(tmp_path / "seeds.jsonl")


def test_a_verified_self_instruct_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="acquisition.self_instruct: .*needs label_mode label-free"):
        load_config(config(seed_file(tmp_path), mode="verified"))


def test_self_instruct_needs_a_seed_set_and_a_seed_set_needs_self_instruct(tmp_path):
    with pytest.raises(ConfigError, match="acquisition.self_instruct: needs acquisition.seed_set"):
        load_config("label_mode: label-free\nacquisition: {self_instruct: true}\n")
    with pytest.raises(ConfigError, match="acquisition.seed_set: it is read only with"):
        load_config(f"label_mode: label-free\nacquisition: {{seed_set: {seed_file(tmp_path)}}}\n")


def test_a_missing_bad_or_empty_seed_set_is_named_with_its_file_and_line(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match=f"acquisition.seed_set: cannot read {missing}: No such file"):
        load_config(config(missing))
    bad = seed_file(tmp_path, [json.dumps(SEEDS[0]), '{"task": "no instruction"}'], "bad.jsonl")
    with pytest.raises(ConfigError, match=f"acquisition.seed_set: {bad}:2: a seed example needs"):
        load_config(config(bad))
    empty = seed_file(tmp_path, ["# only a comment", ""], "empty.jsonl")
    with pytest.raises(ConfigError, match=f"acquisition.seed_set: {empty} has no seed example"):
        load_config(config(empty))


def test_a_stored_config_reloads_without_its_files(tmp_path):
    path = seed_file(tmp_path)
    text = dump_config(load_config(config(path)))
    path.unlink()
    assert load_config(text, files=False).acquisition.seed_set == str(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(text)


# -- the seed set in the store and in the commands ------------------------------------------------


class MemoryMinio:
    """The few ``minio`` calls the artifact store makes, in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.puts = 0

    def put_object(self, bucket, key, data, length, content_type=None):
        self.objects[(bucket, key)] = data.read(length)
        self.puts += 1

    def get_object(self, bucket, key):
        if (bucket, key) not in self.objects:
            raise S3Error(None, "NoSuchKey", "missing", key, "r", "h")  # type: ignore[arg-type]
        response = io.BytesIO(self.objects[(bucket, key)])
        response.release_conn = lambda: None
        return response

    def stat_object(self, bucket, key):
        return self.get_object(bucket, key)


def memory_store() -> tuple[ArtifactStore, MemoryMinio]:
    client = MemoryMinio()
    return ArtifactStore(client, "b"), client  # type: ignore[arg-type]


def test_the_seed_set_is_stored_once_under_the_run_prefix(tmp_path):
    store, client = memory_store()
    path = seed_file(tmp_path)
    ref = inputs.put_seed_set(store, "r1", str(path))
    assert ref.uri.startswith("s3://b/runs/r1/inputs/seed-set/") and ref.uri.endswith("/manifest.json")
    assert store.read_file(ref, inputs.SEED_SET_FILE) == path.read_bytes()
    puts = client.puts
    assert inputs.put_seed_set(store, "r1", str(path)) == ref and client.puts == puts  # found, not rewritten
    with pytest.raises(ValueError, match=r"acquisition.seed_set: cannot read .*gone.jsonl"):
        inputs.put_seed_set(store, "r1", str(tmp_path / "gone.jsonl"))


def test_every_acquire_command_carries_the_run_seed_set(tmp_path):
    cfg = load_config(config(seed_file(tmp_path), extra=", shards: 2"))
    seed_ref = {"uri": "s3://b/runs/r/inputs/seed-set/x/manifest.json", "sha256": "ab", "bytes": 9}
    tr = decide.start(Topics("t"), cfg, dump_config(cfg), "r", 0.0, "cause", {}, seed_set=seed_ref)
    acquires = [o.envelope.acquire_command for o in tr.out if o.envelope.HasField("acquire_command")]
    assert len(acquires) == 2
    for cmd in acquires:
        assert cmd.self_instruct and cmd.task.seed_set.uri == seed_ref["uri"]
        assert cmd.task.seed_set.sha256 == "ab"
    state = RunState.from_json(tr.state.to_json())  # the snapshot keeps it for a restarted evaluator
    again = command(Topics("t"), state, cfg, "acquire/0", 2, "c").envelope.acquire_command
    assert again.task.seed_set.uri == seed_ref["uri"]


class FakeBus:
    topics = Topics("t")

    def __init__(self) -> None:
        self.published: list = []

    async def publish(self, topic, env, key="", spread=None):
        self.published.append(env)


def test_the_controller_stores_the_seed_set_when_a_run_starts_and_once_on_redelivery(tmp_path):
    store, client = memory_store()
    bus = FakeBus()
    controller = Controller(bus, store, LoopMetrics(Metrics("evaluator")), {})  # type: ignore[arg-type]
    control = RunControl(action=RunControl.ACTION_START, config_yaml=config(seed_file(tmp_path)))
    start = envelopes.make(run_id="r1", iteration=0, stage=0, producer="cli", run_control=control)
    asyncio.run(controller.handle(start))
    ref = controller.runs["r1"].seed_set
    assert ref["uri"].startswith("s3://b/runs/r1/inputs/seed-set/")
    commands = [e.acquire_command for e in bus.published if e.HasField("acquire_command")]
    assert commands and all(c.task.seed_set.uri == ref["uri"] for c in commands)
    examples = load_seed_set_from(store, commands[0].task.seed_set, tmp_path)
    assert [e.instruction for e in examples] == [s["instruction"] for s in SEEDS]
    controller.runs.clear()  # as if the snapshot were not written: the start is redelivered
    puts = client.puts
    asyncio.run(controller.handle(start))
    assert controller.runs["r1"].seed_set == ref
    assert client.puts == puts + 1  # the snapshot alone: the seed set was found


def load_seed_set_from(store, ref, tmp_path):
    """What acquisition reads (``read_seed_set`` of the acquisition service)."""
    from selfimprove.acquisition.service import read_seed_set
    from selfimprove.v2.common_pb2 import TaskSpec
    from selfimprove.v2.stages_pb2 import AcquireCommand

    cmd = AcquireCommand(task=TaskSpec(seed_set=ref), self_instruct=True)
    return read_seed_set(store, cmd, tmp_path / "read.jsonl")


def test_start_run_fails_naming_the_field_when_the_evaluator_cannot_read_the_seed_set(tmp_path):
    import grpc

    from selfimprove.evaluator.control_plane import ControlPlane
    from selfimprove.v2 import control_pb2

    class Aborted(Exception):
        pass

    class Context:
        async def abort(self, code, message):
            self.code, self.message = code, message
            raise Aborted

    plane = ControlPlane(Controller(FakeBus(), memory_store()[0], LoopMetrics(Metrics("e")), {}))  # type: ignore[arg-type]
    context = Context()
    missing = tmp_path / "elsewhere.jsonl"
    request = control_pb2.StartRunRequest(config_yaml=config(missing), run_id="r2")
    with pytest.raises(Aborted):
        asyncio.run(plane.StartRun(request, context))
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"acquisition.seed_set: cannot read {missing}" in context.message


# -- screening generated prompts --------------------------------------------------------------------


def items_of(texts):
    demos = [[SeedExample("x", category="word")]] * len(texts)
    return prompts.instruct_items(texts, demos)


def test_repeats_within_a_shard_and_of_the_seed_set_are_dropped(tmp_path):
    seeds = load_seed_set(seed_file(tmp_path))
    written = items_of(
        [
            "Task: Mia has 5 cats and 2 dogs. How many pets?",
            "mia has 5 cats and   2 dogs. how many pets",  # the same, normalised
            SEEDS[1]["instruction"].upper(),  # a seed copied back
            "Sam reads 3 books a week. How many in 4 weeks?",
            "",  # empty: never an item
        ]
    )
    out = instruct.screen(written, seeds)
    assert [i.prompt for i in out.items] == [
        "Mia has 5 cats and 2 dogs. How many pets?",
        "Sam reads 3 books a week. How many in 4 weeks?",
    ]
    assert (out.duplicates, out.contaminated) == (2, 0)


def test_prompts_hitting_an_evaluation_set_are_dropped_by_key_or_ngram():
    test_item = (
        "Paco had 26 salty cookies and 17 sweet cookies. He ate 14 sweet cookies and 9 salty cookies. "
        "How many salty cookies did Paco have left?"
    )
    guard = EvalGuard(frozenset({text_key("Ann has 7 red balls. How many balls?")}), Index([test_item]))
    written = items_of(
        [
            "ANN has 7 red balls.  How many balls?",  # the same text as an evaluation problem
            "Paco had 26 salty cookies and 17 sweet cookies. He ate 14 sweet cookies and 9 salty "
            "cookies. How many were left in all?",  # a 13-gram of one
            "Leo has 8 marbles and loses 3. How many are left?",
        ]
    )
    out = instruct.screen(written, [], guard.rule)
    assert [i.prompt for i in out.items] == ["Leo has 8 marbles and loses 3. How many are left?"]
    assert (out.duplicates, out.contaminated) == (0, 2)
    assert out.items[0].meta["key"] == ["text", ["leo has 8 marbles and loses 3. how many are left"]]
