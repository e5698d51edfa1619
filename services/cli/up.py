"""``selfimprove up``: run the local stack in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer


def up(
    prometheus: Annotated[bool, typer.Option(help="Also run Prometheus (Debian package).")] = True,
    data_dir: Annotated[Path, typer.Option(help="Data and logs; kept across runs.")] = Path(".stack"),
) -> None:
    """Start the object store, the broker and Prometheus on loopback; print how to reach them."""
    from selfimprove.core.stack import LocalStack, StackError

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    stack = LocalStack(root=data_dir, prometheus=prometheus)
    try:
        typer.echo(f"starting the local stack in {data_dir.resolve()} ...")
        stack.start()
        typer.echo(f"kafka      {stack.kafka_bootstrap}")
        typer.echo(f"s3         http://{stack.s3_endpoint}  (bucket {stack.bucket})")
        if stack.prometheus_url:
            typer.echo(f"prometheus {stack.prometheus_url}")
        typer.echo(f"logs       {data_dir.resolve() / 'logs'}\n")
        for key, value in stack.env().items():
            typer.echo(f"export {key}={value}")
        typer.echo("\nrunning; Ctrl-C stops it")
        while not (dead := stack.dead()):
            time.sleep(1)
        typer.echo(f"stopped unexpectedly: {', '.join(dead)} (see the logs)", err=True)
        raise typer.Exit(1)
    except StackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("\nstopping ...")
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
