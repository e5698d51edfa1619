"""Progress displays of the commands: bars with count, rate and time left, and spinners for work of
unknown length. Both draw on stderr, so stdout holds only a command's result (``--json``), and draw
nothing when ``quiet``.

    with bars(quiet=False) as progress:
        task = progress.add_task("two_digit_addition", total=200)
        evaluate_set(engine, s, progress=lambda k: progress.advance(task, k))
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class CountColumn(ProgressColumn):
    """``done/total unit``; nothing for a task without a total (a status line)."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        unit = task.fields.get("unit", "")
        return Text(f"{int(task.completed)}/{int(task.total)} {unit}".rstrip(), style="progress.download")


class RateColumn(ProgressColumn):
    """Units per second over the recent past (``fields["unit"]``); nothing without a total."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        unit = task.fields.get("unit", "it")
        if task.speed is None:
            return Text(f"- {unit}/s", style="progress.data.speed")
        return Text(f"{task.speed:.2f} {unit}/s", style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """Time left at the current rate: ``eta 0:01:23``; nothing without a total or a rate yet."""

    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        if task.finished:
            return Text("done", style="progress.remaining")
        left = task.time_remaining
        if left is None:
            return Text("eta -:--:--", style="progress.remaining")
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"eta {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def stderr(quiet: bool = False) -> Console:
    """The console progress draws on: stderr, silent when ``quiet``."""
    return Console(stderr=True, quiet=quiet)


def bars(quiet: bool = False, console: Console | None = None) -> Progress:
    """A progress display of several bars (one task each): description, bar, done/total, rate,
    elapsed and remaining time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        CountColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        EtaColumn(),
        console=console or stderr(quiet),
        disable=quiet,
    )


@contextlib.contextmanager
def spinner(what: str, quiet: bool = False) -> Iterator[None]:
    """A spinner saying ``what`` is being done, for work whose length is unknown."""
    console = stderr(quiet)
    if quiet:
        yield
        return
    with console.status(what):
        yield


def quiet_loading() -> None:
    """Turn off the Hugging Face libraries' own tqdm bars (weights loading), which would tear
    through these displays."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # a CLI-only install: nothing loads weights here
        return
    hf_logging.disable_progress_bar()
