"""Topic names of the loop: one command topic per stage, one result topic per stage, decisions.

Every topic has a dead-letter twin ``<topic>.dlq``. Names carry a configurable prefix so that several
deployments (or tests) can share one broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfimprove.v2.common_pb2 import Stage

STAGES: dict[int, str] = {
    Stage.STAGE_ACQUIRE: "acquire",
    Stage.STAGE_SELECT: "select",
    Stage.STAGE_TRAIN: "train",
    Stage.STAGE_EVALUATE: "evaluate",
    Stage.STAGE_REFINE: "refine",
}
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class Topics:
    """Topic names under one prefix.

    >>> Topics("si").command(Stage.STAGE_TRAIN)
    'si.cmd.train'
    >>> Topics("si").dlq("si.cmd.train")
    'si.cmd.train.dlq'
    """

    prefix: str = "selfimprove"

    def command(self, stage: int) -> str:
        return f"{self.prefix}.cmd.{STAGES[stage]}"

    def result(self, stage: int) -> str:
        return f"{self.prefix}.evt.{STAGES[stage]}"

    @property
    def control(self) -> str:
        """Run control and evaluator decisions: the run's own log."""
        return f"{self.prefix}.evt.control"

    @staticmethod
    def dlq(topic: str) -> str:
        return topic + DLQ_SUFFIX

    def all(self) -> list[str]:
        """Every topic of the loop, without the dead-letter twins."""
        names = [self.command(s) for s in STAGES] + [self.result(s) for s in STAGES]
        return [*names, self.control]
