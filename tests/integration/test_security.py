"""Security and bad input: secrets never reach logs or events, bad input where a user touches gets a
clear error naming the problem, bad artifact references are refused without half-written output, and
model output is never executed.

Anonymous access to the object store is refused: ``test_store.py::test_anonymous_access_is_refused``.
Kafka SASL/TLS settings reaching the client: ``tests/unit/test_core_settings.py`` and the doctest of
``selfimprove.core.kafka_config`` (the local broker has no TLS).
"""

from __future__ import annotations

import ast
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.core.keys import attempt_prefix
from selfimprove.core.stack import LocalStack
from selfimprove.core.topics import Topics
from selfimprove.v2 import control_pb2, control_pb2_grpc
from selfimprove.v2.common_pb2 import ArtifactRef, ModelRef, Stage
from selfimprove.v2.stages_pb2 import SelectCommand, TrainCommand
from tests.support.buskit import (
    ServiceProcess,
    artifact_store,
    eventually,
    free_port,
    kafka_settings,
    read_topic,
)

ROOT = Path(__file__).resolve().parents[2]
S3_SECRET = "S3cr3t-Zq7XvW9kLm2Pr4Tn"
SASL_SECRET = "SaSl-Pw-Hh3Jk8Bn5Vc1Xy6Q"
FILE_SECRET = "FiLe-Mounted-Qq4Ww8Ee2Rr"
SERVICE_ENV = {"SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000", "SELFIMPROVE_THREADS": "1"}


# -- secrets ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret_stack(tmp_path_factory):
    """A stack of its own whose S3 secret key is distinctive (the session stack uses the default)."""
    with LocalStack(root=tmp_path_factory.mktemp("secret-stack"), secret_key=S3_SECRET) as s:
        yield s


async def _all_records(stack, prefix: str) -> list:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix + ".")]
    finally:
        await admin.close()
    records = []
    for name in names:
        records += await read_topic(stack.kafka_bootstrap, name, expect=10_000, timeout=3)
    return records


@pytest.mark.integration
@pytest.mark.asyncio
async def test_secrets_never_appear_in_logs_or_events(secret_stack, unique_name, tmp_path):
    stack, prefix = secret_stack, unique_name
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text(S3_SECRET)
    port = free_port()
    env = {
        **SERVICE_ENV,
        "SELFIMPROVE_KAFKA_SASL_PASSWORD": SASL_SECRET,  # unused with PLAINTEXT, still must not leak
        "SELFIMPROVE_KAFKA_SASL_USERNAME": "fuzz-user",
        "SELFIMPROVE_EVALUATOR_GRPC_PORT": str(port),
    }
    evaluator = ServiceProcess("-m selfimprove.evaluator", stack, prefix, tmp_path / "evaluator.log", **env)
    # The acquisition reads its S3 secret from a mounted file (``*_FILE``) instead.
    acq_env = {k: v for k, v in {**env, "SELFIMPROVE_S3_SECRET_KEY_FILE": str(secret_file)}.items()}
    acquisition = ServiceProcess("-m selfimprove.acquisition", stack, prefix, tmp_path / "acq.log", **acq_env)
    # A service that fails its settings names the variable, never the value.
    bad = ServiceProcess(
        "-m selfimprove.selection",
        stack,
        prefix,
        tmp_path / "bad.log",
        SELFIMPROVE_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        SELFIMPROVE_KAFKA_SASL_PASSWORD=FILE_SECRET,
        SELFIMPROVE_S3_SECRET_KEY=FILE_SECRET,
    )
    try:
        evaluator.wait_ready(120)
        acquisition.wait_ready(120)
        assert bad.wait_exit(120) != 0
        stub = control_pb2_grpc.ControlPlaneServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        # A run whose model does not exist: commands, a stage failure, retries and decisions on the bus.
        config = (
            "base_model: /nonexistent/model\nbudget: {iterations: 1}\nstages: {acquire: {max_attempts: 1}}\n"
        )
        started = await stub.StartRun(control_pb2.StartRunRequest(config_yaml=config), timeout=60)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.StartRun(control_pb2.StartRunRequest(config_yaml="bogus: 1"), timeout=60)
        async with Bus(kafka_settings(stack, prefix)) as bus:  # a poison message: a DLQ entry
            await bus.send_raw(Topics(prefix).command(Stage.STAGE_ACQUIRE), b"\x08\x96\x01junk", key=b"k")

        async def failed() -> bool:
            status = await stub.GetRunStatus(control_pb2.GetRunStatusRequest(run_id=started.run_id))
            return status.status.state in ("failed", "completed", "stopped")

        deadline = asyncio.get_running_loop().time() + 180
        while not await failed():
            assert asyncio.get_running_loop().time() < deadline, "the run did not end"
            await asyncio.sleep(1)
        await eventually(lambda: acquisition.counter("selfimprove_dlq_messages_total") >= 1, timeout=60)
    finally:
        evaluator.stop()
        acquisition.stop()
        bad.stop()
    logs = [tmp_path / n for n in ("evaluator.log", "acq.log", "bad.log")]
    logs += sorted((stack.root / "logs").glob("*.log"))
    assert "SELFIMPROVE_KAFKA_SECURITY_PROTOCOL" in (tmp_path / "bad.log").read_text()
    records = await _all_records(stack, prefix)
    assert len(records) >= 4, "the run produced no events to check"
    for secret in (S3_SECRET, SASL_SECRET, FILE_SECRET):
        for log in logs:
            assert secret not in log.read_text(errors="replace"), f"{secret} in {log}"
        for r in records:
            blob = (r.value or b"") + (r.key or b"") + b"".join(k.encode() + v for k, v in r.headers)
            assert secret.encode() not in blob, f"{secret} in an event on {r.topic}"


# -- bad input where a user touches ------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "selfimprove.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "--label-mode", "x"], "--label-mode: choose verified or label-free"),
        (["eval", "--model", "run:abc@x"], "bad model reference 'run:abc@x'"),
        (["run", "--config", "/nonexistent/run.yaml"], "cannot read run config /nonexistent/run.yaml"),
        (["run", "--iterations", "0"], "--iterations"),
        (["dlq", "replay", "some.topic.dlq"], "--offset"),
    ],
)
def test_bad_cli_flags_are_refused_naming_the_flag(args, words):
    done = _cli(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert words in done.stderr


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("task: [unclosed", "not valid YAML"),
        ("bogus_field: 1", "bogus_field"),
        ("budget: {iterations: many}", "budget.iterations"),
        ("acquisition: {shards: 0}", "acquisition.shards"),
    ],
)
def test_bad_run_config_file_names_the_field(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    done = _cli("run", "--config", str(path))
    assert done.returncode == 2 and words in done.stderr, (text, done.stderr)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_start_run_errors_name_the_field(stack, unique_name, tmp_path):
    port = free_port()
    evaluator = ServiceProcess(
        "-m selfimprove.evaluator",
        stack,
        unique_name,
        tmp_path / "evaluator.log",
        SELFIMPROVE_EVALUATOR_GRPC_PORT=str(port),
        **SERVICE_ENV,
    )
    try:
        evaluator.wait_ready(120)
        stub = control_pb2_grpc.ControlPlaneServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        for text, words in [
            ("task: [unclosed", "not valid YAML"),
            ("bogus_field: 1", "bogus_field"),
            ("budget: {iterations: many}", "budget.iterations"),
            ("evaluation: {alpha: 2}", "evaluation.alpha"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.StartRun(control_pb2.StartRunRequest(config_yaml=text), timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in err.value.details(), (text, err.value.details())
        listed = await stub.ListRuns(control_pb2.ListRunsRequest(), timeout=30)
        assert not listed.runs  # nothing was started
    finally:
        evaluator.stop()


def _command(run_id: str, stage: int, **payload) -> envelopes.Envelope:
    return envelopes.make(run_id=run_id, iteration=1, stage=stage, producer="test", **payload)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_bad_artifact_references_get_a_stage_failure_and_nothing_half_written(
    stack, unique_name, tmp_path
):
    store = artifact_store(stack)
    topics = Topics(unique_name)
    run = unique_name
    good = store.publish(
        attempt_prefix(run, 0, "select", 0, 1), {"sft.jsonl": b'{"prompt": "1+1=", "response": "2"}\n' * 8}
    )
    wrong_sha = ArtifactRef(uri=good.uri, sha256="ab" * 32, bytes=good.bytes, media_type=good.media_type)
    missing = ArtifactRef(uri=good.uri.replace(run, run + "-gone"), sha256=good.sha256, bytes=1)
    truncated = store.publish(
        attempt_prefix(run, 0, "select", 1, 1), {"sft.jsonl": b'{"prompt": "2+2=", "response": "4"}\n' * 8}
    )
    store.put_bytes(attempt_prefix(run, 0, "select", 1, 1) + "sft.jsonl", b'{"prompt": "2+2=", "resp')
    policy = ModelRef(base="smollm2-135m-instruct")
    cases = {
        "wrong sha": (Stage.STAGE_TRAIN, TrainCommand(policy=policy, datasets=[wrong_sha], method=1)),
        "missing": (Stage.STAGE_TRAIN, TrainCommand(policy=policy, datasets=[missing], method=1)),
        "truncated": (Stage.STAGE_TRAIN, TrainCommand(policy=policy, datasets=[truncated], method=1)),
        "select missing": (Stage.STAGE_SELECT, SelectCommand(shards=[missing], label_mode=1, policy=policy)),
    }
    words = {
        "wrong sha": "sha256",
        "missing": "does not exist",
        "truncated": "truncated",
        "select missing": "does not exist",
    }
    sent = {}
    async with Bus(kafka_settings(stack, unique_name)) as bus:
        await bus.ensure_topics(topics.all())
        for i, (name, (stage, cmd)) in enumerate(cases.items()):
            field = "train_command" if stage == Stage.STAGE_TRAIN else "select_command"
            env = _command(f"{run}-{i}", stage, **{field: cmd})
            sent[env.event_id] = name
            await bus.publish(topics.command(stage), env)
    trainer = ServiceProcess(
        "-m selfimprove.trainer", stack, unique_name, tmp_path / "trainer.log", **SERVICE_ENV
    )
    selection = ServiceProcess(
        "-m selfimprove.selection", stack, unique_name, tmp_path / "sel.log", **SERVICE_ENV
    )
    try:
        got = {}
        for stage in (Stage.STAGE_TRAIN, Stage.STAGE_SELECT):
            want = sum(1 for s, _ in cases.values() if s == stage)
            for r in await read_topic(stack.kafka_bootstrap, topics.result(stage), expect=want, timeout=180):
                env = envelopes.decode(r.value)
                if env.WhichOneof("payload") != "stage_progress":
                    got[sent[env.causation_id]] = env
    finally:
        trainer.stop()
        selection.stop()
    assert set(got) == set(cases), (tmp_path / "trainer.log").read_text()[-3000:]
    for name, env in got.items():
        assert env.HasField("stage_failure"), name
        assert words[name] in env.stage_failure.message, (name, env.stage_failure.message)
        assert not env.stage_failure.retryable
        stage = "train" if "select" not in name else "select"
        # nothing half-written: no file under the refused attempt's prefix
        assert not list(store.list_keys(attempt_prefix(env.run_id, 1, stage, 0, 1))), name


# -- model output is data ----------------------------------------------------------------------------

# Modules allowed to start processes: the local stack, the loop's launcher and `git describe`.
SUBPROCESS_OK = {"core/procs.py", "core/stack.py", "evaluator/lineage.py"}
# arithmetic.evaluate: eval of expressions this code generated, guarded by a digits/operators regex.
EVAL_OK = {"runtime/tasks/arithmetic.py"}


def _calls(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            names.append(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return names


@pytest.mark.unit
def test_model_output_is_never_executed():
    services = ROOT / "services"
    found = []
    for path in sorted(services.rglob("*.py")):
        rel = str(path.relative_to(services))
        if rel.startswith("v2/"):
            continue
        source = path.read_text()
        tree = ast.parse(source)
        calls = _calls(tree)
        imports = {
            a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names
        }
        imports |= {
            n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        }
        if {"eval", "exec", "compile"} & {c for c in calls if c in ("eval", "exec", "compile")}:
            bare = [
                n
                for n in ast.walk(tree)
                if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Name)
                and n.func.id in ("eval", "exec", "compile")
            ]
            if bare and rel not in EVAL_OK:
                found.append(f"{rel}: eval/exec/compile")
        if ("subprocess" in imports or "system" in calls and "os" in imports) and rel not in SUBPROCESS_OK:
            found.append(f"{rel}: starts processes")
    assert not found, found
    # The one eval evaluates the task's own generated expressions, never a reply.
    arithmetic = (services / "runtime/tasks/arithmetic.py").read_text()
    assert 're.fullmatch(r"[\\d\\s+\\-*()]+", expression)' in arithmetic
    callers = [p for p in services.rglob("*.py") if "evaluate(expr" in p.read_text()]
    assert [str(p.relative_to(services)) for p in callers] == ["runtime/tasks/arithmetic.py"]


@pytest.mark.unit
def test_no_unpickling_of_stored_artifacts():
    """Artifacts are data: nothing read from the store may be unpickled (code execution on load)."""
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in sorted((ROOT / "services").rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "weights_only=False" in line or "pickle.load" in line
    ]
    assert not found, found
