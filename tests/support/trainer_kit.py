"""Driving the trainer service over the real stack: publish a dataset, build and send train commands,
start the service, collect its results (integration tests and the real-model SFT benchmark)."""

import json

from selfimprove.core import envelope as envelopes
from selfimprove.core.topics import Topics
from selfimprove.v2.common_pb2 import ArtifactRef, ModelRef, Stage
from selfimprove.v2.stages_pb2 import TrainCommand, TrainMethod

from .buskit import ServiceProcess, kafka_settings, read_topic

SERVICE_ENV = dict(SELFIMPROVE_KAFKA_SESSION_TIMEOUT_MS="6000", SELFIMPROVE_THREADS="1")


def publish_dataset(store, prefix: str, sft=None, pairs=None) -> ArtifactRef:
    files = {"card.json": json.dumps({"rows": len(sft or pairs or [])}).encode()}
    if sft is not None:
        files["sft.jsonl"] = "".join(json.dumps(r) + "\n" for r in sft).encode()
    if pairs is not None:
        files["pairs.jsonl"] = "".join(json.dumps(r) + "\n" for r in pairs).encode()
    return store.publish(prefix, files)


def command(run_id, base, datasets, hparams=None, method=TrainMethod.TRAIN_METHOD_SFT, **policy):
    return envelopes.make(
        run_id=run_id,
        iteration=1,
        stage=Stage.STAGE_TRAIN,
        producer="test",
        train_command=TrainCommand(
            policy=ModelRef(base=base, **policy),
            datasets=datasets,
            method=method,
            hparams_json=json.dumps(hparams or {}),
            seed=7,
        ),
    )


async def send(stack, prefix, *envs):
    from selfimprove.core.bus import Bus

    async with Bus(kafka_settings(stack, prefix)) as bus:
        await bus.ensure_topics(Topics(prefix).all())
        for env in envs:
            await bus.publish(Topics(prefix).command(Stage.STAGE_TRAIN), env)


async def results(stack, prefix, expect, timeout=120):
    records = await read_topic(
        stack.kafka_bootstrap, Topics(prefix).result(Stage.STAGE_TRAIN), expect, timeout
    )
    return {e.run_id: e for e in (envelopes.decode(r.value) for r in records)}


def trainer(stack, prefix, tmp_path, name, **env):
    work = str(tmp_path / "work")
    return ServiceProcess(
        "-m selfimprove.trainer",
        stack,
        prefix,
        tmp_path / f"{name}.log",
        SELFIMPROVE_TRAINER_WORK_DIR=work,
        **SERVICE_ENV,
        **env,
    )
