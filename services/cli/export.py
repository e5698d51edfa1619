"""``selfimprove export RUN --format peft|merged --out DIR``: the run's incumbent as a PEFT adapter
folder, or merged into the base as a Hugging Face model folder that plain transformers loads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer


def export_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id (or run:RUN_ID@ITER for a candidate).")],
    format: Annotated[str, typer.Option("--format", help="peft or merged.")] = "peft",
    out: Annotated[Path | None, typer.Option(help="Output folder (default exports/RUN-FORMAT).")] = None,
    address: Annotated[str | None, typer.Option(help="Evaluator control plane host:port.")] = None,
) -> None:
    """Write the incumbent as a PEFT adapter folder or a merged model folder."""
    from selfimprove.cli.modelref import ModelRefError, resolve
    from selfimprove.runtime.adapters import is_model_folder

    if format not in ("peft", "merged"):
        raise typer.BadParameter("choose peft or merged", param_hint="--format")
    ref = run_id if run_id.startswith("run:") else f"run:{run_id}"
    try:
        base, adapter = resolve(ref, address)
    except ModelRefError as exc:
        raise typer.BadParameter(str(exc)) from None
    dest = out or Path("exports") / f"{ref[4:].replace('@', '-iter-')}-{format}"
    if dest.exists() and any(dest.iterdir()):
        raise typer.BadParameter(f"{dest} exists and is not empty; refusing to overwrite", param_hint="--out")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if format == "peft":
        if adapter is None:
            raise typer.BadParameter(
                f"{ref} is the base model: it has no adapter to export; use --format merged"
            )
        if is_model_folder(adapter):
            raise typer.BadParameter(
                f"{ref} was fully fine-tuned: it is a whole model, not an adapter; use --format merged"
            )
        shutil.copytree(adapter, tmp)
    else:
        from selfimprove.runtime.models import load_model

        model, tokenizer = load_model(base, [adapter] if adapter else [], merge=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)
    typer.echo(str(dest))
