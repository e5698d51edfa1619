"""``selfimprove generate``: ask the refinement service (gRPC) for an answer.

selfimprove generate "What is 48 + 27?"
selfimprove generate --strategy self_consistency@5 --address refinement:50051 --tls-ca ca.pem --json "..."
selfimprove --token-file token generate --tls-ca ca.pem --tls-cert me.pem --tls-key me.key "..."
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def generate_cmd(
    prompt: Annotated[str, typer.Argument(help="The prompt (one user message).")],
    strategy: Annotated[
        str,
        typer.Option(
            help="greedy, self_consistency@k, best_of_n@n, self_refine@r or prompt_ensemble@k; empty: the server's."
        ),
    ] = "",
    address: Annotated[
        str | None,
        typer.Option(
            help="host:port of the refinement service [env SELFIMPROVE_REFINEMENT_ADDRESS, else the local "
            "loop's (.stack/addresses.json), else 127.0.0.1:50051]."
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="CA certificate (PEM): connect with TLS.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Client certificate (PEM), for mutual TLS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Client private key (PEM).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="0: the server's default.")] = 0,
    temperature: Annotated[float, typer.Option(help="0: the server's default.")] = 0.0,
    seed: Annotated[int, typer.Option(help="0: unseeded.")] = 0,
    stream: Annotated[
        bool, typer.Option(help="Use GenerateStream and print the text as it arrives.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 300.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
) -> None:
    """Generate an answer with the served model and strategy."""
    import grpc
    from google.protobuf.json_format import MessageToDict

    from selfimprove.cli.control import channel as open_channel
    from selfimprove.cli.control import read_pem, serving_target
    from selfimprove.v2 import refinement_pb2 as pb
    from selfimprove.v2 import refinement_pb2_grpc as pb_grpc

    request = pb.GenerateRequest(
        prompt=prompt, strategy=strategy, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
    )
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both or neither", param_hint="--tls-cert and --tls-key")
    client = (
        (read_pem(tls_cert, "--tls-cert"), read_pem(tls_key, "--tls-key")) if tls_cert and tls_key else None
    )
    ca = read_pem(tls_ca, "--tls-ca") if tls_ca else None
    channel = open_channel(serving_target(address), ca, client)
    stub = pb_grpc.RefinementServiceStub(channel)
    try:
        if stream:
            final = None
            for part in stub.GenerateStream(pb.GenerateStreamRequest(request=request), timeout=timeout):
                if part.HasField("final"):
                    final = part.final
                elif not json_out:
                    typer.echo(part.text_delta, nl=False)
            if not json_out:
                typer.echo("")
            response = final or pb.GenerateResponse()
        else:
            response = stub.Generate(request, timeout=timeout)
    except grpc.RpcError as exc:
        typer.echo(f"error: {exc.code().name}: {exc.details()}", err=True)
        raise typer.Exit(1) from None
    finally:
        channel.close()
    if json_out:
        typer.echo(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return
    typer.echo(f"answer: {response.answer or '(none)'}")
    if not stream:
        typer.echo(response.text)
    typer.echo(
        f"[{response.strategy} · {response.model_version} · {response.completion_tokens} tokens · "
        f"{response.seconds:.2f} s]",
        err=True,
    )
