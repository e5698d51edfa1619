"""Malformed bus messages for the fuzz suite (``benchmarks/fuzz.py``): pure, seeded, reproducible.

Kinds: random bytes, truncated and mutated valid envelopes, a valid payload of the wrong type for the
topic, a huge field, unknown run ids, empty values, envelopes missing a required field, and
valid-looking commands whose artifact references point nowhere. Every valid-looking envelope names a
run id that no run has and a base model that does not exist, so a service that accepts one fails
fast instead of starting real work. ``would_start_run`` flags control events that the controller
would take as a request to start a run: the suite leaves those out (see docs/reliability.md).

>>> import random
>>> cases = generate(random.Random(1), Topics("p"), 200)
>>> len(cases), {c.kind for c in cases} >= {"random_bytes", "mutated", "wrong_payload", "empty"}
(200, True)
>>> [c.value for c in generate(random.Random(1), Topics("p"), 5)] == [
...     c.value for c in generate(random.Random(1), Topics("p"), 5)]
True
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass

from selfimprove.core import envelope as envelopes
from selfimprove.core.topics import STAGES, Topics
from selfimprove.v2 import stages_pb2 as s
from selfimprove.v2.common_pb2 import ArtifactRef, ModelRef, Stage, TaskSpec
from selfimprove.v2.envelope_pb2 import Envelope

HUGE_BYTES = 5 * 1024 * 1024
# Share of each kind (``huge`` is capped separately: every one is 5 MB through the broker twice).
WEIGHTS = {
    "random_bytes": 20,
    "truncated": 18,
    "mutated": 24,
    "wrong_payload": 10,
    "unknown_run": 10,
    "garbage_refs": 9,
    "empty": 5,
    "missing_field": 4,
}
FAKE_BASE = "fuzz-no-such-base-model"


@dataclass(frozen=True)
class Case:
    kind: str
    topic: str
    value: bytes | None
    key: bytes | None


def _ref(rng: random.Random) -> ArtifactRef:
    sha = rng.choice(["00" * 32, "zz", "", f"{rng.getrandbits(256):064x}"])
    uri = rng.choice(["s3://selfimprove/runs/nope/manifest.json", "s3://other/x", "file:///etc/passwd", ""])
    return ArtifactRef(uri=uri, sha256=sha, bytes=rng.randrange(0, 1 << 40), media_type="x/fuzz")


def _model(rng: random.Random) -> ModelRef:
    return ModelRef(base=FAKE_BASE, base_sha256="00" * 32, adapter=_ref(rng), version="fuzz")


def payloads(rng: random.Random) -> dict[str, object]:
    """One valid-looking message of every payload type, with references that point nowhere."""
    task = TaskSpec(name="arithmetic", params_json="{}")
    return {
        "acquire_command": s.AcquireCommand(policy=_model(rng), task=task, num_prompts=2, num_shards=1),
        "acquire_result": s.AcquireResult(samples=_ref(rng)),
        "select_command": s.SelectCommand(shards=[_ref(rng)], policy=_model(rng)),
        "select_result": s.SelectResult(dataset=_ref(rng)),
        "train_command": s.TrainCommand(policy=_model(rng), datasets=[_ref(rng)], method=1),
        "train_result": s.TrainResult(candidate=_model(rng), loss_curve=_ref(rng)),
        "evaluate_command": s.EvaluateCommand(
            candidate=_model(rng), incumbent=_model(rng), suites=[s.EvalSuite(name="dev", dev_size=2)]
        ),
        "evaluate_result": s.EvaluateResult(details=_ref(rng)),
        "refine_command": s.RefineCommand(
            incumbent=_model(rng), task=task, dev_size=2, strategies=["greedy"]
        ),
        "refine_result": s.RefineResult(chosen="greedy", targets=_ref(rng)),
        "stage_failure": s.StageFailure(error_type="Fuzz", message="fuzz"),
        "decision": s.Decision(kind=s.Decision.KIND_PROMOTE, model=_model(rng), reason="fuzz"),
        "run_control": s.RunControl(action=s.RunControl.ACTION_STOP, reason="fuzz"),
    }


def expected_payload(topic: str, topics: Topics) -> str:
    """The payload a topic carries (``decision`` for the control topic).

    >>> expected_payload("p.cmd.train", Topics("p")), expected_payload("p.evt.control", Topics("p"))
    ('train_command', 'decision')
    """
    for stage, name in STAGES.items():
        if topic == topics.command(stage):
            return f"{name}_command"
        if topic == topics.result(stage):
            return f"{name}_result"
    return "decision"


def envelope(rng: random.Random, payload: str, run_id: str | None = None) -> Envelope:
    stage = rng.choice([*STAGES, Stage.STAGE_CONTROL])
    message = payloads(rng)[payload]
    env = envelopes.make(
        run_id=run_id or f"fuzz-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
        iteration=rng.choice([0, 1, 2, 999]),
        stage=stage,
        producer="fuzz",
        attempt=rng.choice([1, 1, 2]),
        event_id=str(uuid.UUID(int=rng.getrandbits(128))),
        **{payload: message},
    )
    env.time.FromSeconds(1_700_000_000 + rng.randrange(10**6))  # reproducible bytes
    return env


def would_start_run(value: bytes | None) -> bool:
    """Whether the controller would start a run for this control-topic message (left out of the suite).

    >>> would_start_run(envelopes.encode(envelopes.make(run_id="r", iteration=0, stage=0,
    ...     producer="x", run_control=s.RunControl(action=s.RunControl.ACTION_START))))
    True
    >>> would_start_run(b"junk")
    False
    """
    try:
        env = envelopes.decode(value)
    except envelopes.EnvelopeError:
        return False
    return env.WhichOneof("payload") == "run_control" and env.run_control.action != s.RunControl.ACTION_STOP


def one(rng: random.Random, kind: str, topic: str, topics: Topics) -> bytes | None:
    right = expected_payload(topic, topics)
    valid = envelopes.encode(envelope(rng, right))
    if kind == "random_bytes":
        return rng.randbytes(rng.randrange(1, 600))
    if kind == "truncated":
        return valid[: rng.randrange(1, len(valid))]
    if kind == "mutated":
        data = bytearray(valid)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == "wrong_payload":
        wrong = rng.choice([p for p in payloads(rng) if p != right and p != "run_control"])
        return envelopes.encode(envelope(rng, wrong))
    if kind in ("unknown_run", "garbage_refs"):
        run = rng.choice(["fuzz-unknown", "../../etc", "x" * 200, "run-" + rng.randbytes(3).hex()])
        return envelopes.encode(envelope(rng, right, run_id=run if kind == "unknown_run" else None))
    if kind == "empty":
        return rng.choice([None, b""])
    if kind == "missing_field":
        env = envelope(rng, right)
        env.ClearField(rng.choice(["event_id", "run_id", "payload"]))
        return envelopes.encode(env)
    if kind == "huge":
        env = envelope(rng, right)
        text = "What is 7 + 8? " * (HUGE_BYTES // 15)  # a 5 MB prompt
        if right == "acquire_command":
            env.acquire_command.task.params_json = json.dumps({"prompt": text})
        else:
            env.producer = text
        return envelopes.encode(env)
    raise ValueError(f"unknown fuzz kind {kind!r}")


def generate(rng: random.Random, topics: Topics, n: int, huge: int = 0) -> list[Case]:
    """``n`` cases spread over every command, result and control topic (``huge`` of them 5 MB)."""
    names = topics.all()
    kinds = [k for k, w in WEIGHTS.items() for _ in range(w)]
    cases: list[Case] = []
    while len(cases) < n:
        kind = "huge" if len(cases) < huge else rng.choice(kinds)
        topic = names[len(cases) % len(names)]
        value = one(rng, kind, topic, topics)
        if would_start_run(value):  # the evaluator takes run_control from any of its topics
            continue
        key = rng.choice([None, b"", b"fuzz", rng.randbytes(8)])
        if value is None and key is None:
            key = b""  # a record needs a key or a value: an empty value with an empty key
        cases.append(Case(kind, topic, value, key))
    return cases
