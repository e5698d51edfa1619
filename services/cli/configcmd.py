"""``selfimprove config``: the run config's JSON Schema, and a check of a config file.

    selfimprove config schema > docs/run-config.schema.json   # editors validate and complete with it
    selfimprove config check configs/demo.yaml                # exit 0 and a summary, or 2 and the errors

``check`` reads the file as ``selfimprove run`` does (the same data-file paths made absolute, the same
validation, the data and seed files read), but starts nothing and needs no services.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True, help="The run config: its JSON Schema, and a check of a file.")

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def run_config_schema() -> dict[str, Any]:
    """The JSON Schema of the run config (:class:`~selfimprove.evaluator.config.RunConfig`).

    >>> schema = run_config_schema()
    >>> schema["$schema"], schema["title"], "budget" in schema["properties"]
    ('https://json-schema.org/draft/2020-12/schema', 'selfimprove run config', True)
    """
    from selfimprove.evaluator.config import RunConfig

    schema = RunConfig.model_json_schema()
    schema.pop("title", None)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "selfimprove run config",
        "description": "A run of the self-improvement loop (docs/run-config.md). Every field is optional; "
        "unknown fields are refused.",
        **schema,
    }


def schema_text() -> str:
    """The schema as ``config schema`` prints it and ``docs/run-config.schema.json`` holds it."""
    return json.dumps(run_config_schema(), indent=2) + "\n"


def summary(cfg) -> str:
    """One line naming what a valid config runs.

    >>> from selfimprove.evaluator.config import RunConfig
    >>> summary(RunConfig.model_validate({"run_id": "r1", "budget": {"iterations": 2}}))
    'run id r1, task arithmetic, label mode verified, training sft, budget: 2 iterations, 3600 s, 10000000 tokens'
    """
    run = f"run id {cfg.run_id}" if cfg.run_id else "run id assigned at start"
    b = cfg.budget
    return (
        f"{run}, task {cfg.task.name}, label mode {cfg.label_mode}, training {cfg.training.method}, "
        f"budget: {b.iterations} iterations, {b.wall_time_s:g} s, {b.tokens} tokens"
    )


@app.command("schema")
def schema_cmd() -> None:
    """Print the run config's JSON Schema (draft 2020-12)."""
    typer.echo(schema_text(), nl=False)


@app.command("check")
def check_cmd(
    file: Annotated[Path, typer.Argument(help="Run config YAML.", show_default=False)],
) -> None:
    """Validate a run config as `selfimprove run` would, data files included, starting nothing."""
    import yaml

    from selfimprove.cli.run import prepare_config
    from selfimprove.evaluator.config import ConfigError, RunConfig

    try:
        text = prepare_config(file, None, None, None)
    except (ConfigError, typer.BadParameter) as exc:
        message = exc.message if isinstance(exc, typer.BadParameter) else str(exc)
        typer.echo(f"error: {file}: {message}", err=True)
        raise typer.Exit(2) from None
    cfg = RunConfig.model_validate(yaml.safe_load(text))
    typer.echo(f"ok: {file}: {summary(cfg)}")
