"""Malformed user inputs through the real entry points (``benchmarks/fuzz.py`` runs these beside the
bus fuzzing; ``tests/integration/test_fuzz_inputs.py`` runs them short).

- data files (``selfimprove.core.fuzzinputs.datafiles``): the task loader the acquisition service
  uses (``load_task("data", ...)``), ``selfimprove config check`` and ``selfimprove eval --task``;
- HTTP requests (``...httpreqs``) to a running OpenAI-compatible endpoint, then a valid request;
- corrupt model folders (``...modelfolders``): the engine loader and ``selfimprove eval --model``.

Every case ends as ``clear`` (refused with a message naming the file, row or field and what is
wrong), ``unclear`` (refused, but the message misses what it must name), ``crash`` (a traceback, an
exit status other than 2, a 5xx), or ``accepted``; only ``clear`` passes (and ``accepted`` where a
case expects it). The CLI cases run in an empty working directory, which must stay empty: nothing
half-written. Each runner returns ``{kind: Counter}`` per entry point and a list of failures.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from selfimprove.core.fuzzinputs import datafiles, httpreqs, modelfolders

Outcomes = dict[str, dict[str, Counter]]


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _cli(args: list[str], workdir: Path) -> tuple[int, str]:
    """``selfimprove ARGS`` in-process, in ``workdir``: its exit status and output (stdout and stderr)."""
    from typer.testing import CliRunner

    from selfimprove.cli.main import app

    with _cwd(workdir):
        done = CliRunner().invoke(app, args, env={"TERMINAL_WIDTH": "4000", "COLUMNS": "4000"})
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        return -1, f"{type(done.exception).__name__}: {done.exception}"
    out = done.output + (getattr(done, "stderr", "") if not done.output else "")
    return done.exit_code, " ".join(out.replace("│", " ").split())  # rich boxes the message


def _judge(status: str, message: str, needles: list) -> str:
    """``clear`` when a refusal's message holds every needle (a tuple: any one of its words)."""
    if status != "refused":
        return status
    folded = message.lower()
    found = all(any(w.lower() in folded for w in (n if isinstance(n, tuple) else (n,))) for n in needles if n)
    return "clear" if found else "unclear"


def _fresh(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    return path


def data_files(root: Path, rng: random.Random, per_kind: int = 1) -> tuple[Outcomes, list[str]]:
    """Every bad data file through the task loader, ``config check`` and ``eval --task``."""
    from selfimprove.runtime.tasks.datafile import DataFileError
    from selfimprove.runtime.tasks.registry import load_task

    table: Outcomes = defaultdict(lambda: defaultdict(Counter))
    failures: list[str] = []
    for i, case in enumerate(datafiles.generate(rng, per_kind)):
        folder = _fresh(root, f"data-{i:03d}")
        path = folder / case.filename
        if case.content is not None:
            path.write_bytes(case.content)
        needles = [case.filename, *case.expect]
        # a CSV's parser counts file lines (the header is line 1)
        row = [(f"row {case.row}", f"line {case.row + 1}")] if case.row else []
        verifier_kind = "verifier" in case.kind
        params = {**case.params, "path": str(path), "dev_share": 0.2}

        try:
            load_task("data", params)
            status, message = "accepted", ""
        except DataFileError as exc:
            status, message = "refused", str(exc)
        except Exception as exc:  # noqa: BLE001 - a crash is what this looks for
            status, message = "crash", f"{type(exc).__name__}: {exc}"
        results = {"loader": (_judge(status, message, needles + row), message)}

        config = folder / "run.yaml"
        config.write_text(yaml.safe_dump({"task": {"name": "data", "params": params}}))
        work = _fresh(folder, "cwd-check")
        code, out = _cli(["config", "check", str(config)], work)
        status = {0: "accepted", 2: "refused"}.get(code, "crash")
        results["config check"] = (_judge(status, out, needles + row), out)

        work = _fresh(folder, "cwd-eval")
        args = ["eval", "--task", str(path), "--model", str(folder / "no-model-here"), "--limit", "2"]
        args += ["--prompt-field", "question", "--answer-field", "answer", "--id-field", "id"]
        args += ["--verifier", case.params["verifier"]] if case.params["verifier"] else []
        code, out = _cli(args, work)
        if code == 2 and "no-model-here" in out:
            status = "accepted"  # the file passed: only the (missing) model stopped it
        else:
            status = {0: "accepted", 2: "refused"}.get(code, "crash")
        # the flag, not the file, names the verifier in ``eval``
        wanted = ["--verifier", *case.expect] if verifier_kind else needles + row
        results["eval --task"] = (_judge(status, out, wanted), out)

        for entry, (outcome, message) in results.items():
            table[case.kind][entry][outcome] += 1
            if outcome != "clear":
                failures.append(f"data file {case.kind} via {entry}: {outcome}: {message[:300]}")
        for work in (folder / "cwd-check", folder / "cwd-eval"):
            if any(work.iterdir()):
                failures.append(f"data file {case.kind}: files left behind in {work}: {os.listdir(work)}")
    return _plain(table), failures


def _plain(table: Outcomes) -> dict:
    return {k: {e: dict(c) for e, c in v.items()} for k, v in sorted(table.items())}


def _send(port: int, case: httpreqs.HttpCase, timeout: float = 30.0) -> tuple[int, dict | None]:
    """One raw HTTP/1.1 request; the status and the JSON body (0 and None when no answer came)."""
    headers = {"host": f"127.0.0.1:{port}", "connection": "close", **case.headers}
    chunked = headers.get("transfer-encoding") == "chunked"
    if not chunked:
        declared = len(case.body) + (1000 if case.disconnect else 0)
        headers["content-length"] = str(declared)
    head = f"{case.method} {case.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    body = case.body[: len(case.body) // 2] if case.disconnect else case.body
    if chunked:
        body = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 8192]), body[i : i + 8192]) for i in range(0, len(body), 8192)
        )
        body += b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # a server that refuses early may close while we send
            sock.sendall(head.encode() + b"\r\n" + body)
        if case.disconnect:
            return 0, None
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
    if not data:
        return 0, None
    status_line, _, rest = data.partition(b"\r\n")
    status = int(status_line.split()[1])
    _, _, payload = rest.partition(b"\r\n\r\n")
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, None


def _send_admitted(port: int, case: httpreqs.HttpCase, tries: int = 20) -> tuple[int, dict | None]:
    """:func:`_send`, again after a second while the service's rate limit answers 429 (the loop's
    gRPC fuzzing spends the shared token bucket just before)."""
    for _ in range(tries - 1):
        status, body = _send(port, case)
        if status != 429 or 429 in case.statuses:
            return status, body
        time.sleep(1.0)
    return _send(port, case)


def _openai_shape(body: dict | None) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and {
            "message",
            "type",
            "param",
            "code",
        }
        <= set(body["error"])
    )


def http(
    port: int,
    rng: random.Random,
    max_request_bytes: int,
    codes: Callable[[], Counter] | None = None,
) -> tuple[dict, list[str]]:
    """Every malformed request against the endpoint on ``port``, then a valid one. ``codes`` reads the
    service's request counter by code (``selfimprove_refinement_requests_total``): refusals must be
    counted, and none as ``INTERNAL``."""
    failures: list[str] = []
    table: dict[str, dict] = {}
    before = codes() if codes else Counter()
    cases = httpreqs.generate(rng, max_request_bytes)
    for case in cases:
        status, body = _send_admitted(port, case)
        if case.disconnect:
            outcome = "disconnected"
        elif status >= 500 or status == 0:
            outcome = "crash"
        elif not case.statuses:
            outcome = "accepted" if status == 200 else "unexpected"
        elif status in case.statuses and _openai_shape(body):
            err = body["error"] if body else {}
            text = f"{err.get('param')} {err.get('message')}"
            outcome = "clear" if case.names.lower() in text.lower() else "unclear"
        else:
            outcome = "unexpected"
        table[case.kind] = {"status": status, "outcome": outcome, "error": (body or {}).get("error")}
        if outcome not in ("clear", "accepted", "disconnected"):
            failures.append(f"HTTP {case.kind}: {outcome} {status} {json.dumps(body)[:300]}")
    time.sleep(0.5)  # the disconnected request's handler finishes
    status, body = _send_admitted(port, httpreqs.good(rng))
    table["good_request_after"] = {"status": status, "outcome": "accepted" if status == 200 else "crash"}
    if status != 200:
        failures.append(f"HTTP: a valid request after the fuzzing got {status}: {body}")
    figures: dict = {"cases": table}
    if codes is not None:
        delta = codes() - before
        figures["metric_codes"] = dict(delta)
        refused = sum(
            1 for c in cases if c.statuses and c.path.startswith("/v1/") and "completions" in c.path
        )
        if delta.get("INTERNAL", 0):
            failures.append(f"HTTP: {delta['INTERNAL']} requests counted as INTERNAL errors")
        counted = sum(v for k, v in delta.items() if k != "OK")
        if counted < refused:
            failures.append(f"HTTP: {refused} refusals sent to the generation endpoints, {counted} counted")
    return figures, failures


def model_folders(root: Path, rng: random.Random, good: Path) -> tuple[Outcomes, list[str]]:
    """Every corrupt copy of ``good`` through the engine loader and ``eval --model``."""
    from selfimprove.runtime.engine import make_engine
    from selfimprove.runtime.models import ModelNotFoundError

    task = root / "models-task.jsonl"
    task.write_text(
        "".join(json.dumps({"question": f"What is {i} + 1?", "answer": i + 1}) + "\n" for i in range(4))
    )
    table: Outcomes = defaultdict(lambda: defaultdict(Counter))
    failures: list[str] = []
    for case in modelfolders.generate(rng):
        folder = modelfolders.corrupt(case, good, root / f"model-{case.kind}")
        needles = [folder.name, case.expect]
        try:
            make_engine("transformers", base=str(folder), threads=1)
            status, message = "accepted", ""
        except ModelNotFoundError as exc:
            status, message = "refused", str(exc)
        except Exception as exc:  # noqa: BLE001 - a crash is what this looks for
            status, message = "crash", f"{type(exc).__name__}: {exc}"
        results = {"engine loader": (_judge(status, message, needles), message)}
        work = _fresh(root, f"cwd-model-{case.kind}")
        args = ["eval", "--model", str(folder), "--task", str(task), "--verifier", "numeric", "--limit", "2"]
        code, out = _cli(args + ["--threads", "1", "--json"], work)
        status = {0: "accepted", 2: "refused"}.get(code, "crash")
        results["eval --model"] = (_judge(status, out, [*needles, "--model"]), out)
        for entry, (outcome, message) in results.items():
            table[case.kind][entry][outcome] += 1
            if outcome != "clear":
                failures.append(f"model folder {case.kind} via {entry}: {outcome}: {message[:300]}")
        if any(work.iterdir()):
            failures.append(f"model folder {case.kind}: files left behind in {work}")
    return _plain(table), failures


def tiny_good_model(root: Path) -> Path:
    """A tiny random Qwen2 folder to corrupt (seconds; the SmolLM2 tokenizer)."""
    from selfimprove.runtime.tiny import tiny_model_folder

    return tiny_model_folder(root / "good-model", "qwen2", hidden=32)


def summary(table: dict) -> Counter:
    """Outcome counts over every kind and entry point."""
    out: Counter = Counter()
    for entries in table.values():
        for counts in entries.values():
            out.update(counts)
    return out


def run_all(
    root: Path, rng: random.Random, port: int | None, max_request_bytes: int, codes=None
) -> tuple[dict, list[str]]:
    """Data files, HTTP (when ``port`` is given) and model folders; figures and failures."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = root.resolve()  # the CLI cases run in their own working directories
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="inputfuzz-", dir=root))
    figures: dict = {}
    failures: list[str] = []
    t = time.monotonic()
    figures["data_files"], bad = data_files(work / "data", rng)
    figures["data_files_seconds"] = round(time.monotonic() - t, 1)
    failures += bad
    if port is not None:
        t = time.monotonic()
        figures["http"], bad = http(port, rng, max_request_bytes, codes)
        figures["http_seconds"] = round(time.monotonic() - t, 1)
        failures += bad
    t = time.monotonic()
    (work / "models").mkdir()
    figures["model_folders"], bad = model_folders(work / "models", rng, tiny_good_model(work))
    figures["model_folders_seconds"] = round(time.monotonic() - t, 1)
    failures += bad
    return figures, failures
