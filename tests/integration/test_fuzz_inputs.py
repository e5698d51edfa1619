"""The fuzz suite's new inputs, short (``make fuzz`` runs them against the whole loop): every bad data
file through the task loader, ``config check`` and ``eval --task``; every malformed request to the
OpenAI-compatible HTTP app (in-process, over a fake engine, with the service's metrics); every corrupt
model folder through the engine loader and ``eval --model``. Each must be refused clearly (file, row
or field named), nothing may crash or be half-written, and the HTTP app must still serve."""

import asyncio
import random
from collections import Counter
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest

from benchmarks import inputfuzz
from selfimprove.core.fuzzinputs import datafiles, httpreqs, modelfolders
from selfimprove.core.grpcserve import TokenBucket
from selfimprove.core.metrics import Metrics
from selfimprove.refinement.http_runner import http_runnable
from selfimprove.refinement.metrics import RefinementMetrics
from selfimprove.refinement.served import ComputeEngine, Served, ServedModel
from selfimprove.refinement.settings import RefinementSettings
from selfimprove.runtime.engine import GenerationRequest, PromptResult, Sample, to_messages
from selfimprove.v2.common_pb2 import ModelRef

pytestmark = pytest.mark.integration


def test_every_bad_data_file_is_refused_clearly_at_every_entry_point(tmp_path):
    table, failures = inputfuzz.data_files(tmp_path, random.Random(3))
    assert failures == []
    assert set(table) == set(datafiles.KINDS)
    assert inputfuzz.summary(table) == {"clear": 3 * len(datafiles.KINDS)}


class EchoEngine:
    def generate(self, request: GenerationRequest):
        text = f"heard: {to_messages(request.prompts[0])[-1]['content']}. The answer is 5."
        return [PromptResult((Sample(text, 4, "stop"),) * request.params.n, 3) for _ in request.prompts]

    def encode(self, prompt):
        return [m["content"] for m in to_messages(prompt)]


def request_codes(metrics: Metrics) -> Counter:
    text = generate_latest(metrics.registry).decode()
    out: Counter = Counter()
    for (name, labels), value in inputfuzz_parse(text).items():
        if name == "selfimprove_refinement_requests_total":
            out[dict(labels)["code"]] += value
    return out


def inputfuzz_parse(text):
    from benchmarks.suitekit import parse_metrics

    return parse_metrics(text)


async def test_malformed_http_requests_get_openai_errors_and_the_app_keeps_serving():
    served = Served(
        ModelRef(base="fake", version="v0"),
        ComputeEngine(EchoEngine()),
        "greedy",
        lambda t: "5",
    )
    metrics = Metrics("refinement")
    state = SimpleNamespace(ready=True, details={})
    s = RefinementSettings(
        http_host="127.0.0.1",
        http_port=0,
        max_request_bytes=4096,
        max_new_tokens=64,
        default_max_new_tokens=16,
    )
    run = await http_runnable(
        SimpleNamespace(metrics=state),
        s,
        ServedModel(served),
        RefinementMetrics(metrics),
        TokenBucket(1000, 1000),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    try:
        figures, failures = await asyncio.to_thread(
            inputfuzz.http, state.details["http_port"], random.Random(5), 4096, lambda: request_codes(metrics)
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert failures == [], "\n".join(failures)
    cases = figures["cases"]
    assert len(cases) == len(httpreqs.generate(random.Random(5), 4096)) + 1
    assert cases["good_request_after"]["status"] == 200
    assert cases["temperature_nan"]["outcome"] == "clear"
    assert cases["huge_body"]["status"] == 413 and cases["unknown_model"]["status"] == 404
    assert (
        figures["metric_codes"].get("INTERNAL", 0) == 0 and figures["metric_codes"]["INVALID_ARGUMENT"] > 30
    )


def test_every_corrupt_model_folder_is_refused_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    good = inputfuzz.tiny_good_model(tmp_path)
    table, failures = inputfuzz.model_folders(tmp_path, random.Random(2), good)
    assert failures == []
    assert inputfuzz.summary(table) == {"clear": 2 * len(modelfolders.KINDS)}
