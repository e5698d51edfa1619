"""TEST HOOK: die like SIGKILL at a named point of the controller, to test recovery.

``SELFIMPROVE_EVALUATOR_CRASH_AT=<point>[:<payload>]``, points: ``after_consume`` (a result applied
in memory, nothing published), ``before_commit`` (outputs published and snapshot written, input not
committed), ``after_promote`` (a promotion published, snapshot not written). ``<payload>`` limits it to
one input kind, e.g. ``after_consume:evaluate_result``. Unset in production.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
POINTS = ("after_consume", "before_commit", "after_promote")


class CrashHooks:
    def __init__(self, spec: str = "") -> None:
        point, _, payload = spec.partition(":")
        if point and point not in POINTS:
            raise ValueError(f"SELFIMPROVE_EVALUATOR_CRASH_AT: unknown point {point!r}; use one of {POINTS}")
        self.point, self.payload = point, payload

    def at(self, point: str, payload: str = "") -> None:
        if self.point == point and (not self.payload or self.payload == payload):
            log.warning("test hook: crashing at %s (%s)", point, payload)
            logging.shutdown()
            os._exit(137)
