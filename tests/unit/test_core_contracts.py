"""Envelopes, topics, keys and the generated contracts."""

import subprocess
import sys

import pytest

from selfimprove.core import envelope as envelopes
from selfimprove.core.keys import attempt_prefix, split_uri
from selfimprove.core.topics import Topics
from selfimprove.v2.common_pb2 import ArtifactRef, Stage
from selfimprove.v2.stages_pb2 import TrainCommand

pytestmark = pytest.mark.unit


def test_envelope_round_trip_keeps_every_field():
    env = envelopes.make(
        run_id="r1",
        iteration=3,
        stage=Stage.STAGE_TRAIN,
        attempt=2,
        shard=1,
        causation_id="c",
        producer="test/1",
        train_command=TrainCommand(datasets=[ArtifactRef(uri="s3://b/k", sha256="ab", bytes=3)], seed=7),
    )
    back = envelopes.decode(envelopes.encode(env))
    assert back == env
    assert envelopes.payload_name(back) == "train_command"
    assert back.train_command.datasets[0].uri == "s3://b/k"
    assert back.time.seconds > 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty message"),
        (b"\xff\xff\xff\xff", "not an Envelope"),
        (envelopes.Envelope(run_id="r").SerializeToString(), "no event_id"),
        (envelopes.Envelope(event_id="e").SerializeToString(), "no run_id"),
        (envelopes.Envelope(event_id="e", run_id="r").SerializeToString(), "no payload"),
    ],
)
def test_decode_names_what_is_wrong(data, message):
    with pytest.raises(envelopes.EnvelopeError, match=message):
        envelopes.decode(data)


def test_make_requires_exactly_one_payload():
    with pytest.raises(ValueError, match="exactly one payload"):
        envelopes.make(run_id="r", iteration=0, stage=Stage.STAGE_TRAIN, producer="p")


def test_caused_by_links_to_its_cause():
    cause = envelopes.make(
        run_id="r", iteration=1, stage=2, producer="p", attempt=3, train_command=TrainCommand()
    )
    follow = envelopes.caused_by(cause, "q", train_command=TrainCommand(seed=1))
    assert (follow.run_id, follow.iteration, follow.attempt, follow.causation_id) == (
        "r",
        1,
        3,
        cause.event_id,
    )
    assert follow.event_id != cause.event_id


def test_topics_cover_every_stage_and_dlq():
    topics = Topics("x").all()
    assert len(topics) == len(set(topics)) == 11
    assert Topics.dlq("x.cmd.train") == "x.cmd.train.dlq"


def test_attempt_prefix_and_uri_validation():
    assert attempt_prefix("r", 1, "acquire", 2, 1) == "runs/r/iter-001/acquire/shard-002/attempt-1/"
    for bad in ("", "a/b", ".hidden", "x" * 65):
        with pytest.raises(ValueError, match="invalid run id"):
            attempt_prefix(bad, 0, "acquire", 0, 1)
    with pytest.raises(ValueError, match="attempt >= 1"):
        attempt_prefix("r", 0, "acquire", 0, 0)
    with pytest.raises(ValueError, match="not an artifact uri"):
        split_uri("http://x/y")


def test_generated_contracts_are_fresh():
    """Fails when protos/ changed without `make protos`."""
    result = subprocess.run(
        [sys.executable, "-m", "selfimprove.core.protogen", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
