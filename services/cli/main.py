"""Entry point of the ``selfimprove`` command. Commands live in their own modules and import
heavy libraries (torch, transformers) only when they run, so ``--help`` is instant."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="A language model that improves itself.")


@app.callback()
def _options(
    token_file: str | None = typer.Option(
        None,
        "--token-file",
        envvar="SELFIMPROVE_TOKEN_FILE",
        help="File holding a bearer token sent to the control plane and the serving endpoint.",
    ),
) -> None:
    """A language model that improves itself."""
    if token_file:
        import os

        os.environ["SELFIMPROVE_TOKEN_FILE"] = token_file


def _register() -> None:
    from selfimprove.cli import evalcmd, generate
    from selfimprove.cli import up as up_cmd

    app.command("up")(up_cmd.up)
    app.command("eval")(evalcmd.eval_cmd)
    __import__("selfimprove.cli.status", fromlist=["register"]).register(app)  # status and gc
    app.command("generate")(generate.generate_cmd)
    from selfimprove.cli import run as run_cmd

    app.command("run")(run_cmd.run_cmd)
    from selfimprove.cli import report as report_cmd

    app.command("report")(report_cmd.report_cmd)
    from selfimprove.cli import export

    app.command("export")(export.export_cmd)
    app.add_typer(__import__("selfimprove.cli.dlq", fromlist=["app"]).app, name="dlq")
    app.add_typer(__import__("selfimprove.cli.inspect", fromlist=["app"]).app, name="inspect")
    app.add_typer(__import__("selfimprove.cli.init", fromlist=["app"]).app, name="init")
    app.add_typer(__import__("selfimprove.cli.configcmd", fromlist=["app"]).app, name="config")


_register()

if __name__ == "__main__":
    app()
