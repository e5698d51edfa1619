"""The group leader's assignor records topics it could not assign (no partition metadata), so the
consume loop rejoins once they are back; a complete assignment records none."""

from __future__ import annotations

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from selfimprove.core.assignor import MetadataGaps, watched_round_robin

pytestmark = pytest.mark.unit


class Cluster:
    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)


def members(*topics: str) -> dict[str, ConsumerProtocolMemberMetadata]:
    return {"m1": ConsumerProtocolMemberMetadata(0, list(topics), b"")}


def test_a_topic_without_metadata_is_recorded_and_assigned_to_nobody():
    gaps = MetadataGaps()
    assignor = watched_round_robin(gaps)
    assert assignor.name == "roundrobin"  # members running older code agree on the protocol
    cluster = Cluster({"t.evt.train": {0, 1}})
    out = assignor.assign(cluster, members("t.evt.train", "t.evt.refine"))
    assigned = {topic for topic, _ in out["m1"].assignment}
    assert assigned == {"t.evt.train"}
    assert gaps.missing == {"t.evt.refine"}
    assert gaps.filled(cluster.partitions_for_topic) == []  # still unknown: no rejoin yet
    cluster.partitions["t.evt.refine"] = {0, 1, 2, 3}
    assert gaps.filled(cluster.partitions_for_topic) == ["t.evt.refine"] and not gaps.missing


def test_a_complete_assignment_records_no_gap():
    gaps = MetadataGaps({"stale"})
    assignor = watched_round_robin(gaps)
    out = assignor.assign(Cluster({"a": {0}, "b": {0, 1}}), members("a", "b"))
    assert sorted(out["m1"].assignment) == [("a", [0]), ("b", [0, 1])]
    assert gaps.missing == set()
