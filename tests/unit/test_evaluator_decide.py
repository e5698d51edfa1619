"""The controller's pure decisions, driven by the fake stages' answers without a broker."""

from __future__ import annotations

import pytest

from selfimprove.core.topics import Topics
from selfimprove.evaluator import decide
from selfimprove.evaluator.config import ConfigError, dump_config, load_config
from selfimprove.evaluator.state import COMPLETED, FAILED, RunState
from tests.support.fake_stages import respond

pytestmark = pytest.mark.unit
TOPICS = Topics("t")
BASE = """
run_id: r1
budget: {iterations: 3}
acquisition: {shards: 2}
stages: {train: {timeout_s: 10, max_attempts: 2}}
"""


def run(config: str, script: dict, max_steps: int = 200, now: float = 1000.0):
    cfg = load_config(config)
    tr = decide.start(TOPICS, cfg, dump_config(cfg), "r1", now, "start", {"code_version": "x"})
    state, queue, log = tr.state, list(tr.out), list(tr.out)
    for _ in range(max_steps):
        if not queue:
            break
        out = queue.pop(0)
        if out.envelope.WhichOneof("payload") == "decision":
            continue
        for result in respond(out.envelope, script):
            now += 1
            tr = decide.on_result(TOPICS, state, cfg, result, now)
            state = tr.state
            queue += tr.out
            log += tr.out
    return state, log


def acquires_of(log) -> list:
    return [o.envelope.acquire_command for o in log if o.envelope.WhichOneof("payload") == "acquire_command"]


def kinds(state: RunState) -> list[str]:
    return [d["kind"] for d in state.decisions]


def test_whole_iterations_promote_then_budget():
    state, log = run(BASE, {"eval": [[0.6, 0.4, 0.01], [0.5, 0.6, 0.5]]})
    assert state.status == COMPLETED
    assert "promote" in kinds(state) and kinds(state).count("promote") == 1
    assert len(state.promotions) == 1 and state.promotions[0]["iteration"] == 1
    assert state.incumbent["version"] == "r1/iter-001"
    # iteration 2 was rejected: no refine (incumbent unchanged), iteration 3 too
    assert state.stop_reason in (
        "budget spent: 3 iterations",
        "plateau: no promotion in the last 2 iterations",
    )
    commands = [o.envelope for o in log if o.envelope.WhichOneof("payload") != "decision"]
    assert [c.WhichOneof("payload") for c in commands[:6]] == [
        "acquire_command",
        "acquire_command",
        "select_command",
        "train_command",
        "evaluate_command",
        "refine_command",
    ]
    assert len({c.event_id for c in commands}) == len(commands)
    sent = [o for o in log if o.envelope.WhichOneof("payload") != "decision"]
    # each acquire shard to a partition of its own (replicas sample side by side), the rest by run
    assert [(o.key, o.spread) for o in sent[:3]] == [("r1/0", 0), ("r1/1", 1), ("r1", None)]
    assert all(c.attempt == 1 for c in commands)
    assert len(state.accepted_ids) == len(set(state.accepted_ids))


def test_worse_candidate_rejected():
    state, _ = run(BASE, {"eval": [[0.3, 0.5, 0.01]]})
    assert "promote" not in kinds(state)
    assert any(d["kind"] == "reject" and "no gain" in d["reason"] for d in state.decisions)
    assert state.incumbent["version"] == "r1/base"


def test_regression_blocks_promotion():
    cfg = BASE + "task: {regression_suites: [{label: add1, params: {categories: [add1]}, dev_size: 10}]}\n"
    state, _ = run(cfg, {"eval": [[0.7, 0.4, 0.001, {"add1": [0.6, 0.9]}]]})
    rejects = [d for d in state.decisions if d["kind"] == "reject"]
    assert rejects and rejects[0]["reason"].startswith("regression on add1")
    # the held-out-phrasing split beside dev, then the regression suites
    assert [e["name"] for e in rejects[0]["evidence"]] == ["dev", "heldout_phrasing", "add1"]
    assert not state.promotions


def test_regression_alpha_lets_a_drop_that_is_noise_pass():
    cfg = BASE + "task: {regression_suites: [{label: add1, params: {categories: [add1]}, dev_size: 10}]}\n"
    cfg += "evaluation: {regression_alpha: 0.05}\n"
    state, _ = run(cfg, {"eval": [[0.7, 0.4, 0.001, {"add1": [0.6, 0.9]}], [0.5, 0.6, 0.5]]})
    promote = next(d for d in state.decisions if d["kind"] == "promote")
    assert promote["reason"].endswith("add1 fell 0.900 -> 0.600, not significant (p=0.5000)")
    assert state.promotions[0]["iteration"] == 1


def test_plateau_stops():
    cfg = BASE.replace("iterations: 3", "iterations: 10")
    state, _ = run(cfg, {"eval": [[0.5, 0.5, 1.0]]})
    assert state.stop_reason == "plateau: no promotion in the last 2 iterations"
    assert state.iteration == 2


def test_collapse_stops():
    cfg = BASE.replace("iterations: 3", "iterations: 10") + "stopping: {plateau_patience: 9}\n"
    script = {"eval": [[0.5, 0.5, 1.0]], "agreement": [0.5, 0.7, 0.9], "diversity": [0.8, 0.6, 0.4]}
    state, _ = run(cfg, script)
    assert state.stop_reason.startswith("collapse")
    assert state.iteration == 3 and state.stage == "select"


def test_unhealthy_training_is_rejected():
    state, _ = run(BASE, {"loss": [[2.0, float("nan")]]})
    assert any(d["kind"] == "reject" and "not finite" in d["reason"] for d in state.decisions)
    assert not state.promotions


def test_too_little_data_reacquires_then_stops():
    cfg = BASE + "selection: {min_kept: 5}\n"
    state, log = run(cfg, {"kept": [0]})
    assert state.status == COMPLETED and state.stop_reason.startswith("too little data")
    acquires = [o.envelope for o in log if o.envelope.WhichOneof("payload") == "acquire_command"]
    assert [a.attempt for a in acquires] == [1, 1, 2, 2]
    assert acquires[2].acquire_command.num_prompts == 2 * acquires[0].acquire_command.num_prompts
    assert acquires[2].acquire_command.seed != acquires[0].acquire_command.seed


def test_a_data_retry_asks_no_more_than_the_task_has():
    # the 1-digit additions have 88 train problems: 2 x 32 grows to 2 x 44, not 2 x 64
    cfg = BASE + "task: {params: {categories: [add1]}, dev_size: 8}\nselection: {min_kept: 5}\n"
    state, log = run(cfg.replace("shards: 2}", "shards: 2, prompts_per_shard: 32}"), {"kept": [0]})
    assert [a.num_prompts for a in acquires_of(log)] == [32, 32, 44, 44]
    assert state.stop_reason.startswith("too little data")
    # already asking all of them: no retry, and the stop says why
    state, log = run(cfg.replace("shards: 2}", "shards: 2, prompts_per_shard: 44}"), {"kept": [0]})
    assert [a.num_prompts for a in acquires_of(log)] == [44, 44]
    assert state.stop_reason.endswith("and the task has no more than 88 train problems")


def test_duplicates_and_late_results_are_ignored():
    state, _ = run(BASE, {"duplicate": ["acquire", "evaluate"], "eval": [[0.6, 0.4, 0.01], [0.5, 0.6, 0.5]]})
    assert len(state.promotions) == 1
    assert len(state.ignored_ids) >= 2


def test_timeout_recommands_with_next_attempt_then_fails():
    cfg = load_config(BASE)
    state = run(BASE, {"drop": ["train:1", "train:2"]}, max_steps=5)[0]
    assert state.stage == "train" and state.slots["train"].attempt == 1
    now = state.slots["train"].commanded_at
    assert not decide.on_tick(TOPICS, state, cfg, now + 5).out
    tr = decide.on_tick(TOPICS, state, cfg, now + 11)
    retried = [o.envelope for o in tr.out if o.envelope.WhichOneof("payload") == "train_command"]
    assert [e.attempt for e in retried] == [2]
    # a repeated tick re-sends the same command id (idempotent), a later one gives up
    again = decide.on_tick(TOPICS, state, cfg, now + 11)
    assert [o.envelope.event_id for o in again.out] == [o.envelope.event_id for o in tr.out]
    final = decide.on_tick(TOPICS, tr.state, cfg, now + 30)
    assert final.state.status == FAILED and "after 2 attempts" in final.state.stop_reason


def test_retryable_failure_retries():
    state, log = run(BASE, {"fail": ["select:1"]})
    selects = [o.envelope.attempt for o in log if o.envelope.WhichOneof("payload") == "select_command"]
    assert selects[:2] == [1, 2]
    assert state.status == COMPLETED


def test_redelivered_result_gives_the_same_outputs():
    cfg = load_config(BASE)
    tr = decide.start(TOPICS, cfg, dump_config(cfg), "r1", 0.0, "start", {})
    [first] = respond(tr.out[1].envelope, {})
    [last] = respond(tr.out[2].envelope, {})
    state = decide.on_result(TOPICS, tr.state, cfg, first, 5.0).state
    a = decide.on_result(TOPICS, state, cfg, last, 6.0)
    b = decide.on_result(TOPICS, state, cfg, last, 7.0)
    assert len(a.out) == 2  # the decision and the select command
    assert [o.envelope.event_id for o in a.out] == [o.envelope.event_id for o in b.out]


def _payloads(tr, kind: str) -> list:
    return [o.envelope for o in tr.out if o.envelope.WhichOneof("payload") == kind]


def test_a_result_ahead_of_its_cause_is_parked_then_accepted_when_the_cause_arrives():
    """After a controller crash the train result can come back before the redelivered select result
    that commanded training: it is kept, and accepted (with no retry) once the select result is applied."""
    cfg = load_config(BASE)
    tr = decide.start(TOPICS, cfg, dump_config(cfg), "r1", 0.0, "start", {})
    state = tr.state
    for command in _payloads(tr, "acquire_command"):
        [result] = respond(command, {})
        state = decide.on_result(TOPICS, state, cfg, result, 1.0).state
    assert state.stage == "select"
    crashed = decide.on_result(TOPICS, state, cfg, respond(state_command(state, cfg, "select"), {})[0], 2.0)
    [train_command] = _payloads(crashed, "train_command")
    [train_result] = respond(train_command, {})
    [select_result] = respond(state_command(state, cfg, "select"), {})

    early = decide.on_result(TOPICS, state, cfg, train_result, 3.0)  # the snapshot still says "select"
    assert early.state.stage == "select" and not early.out
    assert [p["event_id"] for p in early.state.parked] == [train_result.event_id]
    assert ("parked", "train") in early.signals
    assert train_result.event_id not in early.state.ignored_ids
    assert RunState.from_json(early.state.to_json()) == early.state  # parked results survive the snapshot

    cause = decide.on_result(TOPICS, early.state, cfg, select_result, 4.0)  # redelivered
    assert cause.state.stage == "evaluate" and not cause.state.parked
    assert cause.state.accepted["train"]["event_id"] == train_result.event_id
    assert [e.attempt for e in _payloads(cause, "evaluate_command")] == [1]
    assert [e.event_id for e in _payloads(cause, "train_command")] == [
        train_command.event_id
    ]  # same id again
    assert not any(d["kind"] == "retry" for d in cause.state.decisions)


def test_results_behind_the_run_are_ignored_and_parked_ones_it_passed_are_dropped():
    cfg = load_config(BASE)
    state, _ = run(BASE, {"eval": [[0.6, 0.4, 0.01]]}, max_steps=6)
    assert state.stage == "train" and not state.parked
    [select_result] = respond(state_command(state, cfg, "select"), {})
    behind = decide.on_result(TOPICS, state, cfg, select_result, 2000.0)  # another copy of a done stage
    assert not behind.state.parked and behind.signals[0][:2] == ("ignored", "select")
    future = respond(state_command(state, cfg, "select"), {})[0]
    future.iteration, future.stage = state.iteration + 5, 1  # an acquire result five iterations ahead
    parked = decide.on_result(TOPICS, state, cfg, future, 2001.0).state
    assert len(parked.parked) == 1
    stopped = decide.stop(TOPICS, parked, cfg, "enough", 2002.0, "stop")
    assert stopped.state.status == "stopped"
    kept = decide.on_result(TOPICS, stopped.state, cfg, select_result, 2003.0)
    assert len(kept.state.parked) == 1  # a stopped run may be resumed
    kept.state.status = COMPLETED
    later = decide.on_result(TOPICS, kept.state, cfg, select_result, 2004.0)
    assert not later.state.parked  # the run ended: nothing parked is kept


def state_command(state: RunState, cfg, stage: str):
    """The command the run sent (or would resend) for ``stage``'s current attempt."""
    from selfimprove.evaluator import commands

    slot = state.slots[stage]
    return commands.command(TOPICS, state, cfg, stage, slot.attempt, "cause").envelope


def test_state_survives_its_snapshot_format():
    state, _ = run(BASE, {"eval": [[0.6, 0.4, 0.01]]})
    assert RunState.from_json(state.to_json()) == state


def test_replay_trains_on_earlier_iterations_selected_sets_newest_first():
    config = BASE + "training: {replay_iterations: 1}\nstopping: {plateau_patience: 5}\n"
    state, log = run(config, {"eval": [[0.6, 0.4, 0.01], [0.5, 0.6, 0.5]]})
    trains = [o.envelope for o in log if o.envelope.WhichOneof("payload") == "train_command"]
    sets = [[d.uri for d in t.train_command.datasets] for t in trains]
    selected = [r["dataset"]["uri"] for r in state.history]
    assert len(sets) == 3 and len(set(selected)) == 3
    assert sets == [[selected[0]], [selected[1], selected[0]], [selected[2], selected[1]]]
    assert [
        m["trained_from"] for m in state.lineage["models"] if m["iteration"]
    ] == sets  # gc keeps every set a model used
    plain, log = run(BASE, {"eval": [[0.6, 0.4, 0.01], [0.5, 0.6, 0.5]]})
    trains = [o.envelope for o in log if o.envelope.WhichOneof("payload") == "train_command"]
    assert all(len(t.train_command.datasets) == 1 for t in trains)


def test_focus_shares_the_next_iterations_prompts_by_the_last_failure_rates():
    config = (
        BASE + "acquisition: {shards: 2, focus: true, focus_floor: 0.1}\nstopping: {plateau_patience: 5}\n"
    )
    script = {"eval": [[0.6, 0.4, 0.01]], "category_pass": {"add2": 0.7, "sub2": 0.1}}
    state, log = run(config, script)
    acquires = [o.envelope for o in log if o.envelope.WhichOneof("payload") == "acquire_command"]
    weights = [dict(a.acquire_command.category_weights) for a in acquires]
    assert len(weights) == 6 and weights[:2] == [{}, {}]  # the first iteration: the task's even mix
    assert weights[2] == weights[5] == pytest.approx({"add2": 0.25, "sub2": 0.75})
    assert state.history[0]["category_pass"] == pytest.approx({"add2": 0.7, "sub2": 0.1})
    plain, log = run(BASE, script)
    acquires = [o.envelope for o in log if o.envelope.WhichOneof("payload") == "acquire_command"]
    assert all(not a.acquire_command.category_weights for a in acquires)


def test_label_free_focus_shares_the_next_iterations_prompts_by_open_labels_never_by_pass_rates():
    config = BASE + "label_mode: label-free\nacquisition: {shards: 2, focus: true, focus_floor: 0.1}\n"
    # pass rates (the truth) would favour sub2; open labels (the model's own answers) favour add2
    script = {
        "eval": [[0.6, 0.4, 0.01]],
        "category_pass": {"add2": 0.1, "sub2": 0.7},
        "category_open": {"add2": 0.75, "sub2": 0.25, "add1": 0.0},
    }
    state, log = run(config + "stopping: {plateau_patience: 5}\n", script)
    weights = [dict(a.category_weights) for a in acquires_of(log)]
    # iteration 1 sampled the base model, whose figures are not read; iteration 2 the promoted model
    assert [r["sampled_by"] for r in state.history] == ["r1/base", "r1/iter-001", "r1/iter-002"]
    assert len(weights) == 6 and weights[:4] == [{}, {}, {}, {}]
    assert weights[4] == weights[5] == pytest.approx({"add1": 0.1, "add2": 0.675, "sub2": 0.225})
    assert state.history[0]["category_open"] == pytest.approx({"add1": 0.0, "add2": 0.75, "sub2": 0.25})
    assert state.history[0]["asked"] == {"add1": 8.0, "add2": 8.0, "sub2": 8.0}  # two shards of 4 each
    blind = {k: v for k, v in script.items() if k != "category_pass"}
    _, again = run(config + "stopping: {plateau_patience: 5}\n", blind)
    assert [dict(a.category_weights) for a in acquires_of(again)] == weights
    # while nothing is promoted the base model samples every iteration: the task's even mix throughout
    _, never = run(config + "stopping: {plateau_patience: 5}\n", {**script, "eval": [[0.4, 0.4, 0.9]]})
    assert len(acquires_of(never)) >= 4 and all(not a.category_weights for a in acquires_of(never))


def test_worked_replies_are_asked_for_from_the_configured_iteration_on():
    config = BASE + "task: {tactics: {worked_from_iteration: 2}}\nstopping: {plateau_patience: 5}\n"
    _, log = run(config, {"eval": [[0.6, 0.4, 0.01]]})
    acquires = [o.envelope for o in log if o.envelope.WhichOneof("payload") == "acquire_command"]
    assert [(a.iteration, a.acquire_command.tactics.worked) for a in acquires] == [
        (1, False),
        (1, False),
        (2, True),
        (2, True),
        (3, True),
        (3, True),
    ]
    assert not any(
        a.acquire_command.tactics.worked_by_majority for a in acquires
    )  # verified: the verifier picks
    assert not any(a.acquire_command.tactics.rationalize_steps for a in acquires)
    hinted = config.replace("worked_from_iteration: 2", "worked_from_iteration: 2, rationalize_steps: true")
    _, log = run(hinted, {"eval": [[0.6, 0.4, 0.01]]})
    acquires = [o.envelope for o in log if o.envelope.WhichOneof("payload") == "acquire_command"]
    assert len(acquires) == 6 and all(a.acquire_command.tactics.rationalize_steps for a in acquires)
    _, log = run(BASE, {"eval": [[0.6, 0.4, 0.01]]})
    assert not any(o.envelope.acquire_command.tactics.worked for o in log)
    _, log = run(config + "label_mode: label-free\n", {"eval": [[0.6, 0.4, 0.01]]})
    acquires = [o.envelope for o in log if o.envelope.WhichOneof("payload") == "acquire_command"]
    assert [a.acquire_command.tactics.worked for a in acquires][1:3] == [False, True]
    assert all(
        a.acquire_command.tactics.worked_by_majority for a in acquires
    )  # label-free: the steps' majorities


def test_interim_looks_ride_in_the_evaluate_command_and_an_early_verdict_says_so():
    config = BASE + "task: {dev_size: 400}\nevaluation: {interim_looks: [100, 200], interim_alpha: 0.001}\n"
    state, log = run(config, {"eval": [[0.3, 0.05, 1e-6], [0.4, 0.3, 0.5]], "eval_n": {1: 100}})
    evaluates = [
        o.envelope.evaluate_command for o in log if o.envelope.WhichOneof("payload") == "evaluate_command"
    ]
    cmd = evaluates[0]
    assert list(cmd.interim_looks) == [100, 200] and cmd.interim_alpha == 0.001
    assert [(s.name, s.dev_size, s.split) for s in cmd.suites] == [
        ("dev", 400, ""),
        ("heldout_phrasing", 400, "heldout_phrasing"),
    ]
    reasons = [d["reason"] for d in state.decisions if d["kind"] in ("promote", "reject")]
    assert reasons[0].endswith("at an interim look (100 of 400 dev problems)")
    assert "interim" not in reasons[1]
    _, plain = run(BASE, {"eval": [[0.6, 0.4, 0.01]]})
    first = next(
        o.envelope.evaluate_command for o in plain if o.envelope.WhichOneof("payload") == "evaluate_command"
    )
    assert not first.interim_looks and first.suites[0].task.params_json == "{}"
    with pytest.raises(ConfigError, match="interim_looks"):
        load_config(BASE + "task: {dev_size: 400}\nevaluation: {interim_looks: [200, 100]}\n")
    with pytest.raises(ConfigError, match="interim_alpha"):
        load_config(BASE + "task: {dev_size: 400}\nevaluation: {interim_looks: [100], interim_alpha: 0.05}\n")


def test_the_data_gate_counts_hinted_replies_and_the_answered_fraction():
    from selfimprove.evaluator import verdicts
    from selfimprove.v2.stages_pb2 import AcquireStats

    shard = dict(samples=0, hinted_samples=64, yield_rate=0.0, answered=0.8, prompts=32)
    ok = verdicts.data_verdict([AcquireStats(**shard)] * 2, min_samples=16, min_yield=0.02)
    assert ok.ok and ok.answered == pytest.approx(0.8)
    thin = verdicts.data_verdict(
        [AcquireStats(**{**shard, "answered": 0.01})], min_samples=16, min_yield=0.02
    )
    assert not thin.ok and "yield 0.010 < 0.02" in thin.reason


def test_pending_tolerance_trains_on_from_a_candidate_within_noise_below_the_incumbent():
    budget = "budget: {iterations: 4}\nstopping: {plateau_patience: 5}\n"
    # 1: promoted; 2: one point below the incumbent; 3: five points below; 4: anything
    script = {"eval": [[0.6, 0.4, 0.01], [0.59, 0.6, 0.8], [0.55, 0.6, 0.3], [0.6, 0.6, 1.0]]}

    def parents(training):
        state, log = run(BASE + f"training: {training}\n" + budget, script)
        trains = [
            o.envelope.train_command for o in log if o.envelope.WhichOneof("payload") == "train_command"
        ]
        return state, [t.policy.version for t in trains]

    state, versions = parents("{continue_pending: true, pending_tolerance: 0.02}")
    assert versions == ["r1/base", "r1/iter-001", "r1/iter-002", "r1/iter-001"]
    assert state.incumbent["version"] == "r1/iter-001"  # a pending line never serves
    rejects = [d["reason"] for d in state.decisions if d["kind"] == "reject"]
    assert "within the pending tolerance 0.02" in rejects[0]
    assert rejects[0].endswith(
        "; kept: the next iteration trains it further"
    )  # a pending line, not thrown away
    assert not rejects[1].endswith("trains it further")  # five points below: back to the incumbent
    _, versions = parents("{continue_pending: true}")
    assert versions == ["r1/base", "r1/iter-001", "r1/iter-001", "r1/iter-001"]
    with pytest.raises(ConfigError, match="pending_tolerance needs training.continue_pending"):
        load_config(BASE + "training: {pending_tolerance: 0.02}\n")


def test_acquisition_samples_the_incumbent_while_training_goes_on_from_a_pending_candidate():
    budget = "budget: {iterations: 4}\nstopping: {plateau_patience: 5}\n"
    # 1: promoted; 2: +5 points, not significant (pending); 3: worse (back to the incumbent); 4: anything
    script = {"eval": [[0.6, 0.4, 0.01], [0.65, 0.6, 0.3], [0.5, 0.6, 0.01], [0.6, 0.6, 1.0]]}

    def samplers(acquisition):
        config = BASE + f"acquisition: {acquisition}\ntraining: {{continue_pending: true}}\n" + budget
        _, log = run(config, script)
        acquires = [
            o.envelope.acquire_command for o in log if o.envelope.WhichOneof("payload") == "acquire_command"
        ]
        return [a.policy.version for a in acquires[::2]]  # shard 0 of each iteration

    assert samplers("{shards: 2}") == ["r1/base", "r1/iter-001", "r1/iter-001", "r1/iter-001"]
    # the pending candidate sampling its own data showed no gain, so the option is gone
    with pytest.raises(ConfigError, match="acquisition.sample_pending: Extra inputs are not permitted"):
        load_config(BASE.replace("acquisition: {shards: 2}", "acquisition: {sample_pending: true}"))


def test_continue_pending_trains_on_from_a_candidate_whose_gain_is_not_yet_significant():
    config = (
        BASE
        + "training: {continue_pending: true}\nbudget: {iterations: 4}\nstopping: {plateau_patience: 5}\n"
    )
    # 1: promoted; 2: +5 points, not significant; 3: significant; 4: worse than the incumbent
    script = {"eval": [[0.6, 0.4, 0.01], [0.65, 0.6, 0.3], [0.7, 0.6, 0.01], [0.6, 0.7, 0.01]]}
    state, log = run(config, script)
    trains = [o.envelope.train_command for o in log if o.envelope.WhichOneof("payload") == "train_command"]
    evals = [
        o.envelope.evaluate_command for o in log if o.envelope.WhichOneof("payload") == "evaluate_command"
    ]
    assert [t.policy.version for t in trains] == ["r1/base", "r1/iter-001", "r1/iter-002", "r1/iter-003"]
    assert [e.incumbent.version for e in evals] == ["r1/base", "r1/iter-001", "r1/iter-001", "r1/iter-003"]
    assert kinds(state).count("promote") == 2 and state.incumbent["version"] == "r1/iter-003"
    parents = {m["version"]: m["parent"] for m in state.lineage["models"] if m["iteration"]}
    assert parents["r1/iter-003"] == "r1/iter-002" and parents["r1/iter-002"] == "r1/iter-001"
    assert state.train_parent == {}  # iteration 4 was worse: the next training starts from the incumbent
    plain, log = run(BASE + "budget: {iterations: 4}\nstopping: {plateau_patience: 5}\n", script)
    trains = [o.envelope.train_command for o in log if o.envelope.WhichOneof("payload") == "train_command"]
    assert [t.policy.version for t in trains] == ["r1/base", "r1/iter-001", "r1/iter-001", "r1/iter-003"]


def test_the_label_check_rides_in_every_acquire_command_of_a_label_free_run():
    config = BASE + "label_mode: label-free\ntask: {tactics: {check_labels: true}}\n"
    acquires = acquires_of(run(config, {"eval": [[0.6, 0.4, 0.01]]})[1])
    assert acquires and all(a.tactics.check_labels for a in acquires)
    assert len({a.policy.version for a in acquires}) > 1  # the base model's labels and a trained model's
    _, log = run(BASE + "label_mode: label-free\n", {"eval": [[0.6, 0.4, 0.01]]})
    assert not any(o.envelope.acquire_command.tactics.check_labels for o in log)


def test_a_label_free_data_gate_judges_the_majority_share_never_the_verified_yield():
    gate = "acquisition: {shards: 2, min_yield: 0.1, max_data_retries: 0}\n"
    free, verified = BASE + "label_mode: label-free\n" + gate, BASE + gate
    no_verified_yield = {"eval": [[0.6, 0.4, 0.01]], "yield": [0.0], "majority_share": [0.5]}
    state, _ = run(free, no_verified_yield)
    acquired = [d for d in state.decisions if d["reason"].startswith("acquired")]
    assert acquired and acquired[0]["reason"] == "acquired 20 samples, majority share 0.500"
    assert "too little data" not in str(state.decisions)
    state, _ = run(verified, no_verified_yield)
    assert "too little data: yield 0.000 < 0.1" in str(state.decisions)
    state, _ = run(free, {"eval": [[0.6, 0.4, 0.01]], "yield": [0.5], "majority_share": [0.05]})
    assert "too little data: majority share 0.050 < 0.1" in str(state.decisions)


def commanded(log, stage: str) -> list:
    return [o.envelope for o in log if o.envelope.WhichOneof("payload") == f"{stage}_command"]


def test_refine_when_end_calibrates_only_the_final_incumbent_once_the_loop_stops():
    config = BASE + "refinement: {when: end}\nstopping: {plateau_patience: 5}\n"
    every = {"eval": [[0.6, 0.4, 0.01], [0.7, 0.6, 0.01], [0.5, 0.7, 0.5]]}
    state, log = run(config, every)
    assert state.status == COMPLETED and state.stop_reason == "budget spent: 3 iterations"
    assert len(state.promotions) == 2
    [refine] = commanded(log, "refine")  # none after either promotion, one at the end
    assert refine.iteration == 3 and refine.refine_command.incumbent.adapter.uri
    assert state.refined_for == state.incumbent["version"] == "r1/iter-002"
    assert state.decisions[-2]["reason"].startswith("budget spent: 3 iterations: calibrating")
    assert kinds(state)[-1] == "stop"
    _, each = run(BASE + "stopping: {plateau_patience: 5}\n", every)
    assert [r.iteration for r in commanded(each, "refine")] == [1, 2]


def test_whole_iterations_begins_no_iteration_the_wall_time_budget_would_cut_off():
    every = {"eval": [[0.6, 0.4, 0.01], [0.7, 0.6, 0.01], [0.8, 0.7, 0.01]]}
    budget = "budget: {iterations: 5, wall_time_s: 8, whole_iterations: true}\nrefinement: {when: end}\n"
    state, log = run(BASE + budget, every)
    # each result takes 1s in run(): iteration 1 ended at 5s, so a second would end at about 10s
    assert state.status == COMPLETED and [h["iteration"] for h in state.history] == [1]
    assert state.stop_reason == (
        "budget spent: iteration 2 would end at about 10s, after the wall-time budget of 8s (iteration 1 took 5s)"
    )
    assert len(commanded(log, "train")) == 1 and state.refined_for == state.incumbent["version"]
    first = state.history[0]  # what the projection reads: the stages' seconds, the problems scored
    assert [first[f"{k}_s"] for k in ("acquire", "select", "train", "evaluate")] == [2.0, 1.0, 1.0, 1.0]
    assert first["evaluated"] == [100, 100]
    roomy, _ = run(BASE + budget.replace("wall_time_s: 8", "wall_time_s: 13"), every)
    assert [h["iteration"] for h in roomy.history] == [1, 2]  # 2 fits (about 10s); a third would not
    assert roomy.stop_reason.startswith("budget spent: iteration 3 would end at about 15s")
    plain, _ = run(BASE + budget.replace(", whole_iterations: true", ""), every)
    assert [h["iteration"] for h in plain.history] == [1, 2]  # without it: begun though it cannot fit
    assert plain.stop_reason == "budget spent: wall time over 8s"


def test_refine_when_end_runs_after_the_wall_time_budget_and_ignores_the_abandoned_stage():
    config = BASE + "refinement: {when: end}\nbudget: {iterations: 3, wall_time_s: 100}\n"
    cfg = load_config(config)
    state, log = run(config, {"drop": ["train:1"]}, max_steps=5)
    assert state.stage == "train"
    [train] = commanded(log, "train")
    tick = decide.on_tick(TOPICS, state, cfg, state.started_at + 101)
    assert tick.state.status == "running" and tick.state.stage == "refine"
    assert tick.state.finishing == "budget spent: wall time over 100s"
    [refine] = commanded(tick.out, "refine")
    assert (
        refine.refine_command.incumbent.base and not refine.refine_command.incumbent.adapter.uri
    )  # the base
    # the budget is spent already: later ticks wait for the calibration, not finish without it
    assert not decide.on_tick(TOPICS, tick.state, cfg, state.started_at + 150).out
    [late] = respond(train, {})
    ignored = decide.on_result(TOPICS, tick.state, cfg, late, state.started_at + 151).state
    assert ignored.stage == "refine" and late.event_id in ignored.ignored_ids
    [done] = respond(refine, {})
    final = decide.on_result(TOPICS, ignored, cfg, done, state.started_at + 160).state
    assert final.status == COMPLETED and final.stop_reason == "budget spent: wall time over 100s"
    assert final.refined_for == final.incumbent["version"]


def test_a_final_calibration_that_fails_completes_the_run_and_says_so():
    config = BASE + "refinement: {when: end}\nstages: {refine: {timeout_s: 10, max_attempts: 1}}\n"
    state, _ = run(config, {"eval": [[0.6, 0.4, 0.01]], "fail": ["refine:1"]})
    assert state.status == COMPLETED
    assert state.stop_reason.startswith("budget spent: 3 iterations; the final calibration failed: refine")
    failed, _ = run(BASE + "stages: {refine: {timeout_s: 10, max_attempts: 1}}\n", {"fail": ["refine:1"]})
    assert failed.status == FAILED  # a calibration the loop waits on still fails the run


def test_refine_when_end_refuses_refine_then_distill():
    with pytest.raises(ConfigError, match="refinement.write_targets"):
        load_config(BASE + "refinement: {when: end, write_targets: true}\n")


def test_final_pick_best_dev_serves_a_last_candidate_above_the_incumbent_once_at_the_end():
    loop = "training: {continue_pending: true}\nbudget: {iterations: 3}\nstopping: {plateau_patience: 5}\n"
    # 1: promoted; 2: +2 points, not significant; 3: +5 points, not significant (the last evaluated)
    script = {"eval": [[0.6, 0.4, 0.01], [0.62, 0.6, 0.4], [0.65, 0.6, 0.09]]}
    picked, log = run(BASE + loop + "evaluation: {final_pick: best_dev}\n", script)
    plain, _ = run(BASE + loop, script)
    assert plain.incumbent["version"] == "r1/iter-001" and len(plain.promotions) == 1
    assert picked.status == COMPLETED and picked.incumbent["version"] == "r1/iter-003"
    assert picked.incumbent_accuracy == 0.65 and picked.accuracy[-1] == 0.65
    last = [d for d in picked.decisions if d["kind"] == "promote"][-1]
    assert last["reason"].startswith("final pick: candidate 0.650 > incumbent 0.600 on all 100 dev")
    assert last["figures"]["final_pick"] == 1.0 and "p=0.0900" in last["reason"]
    assert [p["version"] for p in picked.promotions] == ["r1/iter-001", "r1/iter-003"]
    assert picked.history[-1]["final_pick"] is True and picked.runner_up == {}
    # the picked model is calibrated before the run completes (refinement after a promotion)
    refines = [o.envelope.refine_command for o in log if o.envelope.WhichOneof("payload") == "refine_command"]
    assert refines[-1].incumbent.version == "r1/iter-003"
    # never a candidate settled at an interim look, below the incumbent, or before a later evaluation
    for ending in ([0.58, 0.6, 0.6], [0.65, 0.6, 0.09, {}]):
        other = {"eval": [*script["eval"][:2], ending], "eval_n": {3: 50} if len(ending) == 4 else {}}
        state, _ = run(BASE + loop + "evaluation: {final_pick: best_dev}\n", other)
        assert state.incumbent["version"] == "r1/iter-001", ending
    with pytest.raises(ConfigError, match="final_pick"):
        load_config(BASE + "evaluation: {final_pick: best}\n")


def test_a_final_pick_at_a_wall_time_tick_records_the_iteration_that_evaluated_it():
    config = (
        BASE
        + "training: {continue_pending: true}\nbudget: {iterations: 3, wall_time_s: 100}\n"
        + "stopping: {plateau_patience: 5}\nevaluation: {final_pick: best_dev}\n"
    )
    cfg = load_config(config)
    # iteration 1: +5 points, not significant; the run is cut off while iteration 2 trains
    state, _ = run(config, {"eval": [[0.65, 0.6, 0.3]]}, max_steps=16)
    assert state.iteration == 2 and state.stage == "train" and state.runner_up
    tick = decide.on_tick(TOPICS, state, cfg, state.started_at + 101)
    assert tick.state.incumbent["version"] == "r1/iter-001"
    assert tick.state.promotions[-1]["iteration"] == 1
    assert tick.state.history[0]["final_pick"] is True


def test_the_runs_test_sets_ride_in_the_acquire_and_select_commands():
    from selfimprove.runtime.evalguard import parse_test_sets

    sets = "evaluation: {test_sets: [{label: 2D+, gpt3: two_digit_addition}, {label: s, data: {path: x.jsonl}}]}\n"
    _, log = run(BASE + sets, {})
    commands = [
        getattr(o.envelope, kind)
        for o in log
        if (kind := o.envelope.WhichOneof("payload")) in ("acquire_command", "select_command")
    ]
    assert len(commands) >= 3
    for cmd in commands:
        parsed = parse_test_sets(cmd.test_sets_json)
        assert [s.label for s in parsed] == ["2D+", "s"] and parsed[1].data.path == "x.jsonl"
    _, log = run(BASE, {})
    assert all(o.envelope.select_command.test_sets_json == "" for o in log)


def test_the_heldout_phrasing_split_is_reported_beside_dev_and_can_gate_a_promotion():
    # dev 0.4 -> 0.6, held-out phrasing 0.3 -> 0.3: the gap between them widens from 0.1 to 0.3
    widened = {"eval": [[0.6, 0.4, 0.01, {"heldout_phrasing": [0.3, 0.3]}]]}
    state, log = run(BASE, widened)  # no gate (the default): reported, not judged
    evaluate = next(
        o.envelope.evaluate_command for o in log if o.envelope.WhichOneof("payload") == "evaluate_command"
    )
    assert [(s.name, s.split, s.dev_size) for s in evaluate.suites] == [
        ("dev", "", 100),
        ("heldout_phrasing", "heldout_phrasing", 100),
    ]
    assert state.promotions and state.promotions[0]["iteration"] == 1
    row = state.history[0]
    assert (row["heldout_phrasing_incumbent_accuracy"], row["heldout_phrasing_candidate_accuracy"]) == (
        0.3,
        0.3,
    )
    promote = next(d for d in state.decisions if d["kind"] == "promote")
    assert promote["figures"]["phrasing_gap_candidate"] == pytest.approx(0.3)
    assert promote["figures"]["phrasing_gap_incumbent"] == pytest.approx(0.1)

    gate = BASE + "evaluation: {max_phrasing_gap: 0.05}\n"
    state, _ = run(gate, widened)
    assert not state.promotions
    reject = next(d for d in state.decisions if d["kind"] == "reject")
    assert reject["reason"] == (
        "phrasing gap widened: dev 0.600 - held-out phrasing 0.300 = 0.300 > incumbent 0.400 - 0.300 = "
        "0.100 + margin 0.05"
    )
    assert state.history[0]["promoted"] is False and not state.train_parent  # not trained further

    held = {"eval": [[0.6, 0.4, 0.01, {"heldout_phrasing": [0.5, 0.3]}]]}  # gap 0.1 -> 0.1: kept
    state, _ = run(gate, held)
    assert state.promotions and state.promotions[0]["iteration"] == 1


def test_the_heldout_phrasing_split_can_be_left_out_but_not_gated_then():
    state, log = run(BASE + "evaluation: {heldout_phrasing_size: 0}\n", {"eval": [[0.6, 0.4, 0.01]]})
    evaluate = next(
        o.envelope.evaluate_command for o in log if o.envelope.WhichOneof("payload") == "evaluate_command"
    )
    assert [s.name for s in evaluate.suites] == ["dev"]
    assert "heldout_phrasing_candidate_accuracy" not in state.history[0]
    sized = run(BASE + "evaluation: {heldout_phrasing_size: 40}\n", {"eval": [[0.6, 0.4, 0.01]]})[1]
    evaluate = next(
        o.envelope.evaluate_command for o in sized if o.envelope.WhichOneof("payload") == "evaluate_command"
    )
    assert [(s.name, s.dev_size) for s in evaluate.suites] == [("dev", 100), ("heldout_phrasing", 40)]
    with pytest.raises(ConfigError, match="max_phrasing_gap: 0.05 needs the held-out-phrasing split scored"):
        load_config(BASE + "evaluation: {heldout_phrasing_size: 0, max_phrasing_gap: 0.05}\n")
