"""``selfimprove export RUN --format peft|merged --out DIR``: the run's incumbent as a PEFT adapter
folder, or merged into the base as a Hugging Face model folder that plain transformers loads.

    selfimprove export run-1a2b --format peft     # exports/run-1a2b-peft: adapter + README.md
    selfimprove export run-1a2b@3 --format merged # the candidate of iteration 3, merged

What each folder holds, and why the adapter names the hub's base: :mod:`selfimprove.cli.exportfolder`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer


def run_model(ref: str, address: str | None) -> tuple[str, Path | None, int | None]:
    """``(base, adapter folder or None, iteration)`` of a ``run:`` reference, the adapter fetched."""
    from selfimprove.cli.modelref import local_model, model_dict, parse

    parsed = parse(ref)
    assert parsed is not None, ref
    model = model_dict(*parsed, address=address)
    base, adapter = local_model(model)
    return base, adapter, model.get("iteration", parsed[1])


def export_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id (or run:RUN_ID@ITER for a candidate).")],
    format: Annotated[str, typer.Option("--format", help="peft or merged.")] = "peft",
    out: Annotated[Path | None, typer.Option(help="Output folder (default exports/RUN-FORMAT).")] = None,
    address: Annotated[str | None, typer.Option(help="Evaluator control plane host:port.")] = None,
) -> None:
    """Write the incumbent as a PEFT adapter folder or a merged model folder, each with a README.md."""
    from selfimprove.cli.exportfolder import base_info, model_card, write_merged, write_peft
    from selfimprove.cli.modelref import ModelRefError
    from selfimprove.runtime.adapters import is_model_folder

    if format not in ("peft", "merged"):
        raise typer.BadParameter("choose peft or merged", param_hint="--format")
    ref = run_id if run_id.startswith("run:") else f"run:{run_id}"
    try:
        base, adapter, iteration = run_model(ref, address)
    except ModelRefError as exc:
        raise typer.BadParameter(str(exc)) from None
    dest = out or Path("exports") / f"{ref[4:].replace('@', '-iter-')}-{format}"
    if dest.exists() and any(dest.iterdir()):
        raise typer.BadParameter(f"{dest} exists and is not empty; refusing to overwrite", param_hint="--out")
    if format == "peft":
        if adapter is None:
            raise typer.BadParameter(
                f"{ref} is the base model: it has no adapter to export; use --format merged"
            )
        if is_model_folder(adapter):
            raise typer.BadParameter(
                f"{ref} was fully fine-tuned: it is a whole model, not an adapter; use --format merged"
            )
    info = base_info(base)
    card = model_card(info, ref[4:].partition("@")[0], iteration, format, trained=adapter is not None)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        if format == "peft":
            assert adapter is not None
            write_peft(adapter, tmp, info, card)
        else:
            write_merged(base, adapter, tmp, card)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)
    typer.echo(str(dest))
