"""The commands the controller sends, built from a run's state and config. Pure.

Command event ids are derived from what the command is (run, iteration, slot, attempt), so a
controller that re-sends a command after a crash repeats its id and the stage drops the repeat.
"""

from __future__ import annotations

import json
import uuid
import zlib

from selfimprove.core import envelope as envelopes
from selfimprove.core.outgoing import Outgoing
from selfimprove.core.topics import Topics
from selfimprove.evaluator.config import RunConfig, phrasing_size, tactics_of
from selfimprove.evaluator.focus import next_weights
from selfimprove.evaluator.refs import base_version, to_model, to_ref
from selfimprove.evaluator.state import RunState, slot_shard, slot_stage, training_sets
from selfimprove.runtime.evalguard import dump_test_sets
from selfimprove.runtime.tasks.base import HELDOUT_PHRASING
from selfimprove.v2.common_pb2 import ModelRef, SamplingParams, Stage, TaskSpec
from selfimprove.v2.stages_pb2 import (
    AcquireCommand,
    AcquireParaphrase,
    AcquireTactics,
    EvalSuite,
    EvaluateCommand,
    LabelMode,
    RefineCommand,
    SelectCommand,
    TrainCommand,
    TrainMethod,
)

PRODUCER = "evaluator"
STAGE_ENUM = {
    "acquire": Stage.STAGE_ACQUIRE,
    "select": Stage.STAGE_SELECT,
    "train": Stage.STAGE_TRAIN,
    "evaluate": Stage.STAGE_EVALUATE,
    "refine": Stage.STAGE_REFINE,
}
STAGE_NAME = {v: k for k, v in STAGE_ENUM.items()}
METHODS = {
    "sft": TrainMethod.TRAIN_METHOD_SFT,
    "dpo": TrainMethod.TRAIN_METHOD_DPO,
    "full": TrainMethod.TRAIN_METHOD_FULL_SFT,
}
LABEL_MODES = {"verified": LabelMode.LABEL_MODE_VERIFIED, "label-free": LabelMode.LABEL_MODE_LABEL_FREE}


def command_id(run_id: str, iteration: int, slot: str, attempt: int) -> str:
    """The same command always gets the same id.

    >>> command_id("r", 1, "train", 2) == command_id("r", 1, "train", 2)
    True
    """
    return str(uuid.uuid5(envelopes.NAMESPACE, f"cmd/{run_id}/{iteration}/{slot}/{attempt}"))


def stage_seed(cfg: RunConfig, iteration: int, slot: str, attempt: int) -> int:
    """A seed per run seed, iteration, slot and attempt (another attempt samples other data).

    >>> stage_seed(RunConfig(), 1, "acquire/0", 1) != stage_seed(RunConfig(), 1, "acquire/0", 2)
    True
    """
    return zlib.crc32(f"{cfg.seed}/{iteration}/{slot}/{attempt}".encode())


def task_spec(name: str, params: dict) -> TaskSpec:
    return TaskSpec(name=name, params_json=json.dumps(params, sort_keys=True))


def main_task(cfg: RunConfig) -> TaskSpec:
    return task_spec(cfg.task.name, cfg.task.params)


def command(topics: Topics, state: RunState, cfg: RunConfig, slot: str, attempt: int, cause: str) -> Outgoing:
    """The command for ``slot`` of the current iteration at ``attempt``."""
    stage = slot_stage(slot)
    shard = slot_shard(slot)
    payload = _payload(state, cfg, slot, attempt)
    env = envelopes.make(
        run_id=state.run_id,
        iteration=state.iteration,
        stage=STAGE_ENUM[stage],
        producer=PRODUCER,
        attempt=attempt,
        shard=shard,
        causation_id=cause,
        event_id=command_id(state.run_id, state.iteration, slot, attempt),
        **{f"{stage}_command": payload},
    )
    if stage == "acquire":  # each shard on its own partition: acquisition replicas share an iteration
        return Outgoing(topics.command(STAGE_ENUM[stage]), env, f"{state.run_id}/{shard}", spread=shard)
    return Outgoing(topics.command(STAGE_ENUM[stage]), env, state.run_id)


def _models(state: RunState) -> tuple[ModelRef, ModelRef]:
    """The incumbent, and the model this iteration trains from (a pending candidate, or the incumbent)."""
    incumbent = to_model(state.incumbent)
    return incumbent, to_model(state.train_parent) if state.train_parent else incumbent


def sampler(state: RunState, cfg: RunConfig) -> ModelRef:
    """The model this iteration's acquisition samples: the incumbent, also while training goes on
    from a pending candidate (the serving model's answers are the data)."""
    return to_model(state.incumbent)


def tactics_at(cfg: RunConfig, iteration: int) -> AcquireTactics:
    """The task's acquisition tactics that apply in ``iteration`` (the task's tactics model decides;
    the config loader has refused those the label mode cannot take)."""
    applied = tactics_of(cfg).at(iteration, cfg.label_free)
    return AcquireTactics(
        rationalize=applied.rationalize,
        worked=applied.worked,
        worked_by_majority=applied.worked_by_majority,
        rationalize_steps=applied.rationalize_steps,
        check_labels=applied.check_labels,
    )


def paraphrase_at(cfg: RunConfig, iteration: int) -> AcquireParaphrase:
    """The paraphrasing of ``iteration``'s acquire commands (``acquisition.paraphrase``): restatements
    per prompt from ``from_iteration`` on, kept by majority agreement in label-free runs (which read
    no reference answer), by the verifier otherwise.

    >>> from selfimprove.evaluator.config import load_config
    >>> cfg = load_config("acquisition: {paraphrase: {per_prompt: 2, from_iteration: 2}}")
    >>> paraphrase_at(cfg, 1).per_prompt, paraphrase_at(cfg, 2).per_prompt, paraphrase_at(cfg, 2).by_majority
    (0, 2, False)
    """
    p = cfg.acquisition.paraphrase
    per_prompt = p.at(iteration)
    if not per_prompt:
        return AcquireParaphrase()
    return AcquireParaphrase(
        per_prompt=per_prompt, max_new_tokens=p.max_new_tokens, by_majority=cfg.label_free
    )


def focus_of(state: RunState, cfg: RunConfig) -> dict[str, float]:
    """The category weights of this iteration's acquire commands (``acquisition.focus``; none: the
    task's even mix). A label-free run reads only acquisitions a trained model sampled: while the base
    model samples, its open labels are mostly 1-digit ones (``docs/experiments/scripts/prompt_mix.py``
    shows the mix), and the start, which decides a label-free run, keeps the even mix it was measured
    with."""
    a = cfg.acquisition
    if not a.focus:
        return {}
    history = state.history
    if cfg.label_free:
        history = [r for r in history if r.get("sampled_by") != base_version(state.run_id)]
    return next_weights(history, state.iteration, a.focus_floor, cfg.label_free)


def _payload(state: RunState, cfg: RunConfig, slot: str, attempt: int):
    stage, seed = slot_stage(slot), stage_seed(cfg, state.iteration, slot, attempt)
    incumbent, pending = _models(state)
    if stage == "acquire":
        a = cfg.acquisition
        task = main_task(cfg)
        task.seed_set.CopyFrom(to_ref(state.seed_set))  # self-instruct runs: the stored seed set
        return AcquireCommand(
            policy=sampler(state, cfg),
            task=task,
            shard=slot_shard(slot),
            num_shards=a.shards,
            num_prompts=state.prompts_per_shard or a.prompts_per_shard,
            sampling=SamplingParams(
                temperature=a.temperature,
                top_p=a.top_p,
                max_new_tokens=a.max_new_tokens,
                n=a.samples_per_prompt,
                seed=seed,
            ),
            seed=seed,
            self_judge=a.self_judge,
            self_instruct=a.self_instruct,
            category_weights=focus_of(state, cfg),
            tactics=tactics_at(cfg, state.iteration),
            test_sets_json=dump_test_sets(cfg.evaluation.test_sets),
            paraphrase=paraphrase_at(cfg, state.iteration),
        )
    if stage == "select":
        shards = [
            to_ref(state.accepted[k]["samples"])
            for k in sorted(state.accepted, key=_shard_order)
            if k.startswith("acquire/")
        ]
        targets = to_ref(state.refined_targets) if cfg.refinement.write_targets else to_ref(None)
        return SelectCommand(
            shards=shards,
            label_mode=LABEL_MODES[cfg.label_mode],
            params_json=cfg.selection.params.model_dump_json(),
            refined_targets=targets,
            policy=incumbent,
            test_sets_json=dump_test_sets(cfg.evaluation.test_sets),
        )
    if stage == "train":
        return TrainCommand(
            policy=pending,
            datasets=[to_ref(d) for d in training_sets(state, cfg.training.replay_iterations)],
            method=METHODS[cfg.training.method],
            hparams_json=cfg.training.hparams.model_dump_json(),
            seed=seed,
        )
    if stage == "evaluate":
        e = cfg.evaluation
        main = EvalSuite(name="dev", task=main_task(cfg), dev_size=e.dev_size or cfg.task.dev_size)
        # the same dev problems in the task's held-out wordings (a worker skips it for a task without them)
        size = phrasing_size(cfg)
        phrasing = [
            EvalSuite(name=HELDOUT_PHRASING, task=main_task(cfg), dev_size=size, split=HELDOUT_PHRASING)
        ]
        suites = [
            EvalSuite(
                name=s.label, task=task_spec(s.name, s.params), dev_size=s.dev_size or cfg.task.dev_size
            )
            for s in cfg.task.regression_suites
        ]
        return EvaluateCommand(
            candidate=to_model(state.candidate),
            incumbent=incumbent,
            seed=e.seed,
            suites=[main, *(phrasing if size else []), *suites],
            max_new_tokens=e.max_new_tokens,
            interim_looks=e.interim_looks,
            interim_alpha=e.interim_alpha if e.interim_looks else 0.0,
        )
    if stage == "refine":
        r = cfg.refinement
        return RefineCommand(
            incumbent=incumbent,
            task=main_task(cfg),
            dev_size=r.dev_size or cfg.task.dev_size,
            seed=cfg.evaluation.seed,
            strategies=list(r.strategies),
            token_budget=r.token_budget,
            write_targets=r.write_targets,
            target_prompts=r.target_prompts,
        )
    raise ValueError(f"no command for slot {slot!r}")


def _shard_order(slot: str) -> tuple[int, str]:
    return (slot_shard(slot), slot)
