"""Verifiers for loop tests whose model is random: ``any_reply`` accepts every reply, so a tiny
random model's samples pass verification and reach selection, training and evaluation (the loop's
plumbing is what such a test checks, never quality)."""

from __future__ import annotations


def any_reply(reply: str, answer: str) -> bool:
    """Every reply is right.

    >>> any_reply("noise", "42")
    True
    """
    return True
