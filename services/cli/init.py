"""``selfimprove init``: the one-shot jobs of a deployment, idempotent (docker-compose and Kubernetes run
them before the services; see docs/deploy.md).

    selfimprove init store                 # the artifact bucket (SELFIMPROVE_S3_*)
    selfimprove init topics                # every topic and its .dlq twin (SELFIMPROVE_KAFKA_*)
    selfimprove init topics --retention-ms 604800000 --dlq-retention-ms 1209600000 --control-retention-ms -1

Settings come from the environment, as for every service; a bad one is named and exits 2.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="One-shot set-up jobs: the bucket and the topics.")


@app.command("store")
def store_cmd(
    wait_s: Annotated[float, typer.Option(help="How long to wait for the object store to answer.")] = 120.0,
) -> None:
    """Create the artifact bucket (SELFIMPROVE_S3_BUCKET) unless it exists."""
    from selfimprove.core.provision import create_bucket
    from selfimprove.core.settings import SettingsError, StoreSettings, load

    try:
        settings = load(StoreSettings)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        created = create_bucket(settings, wait_s)
    except Exception as exc:  # noqa: BLE001 - a one-shot job reports any failure and exits non-zero
        typer.echo(f"error: bucket {settings.bucket!r} at {settings.endpoint}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"bucket {settings.bucket} {'created' if created else 'exists'} at {settings.endpoint}")


@app.command("topics")
def topics_cmd(
    retention_ms: Annotated[int, typer.Option(help="Retention of command and result topics.")] = 604_800_000,
    dlq_retention_ms: Annotated[int, typer.Option(help="Retention of dead-letter topics.")] = 1_209_600_000,
    control_retention_ms: Annotated[
        int, typer.Option(help="Retention of the control topic, the run's log (-1: forever).")
    ] = -1,
) -> None:
    """Create every topic of the loop and its .dlq twin that does not exist yet."""
    from selfimprove.core.provision import create_topics_sync, topic_specs
    from selfimprove.core.settings import KafkaSettings, SettingsError, load
    from selfimprove.core.topics import Topics

    try:
        settings = load(KafkaSettings)
        specs = topic_specs(
            Topics(settings.topic_prefix), retention_ms, dlq_retention_ms, control_retention_ms
        )
    except (SettingsError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        created = create_topics_sync(settings, specs)
    except Exception as exc:  # noqa: BLE001 - a one-shot job reports any failure and exits non-zero
        typer.echo(f"error: topics at {settings.bootstrap_servers}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{len(specs)} topics under {settings.topic_prefix!r} at {settings.bootstrap_servers}: "
        f"{len(created)} created, {len(specs) - len(created)} existed"
    )
