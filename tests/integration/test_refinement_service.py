"""The refinement service as its own process on the real broker and object store, with a tiny
random Llama as its base: calibration command in, result out; gRPC answers, limits and health;
hot swap on a promotion; TLS and the rate limit; the ``selfimprove generate`` client."""

import asyncio
import json
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Bus
from selfimprove.v2 import refinement_pb2 as pb
from selfimprove.v2 import refinement_pb2_grpc as pb_grpc
from selfimprove.v2.common_pb2 import ModelRef, Stage, TaskSpec
from selfimprove.v2.envelope_pb2 import Envelope
from selfimprove.v2.stages_pb2 import Decision, RefineCommand
from tests.support.buskit import ServiceProcess, artifact_store, eventually, kafka_settings, read_topic
from tests.support.tlskit import self_signed

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny random Llama folder and two different LoRA adapters on it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from selfimprove.runtime.tiny import tiny_llama

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny")
    model, tokenizer = tiny_llama(seed=0)
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    adapters = []
    for seed in (1, 2):
        base, _ = tiny_llama(seed=0)
        torch.manual_seed(seed)  # after tiny_llama, which seeds torch itself
        modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        config = LoraConfig(r=8, lora_alpha=256, target_modules=modules, init_lora_weights=False)
        peft_model = get_peft_model(base, config)
        peft_model.save_pretrained(root / f"adapter-{seed}")
        adapters.append(root / f"adapter-{seed}")
    return root / "base", adapters


def start(stack, prefix, tmp_path, base, name="svc", **env):
    settings = {
        "SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "SELFIMPROVE_THREADS": "1",
        "SELFIMPROVE_INSTANCE": name,
        "SELFIMPROVE_REFINEMENT_BASE": str(base),
        "SELFIMPROVE_REFINEMENT_GRPC_HOST": "127.0.0.1",
        "SELFIMPROVE_REFINEMENT_GRPC_PORT": "0",
        "SELFIMPROVE_REFINEMENT_HTTP_HOST": "127.0.0.1",
        "SELFIMPROVE_REFINEMENT_HTTP_PORT": "0",
        "SELFIMPROVE_REFINEMENT_CALIBRATION_MAX_NEW_TOKENS": "6",
        "SELFIMPROVE_REFINEMENT_DEFAULT_MAX_NEW_TOKENS": "8",
        **env,
    }
    proc = ServiceProcess("-m selfimprove.refinement", stack, prefix, tmp_path / f"{name}.log", **settings)
    proc.wait_ready(timeout=120)
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/health", timeout=5).read())
    return proc, health["grpc_port"]


@pytest.fixture
async def service(stack, unique_name, tmp_path, tiny_models):
    proc, port = start(stack, unique_name, tmp_path, tiny_models[0])
    yield proc, port
    assert proc.stop() == 0


def promotion(run_id: str, model: ModelRef, iteration: int = 1) -> Envelope:
    """The PROMOTE decision the evaluator publishes for ``model``."""
    return envelopes.make(
        run_id=run_id,
        iteration=iteration,
        stage=Stage.STAGE_CONTROL,
        producer="test",
        decision=Decision(kind=Decision.KIND_PROMOTE, reason="better", model=model),
    )


async def generate(port, channel=None, **fields):
    async with channel or grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        return await pb_grpc.RefinementServiceStub(ch).Generate(pb.GenerateRequest(**fields), timeout=60)


async def test_calibration_command_in_result_out(stack, unique_name, service, tiny_models):
    proc, _ = service
    incumbent = ModelRef(base=str(tiny_models[0]), version="run/iter-000")
    cmd = RefineCommand(
        incumbent=incumbent,
        task=TaskSpec(name="arithmetic", params_json='{"categories": ["add1"]}'),
        dev_size=6,
        seed=3,
        strategies=["self_consistency@3", "best_of_n@2", "self_refine@1"],
        token_budget=1000,
        write_targets=True,
        target_prompts=4,
    )
    env = envelopes.make(
        run_id=unique_name, iteration=2, stage=Stage.STAGE_REFINE, producer="test", refine_command=cmd
    )
    async with Bus(kafka_settings(stack, unique_name)) as bus:
        await bus.publish(bus.topics.command(Stage.STAGE_REFINE), env)
    [record] = await read_topic(stack.kafka_bootstrap, f"{unique_name}.evt.refine", 1, timeout=120)
    out = Envelope.FromString(record.value)
    assert out.causation_id == env.event_id and out.WhichOneof("payload") == "refine_result", out
    res = out.refine_result
    assert [s.strategy for s in res.table] == ["greedy", "self_consistency@3", "best_of_n@2", "self_refine@1"]
    assert all(s.n == 6 and s.tokens_per_problem > 0 for s in res.table)
    assert res.chosen in {s.strategy for s in res.table}
    assert res.stats.dev_n == 6 and res.stats.strategies == len(res.table)
    assert all(0 <= s.p_value_vs_greedy <= 1 for s in res.table)
    store = artifact_store(stack)
    table = json.loads(store.read_file(res.targets, "table.json"))
    assert table["chosen"] == res.chosen and len(table["table"][0]["outcomes"]) == 6
    rows = [json.loads(line) for line in store.read_file(res.targets, "targets.jsonl").decode().splitlines()]
    assert len(rows) == 4
    assert set(rows[0]) == {"id", "prompt", "response", "category", "answer_extracted"}
    assert proc.counter("selfimprove_refinement_calibration_accuracy", strategy="greedy") >= 0
    assert proc.counter("selfimprove_refinement_strategy_in_use", strategy=res.chosen) == 1


async def test_grpc_answers_limits_and_health(service, tiny_models):
    proc, port = service
    reply = await generate(port, prompt="What is 2 + 3?")
    assert reply.strategy == "greedy" and reply.model_version == str(tiny_models[0])
    assert reply.completion_tokens > 0 and reply.prompt_tokens > 0
    sc = await generate(port, prompt="What is 2 + 3?", strategy="self_consistency@3", seed=1)
    assert sc.strategy == "self_consistency@3" and sc.completion_tokens >= reply.completion_tokens
    cases = [
        ({"prompt": "x" * 5000}, "max_prompt_chars"),
        ({"prompt": "hi", "strategy": "self_consistency@64"}, "max_n"),
        ({"prompt": "hi", "max_new_tokens": 100000}, "max_new_tokens"),
        ({"prompt": "hi", "strategy": "best_of_n_verifier@2"}, "never served"),
    ]
    for fields, named in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await generate(port, **fields)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and named in err.value.details()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:  # over grpc.max_receive_message_length
            await pb_grpc.RefinementServiceStub(ch).Generate(pb.GenerateRequest(prompt="y" * 100_000))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        check = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="selfimprove.v2.RefinementService")
        )
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        parts = [
            p
            async for p in pb_grpc.RefinementServiceStub(ch).GenerateStream(
                pb.GenerateStreamRequest(request=pb.GenerateRequest(prompt="What is 2 + 3?"))
            )
        ]
    assert parts[-1].HasField("final") and "".join(p.text_delta for p in parts[:-1]) == parts[-1].final.text
    assert proc.counter("selfimprove_refinement_requests_total", code="INVALID_ARGUMENT") == 4
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfimprove.cli.main",
            "generate",
            "--address",
            f"127.0.0.1:{port}",
            "--json",
            "What is 2 + 3?",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["model_version"] == str(tiny_models[0])


async def test_promotion_swaps_adapter_without_restart(stack, unique_name, service, tiny_models):
    proc, port = service
    base, adapters = tiny_models
    store = artifact_store(stack)
    refs = [
        store.publish_folder(f"runs/{unique_name}/adapter-{i}/", folder) for i, folder in enumerate(adapters)
    ]
    prompt = "What is 12 + 30? Explain."
    before = await generate(port, prompt=prompt)
    texts = {}
    async with Bus(kafka_settings(stack, unique_name)) as bus:
        for i, ref in enumerate(refs, start=1):
            model = ModelRef(base=str(base), adapter=ref, version=f"{unique_name}/iter-00{i}")
            await bus.publish(bus.topics.control, promotion(unique_name, model, iteration=i))

            async def served(version=model.version):
                reply = await generate(port, prompt=prompt)
                return reply if reply.model_version == version else None

            reply = None
            for _ in range(300):
                reply = await served()
                if reply:
                    break
                await asyncio.sleep(0.2)
            assert reply, f"never served {model.version}"
            texts[i] = reply.text
    assert proc.proc.poll() is None, "the service restarted"
    assert len({before.text, texts[1], texts[2]}) == 3, "each adapter should change the tiny model's output"
    # Both swaps are counted for the run that promoted them, whose model is now served.
    assert proc.counter("selfimprove_refinement_model_swaps_total", run_id=unique_name) == 2
    assert (
        proc.counter(
            "selfimprove_refinement_model_info", run_id=unique_name, version=f"{unique_name}/iter-002"
        )
        == 1
    )


async def test_tls_and_rate_limit(stack, unique_name, tmp_path, tiny_models):
    key, cert = self_signed(tmp_path)
    proc, port = start(
        stack,
        unique_name,
        tmp_path,
        tiny_models[0],
        name="tls",
        SELFIMPROVE_REFINEMENT_TLS_CERT_FILE=str(cert),
        SELFIMPROVE_REFINEMENT_TLS_KEY_FILE=str(key),
        SELFIMPROVE_REFINEMENT_RATE_PER_SECOND="0.01",
        SELFIMPROVE_REFINEMENT_RATE_BURST="2",
    )
    try:
        creds = grpc.ssl_channel_credentials(cert.read_bytes())
        reply = await generate(
            port, grpc.aio.secure_channel(f"127.0.0.1:{port}", creds), prompt="What is 2 + 3?"
        )
        assert reply.text is not None and reply.model_version
        with pytest.raises(grpc.aio.AioRpcError) as err:  # plaintext against a TLS port
            await generate(port, prompt="hi")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "selfimprove.cli.main",
                "generate",
                "--address",
                f"127.0.0.1:{port}",
                "--tls-ca",
                str(cert),
                "What is 2 + 3?",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0 and cli.stdout.startswith("answer:"), cli.stderr
        with pytest.raises(
            grpc.aio.AioRpcError
        ) as err:  # the burst of 2 is spent (the plaintext try never reached the server)
            await generate(port, grpc.aio.secure_channel(f"127.0.0.1:{port}", creds), prompt="hi")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in err.value.details()
        await eventually(
            lambda: proc.counter("selfimprove_refinement_requests_total", code="RESOURCE_EXHAUSTED")
        )
    finally:
        assert proc.stop() == 0


async def test_a_restarted_replica_serves_the_incumbent_record_and_reads_only_new_decisions(
    stack, unique_name, tmp_path, tiny_models
):
    """A replica keeps its name across restarts: it serves the deployment's incumbent (the record the
    evaluator writes with each promotion) before reading any decision, and its promotion listener's
    group goes on from its committed offsets, so it reads no decision it already handled."""
    from selfimprove.core import incumbent

    base, adapters = tiny_models
    store = artifact_store(stack)
    ref = store.publish_folder(f"runs/{unique_name}/adapter-0/", adapters[0])
    model = ModelRef(base=str(base), adapter=ref, version=f"{unique_name}/iter-001")
    promoted = promotion(unique_name, model)
    proc, port = start(stack, unique_name, tmp_path, base, name="replica-0")
    try:
        async with Bus(kafka_settings(stack, unique_name)) as bus:
            await bus.publish(bus.topics.control, promoted)
        await eventually(
            lambda: proc.counter("selfimprove_refinement_model_swaps_total", run_id=unique_name) == 1
        )
        handled = proc.counter(
            "selfimprove_messages_consumed_total", topic=f"{unique_name}.evt.control", outcome="handled"
        )
        assert handled >= 1
    finally:
        assert proc.stop() == 0
    incumbent.write(store, unique_name, promoted)  # as the evaluator does when it publishes one

    again, port = start(stack, unique_name, tmp_path, base, name="replica-0")
    try:
        reply = await generate(port, prompt="What is 12 + 30?")
        assert reply.model_version == model.version, "the restarted replica serves the incumbent at once"
        await asyncio.sleep(8)  # time to read the control topic, were it replayed
        topic = f"{unique_name}.evt.control"
        assert again.counter("selfimprove_messages_consumed_total", topic=topic, outcome="handled") == 0
        assert again.counter("selfimprove_messages_consumed_total", topic=topic, outcome="duplicate") == 0
    finally:
        assert again.stop() == 0


async def test_requests_and_swaps_are_served_while_calibrating(stack, unique_name, service, tiny_models):
    """A calibration holds the compute thread one engine call at a time: a request and a hot swap
    made mid-calibration complete before its result is published, and it still measures the model
    its command named."""
    proc, port = service
    base, adapters = tiny_models
    calibrating = "selfimprove_refinement_calibrations_in_progress"
    cmd = RefineCommand(
        incumbent=ModelRef(base=str(base), version="run/iter-000"),
        task=TaskSpec(name="arithmetic"),
        dev_size=200,  # long enough (dozens of engine calls) to outlast a request and a swap
        seed=3,
        strategies=["self_consistency@5"],
    )
    env = envelopes.make(
        run_id=unique_name, iteration=1, stage=Stage.STAGE_REFINE, producer="test", refine_command=cmd
    )
    ref = artifact_store(stack).publish_folder(f"runs/{unique_name}/adapter/", adapters[0])
    promoted = ModelRef(base=str(base), adapter=ref, version=f"{unique_name}/iter-001")
    swap = promotion(unique_name, promoted)
    async with Bus(kafka_settings(stack, unique_name)) as bus:
        await bus.publish(bus.topics.command(Stage.STAGE_REFINE), env)
        await eventually(lambda: proc.counter(calibrating) == 1, timeout=120, every=0.05)
        reply = await generate(port, prompt="What is 2 + 3?")
        assert reply.completion_tokens > 0
        assert proc.counter(calibrating) == 1, "the request waited for the whole calibration"
        await bus.publish(bus.topics.control, swap)

        async def swapped():
            return (await generate(port, prompt="What is 2 + 3?")).model_version == promoted.version

        for _ in range(600):
            if await swapped():
                break
            await asyncio.sleep(0.1)
        assert await swapped(), "never served the promoted model"
        assert proc.counter(calibrating) == 1, "the swap waited for the whole calibration"
    [record] = await read_topic(stack.kafka_bootstrap, f"{unique_name}.evt.refine", 1, timeout=600)
    out = Envelope.FromString(record.value)
    assert out.WhichOneof("payload") == "refine_result", out
    table = json.loads(artifact_store(stack).read_file(out.refine_result.calibration, "table.json"))
    assert table["model_version"] == "run/iter-000"  # the command's incumbent, not the swapped-in model
    assert proc.counter(calibrating) == 0
