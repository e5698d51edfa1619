"""Malformed requests to both gRPC servers of a running loop: refinement ``Generate`` and the
evaluator's control plane. Each case names the status code it must get; the servers must stay up
and still answer a good request afterwards."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable

import grpc

from selfimprove.v2 import control_pb2, control_pb2_grpc
from selfimprove.v2 import refinement_pb2 as rp
from selfimprove.v2 import refinement_pb2_grpc as rp_grpc

C = grpc.StatusCode
# A length-delimited field 1 that claims 268 MB: never parses (random bytes might, as a default run).
JUNK = b"\x0a\xff\xff\xff\x7f"
HUGE = "What is 7 + 8? " * (5 * 1024 * 1024 // 15)


def _code(call: Callable[[], object]) -> tuple[str, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


def _raw(channel: grpc.Channel, method: str, data: bytes) -> Callable[[], object]:
    rpc = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return lambda: rpc(data, timeout=30)


def refinement_cases(rng: random.Random) -> list[tuple[str, rp.GenerateRequest | bytes, set[str]]]:
    bad = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}  # the rate limit may answer first
    return [
        ("empty prompt", rp.GenerateRequest(prompt=""), bad),
        ("blank prompt", rp.GenerateRequest(prompt="   \n"), bad),
        ("prompt over max chars", rp.GenerateRequest(prompt="9" * 5000), bad),
        ("prompt 5 MB", rp.GenerateRequest(prompt=HUGE), {"RESOURCE_EXHAUSTED"}),
        ("max_new_tokens -5", rp.GenerateRequest(prompt="1+1=", max_new_tokens=-5), bad),
        ("max_new_tokens 10^6", rp.GenerateRequest(prompt="1+1=", max_new_tokens=10**6), bad),
        ("unknown strategy", rp.GenerateRequest(prompt="1+1=", strategy="rm -rf /"), bad),
        ("strategy k=999", rp.GenerateRequest(prompt="1+1=", strategy="self_consistency@999"), bad),
        ("strategy k=0", rp.GenerateRequest(prompt="1+1=", strategy="best_of_n@0"), bad),
        ("temperature -1", rp.GenerateRequest(prompt="1+1=", temperature=-1), bad),
        ("temperature 1e9", rp.GenerateRequest(prompt="1+1=", temperature=1e9), bad),
        ("temperature inf", rp.GenerateRequest(prompt="1+1=", temperature=math.inf), bad),
        ("temperature nan", rp.GenerateRequest(prompt="1+1=", temperature=math.nan, max_new_tokens=2), bad),
        # grpc.aio answers an undecodable request UNKNOWN; random bytes may also parse.
        ("random bytes", rng.randbytes(64), {"UNKNOWN", "INTERNAL", *bad}),
        (
            "truncated request",
            rp.GenerateRequest(prompt="x" * 300).SerializeToString()[:50],
            {"UNKNOWN", "INTERNAL"},
        ),
    ]


def run(loop, rng: random.Random, fail: Callable[[str], None]) -> dict:
    """Every case against both servers; returns codes per server and the rate-limit figures."""
    out: dict = {"refinement": Counter(), "control_plane": Counter(), "cases": {}, "findings": []}
    ref_addr = loop.grpc_address("refinement")
    with grpc.insecure_channel(ref_addr) as channel:
        stub = rp_grpc.RefinementServiceStub(channel)
        for name, req, want in refinement_cases(rng):
            if isinstance(req, bytes):
                code, why = _code(_raw(channel, "/selfimprove.v2.RefinementService/Generate", req))
            else:
                code, why = _code(lambda r=req: stub.Generate(r, timeout=60))
            out["refinement"][code] += 1
            out["cases"][f"refinement: {name}"] = f"{code} {why[:100]}"
            if code not in want:
                fail(f"refinement {name}: got {code} ({why[:200]}), wanted {sorted(want)}")
            elif code == "OK" and name == "temperature nan":
                out["findings"].append("refinement Generate accepts temperature=NaN (limits.py)")
        flood = Counter(
            _code(lambda: stub.Generate(rp.GenerateRequest(prompt=""), timeout=30))[0] for _ in range(80)
        )
        out["rate_limit_flood_80"] = dict(flood)
        if not flood["RESOURCE_EXHAUSTED"]:
            fail("80 requests at once were all admitted: no rate limit")
        time.sleep(3)  # refill the bucket
        code, why = _code(
            lambda: stub.Generate(rp.GenerateRequest(prompt="What is 2 + 3?", max_new_tokens=4), timeout=120)
        )
        out["refinement_good_request_after"] = code
        if code != "OK":
            fail(f"refinement did not answer a good request after the fuzzing: {code} {why}")

    ctl_addr = loop.grpc_address("evaluator")
    with grpc.insecure_channel(ctl_addr) as channel:
        stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
        start = control_pb2.StartRunRequest
        cases = [
            ("bad YAML", start(config_yaml="task: [unclosed"), "INVALID_ARGUMENT", "YAML"),
            ("not a mapping", start(config_yaml="- 1\n- 2"), "INVALID_ARGUMENT", "mapping"),
            ("unknown field", start(config_yaml="bogus_field: 1"), "INVALID_ARGUMENT", "bogus_field"),
            ("wrong type", start(config_yaml="budget: {iterations: many}"), "INVALID_ARGUMENT", "iterations"),
            ("bad run id", start(config_yaml="bogus_field: 1", run_id="../../etc"), "INVALID_ARGUMENT", ""),
            (
                "bad run id, good config",
                start(config_yaml="seed: 1", run_id="../../etc"),
                "INVALID_ARGUMENT",
                "run id",
            ),
            ("long run id", start(config_yaml="seed: 1", run_id="r" * 500), "INVALID_ARGUMENT", "run id"),
            ("config 200 kB", start(config_yaml="junk: " + "x" * 200_000), "INVALID_ARGUMENT", "junk"),
            ("config 3 MB", start(config_yaml="junk: " + "x" * 3_000_000), "RESOURCE_EXHAUSTED", ""),
            ("config 5 MB", start(config_yaml="junk: " + HUGE), "RESOURCE_EXHAUSTED", ""),
        ]
        for name, req, want, words in cases:
            code, why = _code(lambda r=req: stub.StartRun(r, timeout=60))
            out["control_plane"][code] += 1
            out["cases"][f"control: StartRun {name}"] = f"{code} {why[:100]}"
            if code != want or words.lower() not in why.lower():
                fail(
                    f"control plane StartRun {name}: got {code} ({why[:200]}), wanted {want} naming {words!r}"
                )
        for name, call, want in [
            (
                "status of unknown run",
                lambda: stub.GetRunStatus(control_pb2.GetRunStatusRequest(run_id="nope"), timeout=10),
                "NOT_FOUND",
            ),
            (
                "stop unknown run",
                lambda: stub.StopRun(control_pb2.StopRunRequest(run_id="nope"), timeout=10),
                "NOT_FOUND",
            ),
            (
                "status, empty id",
                lambda: stub.GetRunStatus(control_pb2.GetRunStatusRequest(run_id=""), timeout=10),
                "NOT_FOUND",
            ),
            (
                "StartRun random bytes",
                _raw(channel, "/selfimprove.v2.ControlPlaneService/StartRun", JUNK + rng.randbytes(59)),
                "UNKNOWN",
            ),
            (
                "unknown method",
                _raw(channel, "/selfimprove.v2.ControlPlaneService/Nope", b""),
                "UNIMPLEMENTED",
            ),
        ]:
            code, why = _code(call)
            out["control_plane"][code] += 1
            out["cases"][f"control: {name}"] = f"{code} {why[:100]}"
            if code != want:
                fail(f"control plane {name}: got {code} ({why[:200]}), wanted {want}")
        code, _ = _code(lambda: stub.ListRuns(control_pb2.ListRunsRequest(), timeout=10))
        out["control_plane_list_after"] = code
    out["refinement"] = dict(out["refinement"])
    out["control_plane"] = dict(out["control_plane"])
    return out
