"""The controller's decisions as pure functions: (state, config, input, clock) -> Transition.

Inputs are a run start, a resume, a stop, a stage result (or failure), and a timer tick. Every
result is first checked against the run's open slots: the first complete result of a slot is
accepted, anything else (another attempt, a duplicate, a late result of an earlier stage or an
abandoned round) is ignored. An accepted result that completes a stage gets its verdict
(``verdicts``) and the run advances (``advance``).

A result *ahead* of the run (a later stage of this iteration, or a later iteration) is parked in the
state rather than ignored: after a controller crash its cause (the result that commanded that stage)
may be redelivered after it, since results travel on different topics. Every transition then
accepts the parked results its new commands match (``_drain``), so recovery needs no timeout.
"""

from __future__ import annotations

import base64
import copy

from selfimprove.core.stage import stats_dict
from selfimprove.core.topics import Topics
from selfimprove.evaluator import advance
from selfimprove.evaluator.commands import STAGE_NAME
from selfimprove.evaluator.config import RunConfig
from selfimprove.evaluator.refs import base_version, model_dict, ref_dict, suite_dict
from selfimprove.evaluator.state import COMPLETED, FAILED, RUNNING, STOPPED, RunState, slot_name
from selfimprove.evaluator.transition import Transition
from selfimprove.v2.common_pb2 import ModelRef
from selfimprove.v2.envelope_pb2 import Envelope

IGNORED_KEEP = 512
PARKED_KEEP = 64  # results ahead of the run kept until their slot is commanded (oldest dropped)
ORDER = ("acquire", "select", "train", "evaluate", "refine")  # the stages of one iteration, in order


def start(
    topics: Topics,
    cfg: RunConfig,
    config_yaml: str,
    run_id: str,
    now: float,
    cause: str,
    lineage: dict,
    seed_set: dict | None = None,
) -> Transition:
    """A new run: iteration 1 acquires with the base model. ``seed_set``: the reference (as a dict)
    of the run's stored seed set, for a self-instruct run."""
    state = RunState(
        run_id=run_id, config_yaml=config_yaml, started_at=now, last_progress=now, topic_prefix=topics.prefix
    )
    state.seed_set = dict(seed_set or {})
    state.incumbent = model_dict(ModelRef(base=cfg.base_model, version=base_version(run_id)))
    state.prompts_per_shard = cfg.acquisition.prompts_per_shard
    state.lineage = {
        **lineage,
        "artifacts": [],
        "models": [dict(state.incumbent, iteration=0, promoted=True)],
    }
    tr = Transition(topics, state, cfg, cause, now)
    tr.decide("continue", f"run started: iteration 1 of at most {cfg.budget.iterations}")
    advance.begin_iteration(tr)
    return tr


def resume(topics: Topics, state: RunState, cfg: RunConfig, now: float, cause: str) -> Transition:
    """Continue a stopped (or running) run: re-command every open slot with its next attempt."""
    tr = Transition(topics, copy.deepcopy(state), cfg, cause, now)
    s = tr.state
    if s.status == COMPLETED:
        return tr
    s.status, s.stop_reason = RUNNING, ""
    open_slots = [k for k in s.slots if k not in s.accepted and k.split("/")[0] == s.stage]
    tr.decide("continue", f"run resumed at iteration {s.iteration}, stage {s.stage}")
    for slot in sorted(open_slots):
        tr.command(slot)
    _drain(tr)
    return tr


def stop(topics: Topics, state: RunState, cfg: RunConfig, reason: str, now: float, cause: str) -> Transition:
    tr = Transition(topics, copy.deepcopy(state), cfg, cause, now)
    if tr.state.active:
        tr.finish(STOPPED, reason or "stopped through the control plane")
    return tr


def on_result(topics: Topics, state: RunState, cfg: RunConfig, env: Envelope, now: float) -> Transition:
    """Apply a stage's result or failure event to the run, then any parked result it unblocks."""
    tr = Transition(topics, copy.deepcopy(state), cfg, env.event_id, now)
    _apply(tr, env)
    _drain(tr)
    return tr


def _apply(tr: Transition, env: Envelope) -> None:
    s = tr.state
    stage = STAGE_NAME.get(env.stage, "")
    slot = slot_name(stage, env.shard if stage == "acquire" else None)
    current = s.slots.get(slot)
    why = reason = ""  # reason: the metric label, one of a few words
    if not s.active:
        why, reason = f"run is {s.status}", "run_ended"
    elif env.iteration != s.iteration or stage != s.stage or current is None:
        if ahead(s.iteration, s.stage, env.iteration, stage) and env.event_id not in s.accepted_ids:
            _park(tr, env, stage)
            return
        why = f"late result of iteration {env.iteration} {stage} (now iteration {s.iteration} {s.stage})"
        reason = "late"
    elif slot in s.accepted:
        why, reason = f"{slot} already has an accepted result", "slot_done"
    elif env.attempt < current.floor:
        why, reason = f"attempt {env.attempt} of {slot} belongs to an abandoned round", "abandoned_attempt"
    elif env.event_id in s.accepted_ids:
        why, reason = "already accepted", "duplicate"
    if why:
        s.ignored_ids.append(env.event_id)
        del s.ignored_ids[:-IGNORED_KEEP]
        tr.signal("ignored", stage, why, reason)
        return
    assert current is not None
    if env.WhichOneof("payload") == "stage_failure":
        _failure(tr, slot, env)
        return
    record = result_record(env, stage)
    s.accepted[slot] = record
    s.accepted_ids.append(env.event_id)
    s.tokens_used += _tokens(env)
    s.last_progress = tr.now
    s.lineage.setdefault("artifacts", []).append(
        {
            "iteration": s.iteration,
            "stage": stage,
            "shard": env.shard,
            "attempt": env.attempt,
            "event_id": env.event_id,
            "refs": artifact_refs(record),
        }
    )
    tr.signal("accepted", stage)
    advance.after_accept(tr, stage)


def ahead(iteration: int, stage: str, result_iteration: int, result_stage: str) -> bool:
    """Whether a result belongs to a stage the run has not reached yet.

    >>> ahead(2, "select", 2, "train"), ahead(2, "select", 3, "acquire"), ahead(2, "train", 2, "select")
    (True, True, False)
    >>> ahead(2, "acquire", 1, "refine"), ahead(2, "train", 2, "train")
    (False, False)
    """
    if result_iteration != iteration:
        return result_iteration > iteration
    if stage not in ORDER or result_stage not in ORDER:
        return False
    return ORDER.index(result_stage) > ORDER.index(stage)


def _park(tr: Transition, env: Envelope, stage: str) -> None:
    """Keep a result ahead of the run (its cause not yet applied) until its slot is commanded."""
    s = tr.state
    if any(p["event_id"] == env.event_id for p in s.parked):
        return
    s.parked.append(
        {
            "event_id": env.event_id,
            "iteration": env.iteration,
            "stage": stage,
            "envelope": base64.b64encode(env.SerializeToString()).decode(),
        }
    )
    for dropped in s.parked[:-PARKED_KEEP]:
        tr.signal("ignored", dropped["stage"], "parked result dropped (too many parked)", "parked_dropped")
    del s.parked[:-PARKED_KEEP]
    tr.signal("parked", stage)


def _drain(tr: Transition) -> None:
    """Accept the parked results of the stage the run is now at, until none matches; drop those the
    run has passed (an earlier iteration, or a stage behind it, or the run completed or failed). A
    stopped run keeps them for its resume."""
    s = tr.state
    if s.status == STOPPED:
        return
    while s.parked:
        keep, ready = [], None
        for p in s.parked:
            if not s.active or not (
                ahead(s.iteration, s.stage, p["iteration"], p["stage"])
                or (p["iteration"], p["stage"]) == (s.iteration, s.stage)
            ):
                tr.signal("ignored", p["stage"], "parked result the run has passed", "late")
            elif ready is None and (p["iteration"], p["stage"]) == (s.iteration, s.stage):
                ready = p
            else:
                keep.append(p)
        s.parked = keep
        if ready is None:
            return
        env = Envelope()
        env.ParseFromString(base64.b64decode(ready["envelope"]))
        _apply(tr, env)


def artifact_refs(record: dict) -> dict[str, dict]:
    """The artifact references of an accepted record; a model reference counts by its adapter.

    >>> artifact_refs({"candidate": {"base": "b", "adapter": {"uri": "s3://x/m.json"}}, "stats": {}})
    {'candidate': {'uri': 's3://x/m.json'}}
    """
    refs = {}
    for key, value in record.items():
        ref = value.get("adapter", value) if isinstance(value, dict) else None
        if isinstance(ref, dict) and ref.get("uri"):
            refs[key] = ref
    return refs


def on_tick(topics: Topics, state: RunState, cfg: RunConfig, now: float) -> Transition:
    """Budgets that run out with time, and slots that did not report within their timeout."""
    s = state
    if not s.active:
        return Transition(topics, s, cfg, "", now)
    if now - s.started_at > cfg.budget.wall_time_s and not s.finishing:
        tr = Transition(topics, copy.deepcopy(state), cfg, f"tick/{s.run_id}/wall-time", now)
        advance.conclude(tr, f"budget spent: wall time over {cfg.budget.wall_time_s:.0f}s")
        return tr
    late = [
        k
        for k, v in sorted(s.slots.items())
        if k not in s.accepted
        and k.split("/")[0] == s.stage
        and now - v.commanded_at > cfg.stage(s.stage).timeout_s
    ]
    if not late:
        return Transition(topics, s, cfg, "", now)
    first = s.slots[late[0]]
    tr = Transition(
        topics, copy.deepcopy(state), cfg, f"tick/{s.run_id}/{s.iteration}/{late[0]}/{first.attempt}", now
    )
    limit = cfg.stage(s.stage)
    for slot in late:
        attempt = tr.state.slots[slot].attempt
        if attempt >= limit.max_attempts:
            tr.signal("failure", s.stage)
            _give_up(tr, f"{slot} did not report within {limit.timeout_s:.0f}s after {attempt} attempts")
            return tr
        tr.decide("retry", f"{slot} attempt {attempt} did not report within {limit.timeout_s:.0f}s")
        tr.command(slot)
    return tr


def _failure(tr: Transition, slot: str, env: Envelope) -> None:
    s = tr.state
    f = env.stage_failure
    current = s.slots[slot]
    current.failures += 1
    tr.signal("failure", slot.split("/")[0])
    if env.attempt < current.attempt:
        return  # a newer attempt is already out
    limit = tr.cfg.stage(s.stage).max_attempts
    what = f"{slot} attempt {env.attempt} failed: {f.error_type}: {f.message}"
    if f.retryable and current.attempt < limit:
        tr.decide("retry", what)
        tr.command(slot)
    else:
        _give_up(tr, what if not f.retryable else f"{what} (after {current.attempt} attempts)")


def _give_up(tr: Transition, what: str) -> None:
    """A slot out of attempts fails the run; the final model's calibration only notes it, since the
    loop itself had already completed (``refinement.when: end``)."""
    s = tr.state
    if s.finishing:
        tr.finish(COMPLETED, f"{s.finishing}; the final calibration failed: {what}")
    else:
        tr.finish(FAILED, what)


def _tokens(env: Envelope) -> float:
    """Tokens a result says its stage generated or trained on (selection and refinement report none)."""
    payload = env.WhichOneof("payload")
    if payload in ("acquire_result", "train_result", "evaluate_result"):
        return float(getattr(env, payload).stats.tokens)
    return 0.0


def result_record(env: Envelope, stage: str) -> dict:
    """What a result says, as plain data (what the state keeps of an accepted result)."""
    rec: dict = {"event_id": env.event_id, "attempt": env.attempt}
    if stage == "acquire":
        r = env.acquire_result
        rec.update(samples=ref_dict(r.samples), stats=stats_dict(r.stats))
    elif stage == "select":
        r = env.select_result
        rec.update(dataset=ref_dict(r.dataset), stats=stats_dict(r.stats))
    elif stage == "train":
        r = env.train_result
        rec.update(
            candidate=model_dict(r.candidate), loss_curve=ref_dict(r.loss_curve), stats=stats_dict(r.stats)
        )
    elif stage == "evaluate":
        r = env.evaluate_result
        rec.update(
            suites=[suite_dict(x) for x in r.suites], details=ref_dict(r.details), stats=stats_dict(r.stats)
        )
    elif stage == "refine":
        r = env.refine_result
        rec.update(
            table=[
                {
                    "strategy": t.strategy,
                    "accuracy": t.accuracy,
                    "tokens_per_problem": t.tokens_per_problem,
                    "n": t.n,
                }
                for t in r.table
            ],
            chosen=r.chosen,
            targets=ref_dict(r.targets),
            calibration=ref_dict(r.calibration),
            stats=stats_dict(r.stats),
        )
    return rec
