"""The latest progress each stage shard reported, for the run status (``RunStatus.progress``).

Kept in the controller's memory only: progress is advisory, so it is neither in the run's snapshot
nor in its decisions, and a controller restart starts with an empty board that fills as the stages
report again. Of two reports for one shard the later attempt wins, then the one further along, so a
redelivered or late event never moves a bar backwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from selfimprove.v2.control_pb2 import ShardProgress
from selfimprove.v2.envelope_pb2 import Envelope


@dataclass
class ProgressBoard:
    clock: Callable[[], float] = time.time
    # run -> (iteration, stage, shard) -> latest report
    runs: dict[str, dict[tuple[int, int, int], ShardProgress]] = field(default_factory=dict)

    def note(self, env: Envelope) -> None:
        """Record a ``stage_progress`` event (those of earlier iterations of its run are dropped).

        >>> from selfimprove.v2.stages_pb2 import StageProgress
        >>> board = ProgressBoard(clock=lambda: 5.0)
        >>> def report(done, attempt=1):
        ...     return Envelope(run_id="r", iteration=1, stage=3, shard=0, attempt=attempt,
        ...                     stage_progress=StageProgress(done=done, total=10, unit="steps"))
        >>> board.note(report(4)); board.note(report(2)); board.current("r", 1, 3)[0].progress.done
        4
        >>> board.note(report(1, attempt=2)); board.current("r", 1, 3)[0].progress.done
        1
        >>> board.current("r", 1, 4), board.current("other", 1, 3)
        ([], [])
        """
        shards = self.runs.setdefault(env.run_id, {})
        for key in [k for k in shards if k[0] < env.iteration]:
            del shards[key]
        key = (env.iteration, env.stage, env.shard)
        old = shards.get(key)
        p = env.stage_progress
        if old is not None and (old.attempt, old.progress.done) > (env.attempt, p.done):
            return
        shards[key] = ShardProgress(
            stage=env.stage, shard=env.shard, attempt=env.attempt, progress=p, received_at=self.clock()
        )

    def current(self, run_id: str, iteration: int, stage: int) -> list[ShardProgress]:
        """The reports of the run's stage in ``iteration``, by shard."""
        shards = self.runs.get(run_id, {})
        return [shards[k] for k in sorted(shards) if k[0] == iteration and k[1] == stage]

    def forget(self, run_id: str) -> None:
        self.runs.pop(run_id, None)
