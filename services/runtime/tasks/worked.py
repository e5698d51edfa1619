"""Worked replies for two-operand sums and differences: the tens, then the ones.

A worked reply states each step as an equation: "61 - 20 = 41, 41 - 3 = 38, so the answer is 38."
for ``61 - 23``. A difference with a negative result first turns itself round, then works out the
larger operand less the smaller: "23 - 61 = -(61 - 23): 61 - 20 = 41, 41 - 3 = 38, so the answer is
-38." (the reply starts from the question's own first operand, as every other reply does, and the
sign is decided before any step). The task gives the plan (which two sub-questions to ask); the model answers
each sub-question as a plain prompt, and the reply is written from its own two answers. In a verified
run a reply is kept only when its final answer is right and every equation in it is true (the
arithmetic verifier's :func:`~selfimprove.runtime.tasks.arithmetic.equations`), so a worked reply
never teaches a false step; a label-free run keeps it when its final answer is the prompt's label,
and its steps are not checked. ``task.tactics.worked_from_iteration`` turns this on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REPLY = "{first} {op} {tens} = {mid}, {mid} {op} {ones} = {d}, so the answer is {answer}."
TURN = "{small} - {first} = -({first} - {small}): "


@dataclass(frozen=True)
class Plan:
    """The two sub-questions of a worked reply: ``first op tens``, then (its answer) ``op ones``.

    >>> p = Plan(op="-", first=61, tens=20, ones=3, negate=True)
    >>> p.first_expression(), p.second_expression(41)
    ('61 - 20', '41 - 3')
    >>> p.reply(41, 38)
    '23 - 61 = -(61 - 23): 61 - 20 = 41, 41 - 3 = 38, so the answer is -38.'
    """

    op: str
    first: int
    tens: int
    ones: int
    negate: bool = False

    def first_expression(self) -> str:
        return f"{self.first} {self.op} {self.tens}"

    def second_expression(self, mid: int) -> str:
        return f"{mid} {self.op} {self.ones}"

    def reply(self, mid: int, d: int) -> str:
        """The worked reply from the two steps' answers (whatever they are: checking is the verifier's)."""
        answer = -d if self.negate else d
        turn = TURN.format(small=self.tens + self.ones, first=self.first) if self.negate else ""
        return turn + REPLY.format(
            first=self.first, op=self.op, tens=self.tens, mid=mid, ones=self.ones, d=d, answer=answer
        )

    def answers(self) -> tuple[int, int]:
        """The two steps' right answers.

        >>> Plan(op="-", first=61, tens=20, ones=3, negate=True).answers()
        (41, 38)
        """
        sign = 1 if self.op == "+" else -1
        mid = self.first + sign * self.tens
        return mid, mid + sign * self.ones

    def solved(self) -> str:
        """The reply with every step right (what a solver would write; benchmarks compare against it).

        >>> Plan(op="+", first=47, tens=30, ones=6).solved()
        '47 + 30 = 77, 77 + 6 = 83, so the answer is 83.'
        """
        return self.reply(*self.answers())


def plan(meta: Mapping[str, Any]) -> Plan | None:
    """The plan of a problem from its ``operator`` and ``operands`` (an item's or a row's ``meta``);
    ``None`` unless it is a sum or difference of two non-negative numbers.

    >>> plan({"operator": "-", "operands": (23, 61)})
    Plan(op='-', first=61, tens=20, ones=3, negate=True)
    >>> plan({"operator": "+", "operands": [47, 36]}).solved()
    '47 + 30 = 77, 77 + 6 = 83, so the answer is 83.'
    >>> plan({"operator": "*", "operands": (4, 5)}) is None, plan({"operator": "+", "operands": (1, 2, 3)}) is None
    (True, True)
    """
    op, operands = meta.get("operator"), tuple(meta.get("operands") or ())
    if op not in ("+", "-") or len(operands) != 2 or min(operands) < 0:
        return None
    a, b = operands
    first, other = (a, b) if op == "+" else (max(a, b), min(a, b))
    return Plan(op=op, first=first, tens=other - other % 10, ones=other % 10, negate=op == "-" and a < b)
