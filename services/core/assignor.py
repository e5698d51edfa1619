"""The partition assignor every consumer group uses: aiokafka's round robin, watched for gaps.

A group's leader assigns the partitions of the topics it can describe. One assigned while the broker
could not describe a topic (Tansu answers metadata requests with errors during an object-store
outage) gives that topic's partitions to nobody, and nothing rejoins by itself when the topic comes
back: the group would never read it (a controller that never sees one stage's results). The leader
here records which subscribed topics had no partition metadata (:class:`MetadataGaps`), and the
consume loop rejoins the group as soon as its metadata shows partitions for one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor


@dataclass
class MetadataGaps:
    """Subscribed topics the last assignment this member made (as leader) could not see.

    >>> gaps = MetadataGaps({"t.evt.refine"})
    >>> gaps.filled(lambda topic: None), gaps.filled(lambda topic: {0, 1})
    ([], ['t.evt.refine'])
    >>> gaps.missing, gaps.filled(lambda topic: {0})
    (set(), [])
    """

    missing: set[str] = field(default_factory=set)

    def filled(self, partitions_for_topic: Callable[[str], set[int] | None]) -> list[str]:
        """The missing topics, once one of them has partitions (then the group must rejoin, and the
        gaps are forgotten); else nothing."""
        if not any(partitions_for_topic(topic) for topic in self.missing):
            return []
        missing, self.missing = sorted(self.missing), set()
        return missing


def watched_round_robin(gaps: MetadataGaps) -> type[RoundRobinPartitionAssignor]:
    """A round-robin assignor (same protocol name, so members agree) that records ``gaps``."""

    class WatchedRoundRobin(RoundRobinPartitionAssignor):
        @classmethod
        def assign(cls, cluster, member_metadata):
            topics: set[str] = set()
            for metadata in member_metadata.values():
                topics.update(metadata.subscription)
            gaps.missing = {topic for topic in topics if not cluster.partitions_for_topic(topic)}
            return super().assign(cluster, member_metadata)

    return WatchedRoundRobin
