"""How a run moves on once a stage is complete: give it a verdict, decide, command the next stage.

acquire (all shards) -> select -> train -> evaluate -> refine -> next iteration or stop. Too little
data after acquisition or selection re-acquires with more prompts and another seed (a new round,
``max_data_retries`` times) or stops; an unhealthy training or a rejected candidate keeps the
incumbent (with ``training.continue_pending``, a candidate rejected only for a gain not yet
significant, or within ``training.pending_tolerance`` below the incumbent, is what the next training
continues); the stopping rules run at the end of each iteration (collapse also after selection).
With ``evaluation.rollback``, every promotion is re-checked against the earlier incumbents, and drift
over several promotions or a collapse serves the last good model again (``rollback``).
"""

from __future__ import annotations

from dataclasses import replace

from selfimprove.core.stage import parse_stats
from selfimprove.evaluator import rollback, verdicts
from selfimprove.evaluator.commands import sampler
from selfimprove.evaluator.config import train_problems
from selfimprove.evaluator.focus import category_asked, category_open, category_pass
from selfimprove.evaluator.state import COMPLETED, slot_name, training_sets
from selfimprove.evaluator.transition import Transition
from selfimprove.v2.stages_pb2 import AcquireStats, SelectStats, TrainStats


def begin_iteration(tr: Transition) -> None:
    s, cfg = tr.state, tr.cfg
    s.slots, s.accepted, s.data_retries = {}, {}, 0
    s.iteration_started_at = tr.now
    s.prompts_per_shard = cfg.acquisition.prompts_per_shard
    _acquire_round(tr)


def _acquire_round(tr: Transition) -> None:
    for shard in range(tr.cfg.acquisition.shards):
        tr.command(slot_name("acquire", shard), new_round=True)


def _stage_done(tr: Transition, stage: str) -> None:
    starts = [v.started_at for k, v in tr.state.slots.items() if k.split("/")[0] == stage]
    seconds = tr.now - min(starts) if starts else 0.0
    tr.signal("stage_done", stage, seconds)
    _row(tr)[f"{stage}_s"] = round(seconds, 1)


def _row(tr: Transition) -> dict:
    s = tr.state
    for row in s.history:
        if row["iteration"] == s.iteration:
            return row
    row = {"iteration": s.iteration, "accuracy": s.incumbent_accuracy}
    s.history.append(row)
    return row


def after_accept(tr: Transition, stage: str) -> None:
    s = tr.state
    open_slots = [k for k in s.slots if k.split("/")[0] == stage and k not in s.accepted]
    if open_slots:
        return
    _stage_done(tr, stage)
    {
        "acquire": _acquired,
        "select": _selected,
        "train": _trained,
        "evaluate": _evaluated,
        "refine": _refined,
    }[stage](tr)


def _too_little_data(tr: Transition, verdict: verdicts.Verdict) -> None:
    s, a = tr.state, tr.cfg.acquisition
    if s.data_retries >= a.max_data_retries:
        conclude(tr, f"{verdict.reason} after {s.data_retries} data retries", verdict.figures)
        return
    grown = max(s.prompts_per_shard + 1, int(s.prompts_per_shard * a.more_prompts_factor))
    have = train_problems(tr.cfg, grown * a.shards)
    if have is not None:  # a finite task: every shard gets a full share of what it has, no more
        grown = have // a.shards
    if grown <= s.prompts_per_shard:
        conclude(
            tr, f"{verdict.reason}, and the task has no more than {have} train problems", verdict.figures
        )
        return
    s.data_retries += 1
    s.prompts_per_shard = grown
    tr.decide(
        "retry",
        f"{verdict.reason}: acquiring again with {s.prompts_per_shard} prompts per shard and another seed",
        figures=verdict.figures,
    )
    _acquire_round(tr)


def _acquired(tr: Transition) -> None:
    s, a = tr.state, tr.cfg.acquisition
    shards = [
        parse_stats(s.accepted[k]["stats"], AcquireStats())
        for k in sorted(s.accepted)
        if k.startswith("acquire/")
    ]
    verdict = verdicts.data_verdict(shards, a.min_samples, a.min_yield, tr.cfg.label_free)
    row = _row(tr)
    row.update(samples=verdict.samples, **{"yield": verdict.yield_rate})
    if verdict.answered is not None:  # with hints: the prompts with any verified reply
        row["answered"] = verdict.answered
    row["category_pass"] = category_pass(shards)  # the next iteration's focus (verified runs)
    row["category_open"] = category_open(shards)  # and in label-free runs
    row["asked"] = category_asked(shards)  # the prompt mix, for the report
    row["sampled_by"] = sampler(s, tr.cfg).version
    sampled = [x for x in shards if x.samples]  # a hint-only shard has no self-agreement
    if sampled:
        row["agreement"] = verdicts.weighted([(x.agreement_mean, x.samples) for x in sampled])
    if not verdict.ok:
        _too_little_data(tr, verdict)
        return
    agreement = {"agreement_mean": row["agreement"]} if sampled else {}
    tr.decide("continue", verdict.reason, figures={**verdict.figures, **agreement})
    tr.command("select", new_round=True)


def _selected(tr: Transition) -> None:
    s, cfg = tr.state, tr.cfg
    stats = parse_stats(s.accepted["select"]["stats"], SelectStats())
    verdict = verdicts.selection_verdict(stats, cfg.selection.min_kept)
    row = _row(tr)
    row.update(kept=verdict.kept, diversity=verdict.diversity)
    row["dataset"] = s.accepted["select"].get("dataset")  # for later iterations' replay
    if not verdict.ok:
        _too_little_data(tr, verdict)
        return
    c = cfg.stopping.collapse
    collapse = verdicts.collapse_verdict(
        s.history, c.window, c.diversity_drop, c.agreement_rise, c.accuracy_gain, c.min_diversity
    )
    if not collapse.ok:
        tr.signal("collapse")
        if cfg.evaluation.rollback.enabled:
            since = rollback.collapse_since(s.history, c.window)
            back = rollback.after_collapse(s.scorecards, s.incumbent, since, collapse.reason)
            if back.target is not None:
                _rollback(tr, back)
        conclude(tr, collapse.reason, collapse.figures)
        return
    tr.decide("continue", verdict.reason, figures=verdict.figures)
    tr.command("train", new_round=True)


def _trained(tr: Transition) -> None:
    s, cfg = tr.state, tr.cfg
    rec = s.accepted["train"]
    candidate = dict(rec["candidate"])
    candidate["version"] = candidate.get("version") or f"{s.run_id}/iter-{s.iteration:03d}"
    s.candidate = candidate
    s.lineage.setdefault("models", []).append(
        {
            **candidate,
            "iteration": s.iteration,
            "parent": (s.train_parent or s.incumbent).get("version", ""),
            "trained_from": [d.get("uri", "") for d in training_sets(s, cfg.training.replay_iterations)],
            "train_event_id": rec["event_id"],
            "promoted": False,
        }
    )
    verdict = verdicts.training_verdict(
        parse_stats(rec["stats"], TrainStats()),
        cfg.training.require_loss_drop,
        cfg.training.heldout_tolerance,
    )
    if not verdict.ok:
        tr.decide("reject", verdict.reason, model=candidate, figures=verdict.figures)
        tr.signal("reject")
        _row(tr)["promoted"] = False
        if s.incumbent_accuracy is not None:
            s.accuracy.append(s.incumbent_accuracy)
        _refine_or_next(tr)
        return
    tr.decide("continue", verdict.reason, model=candidate, figures=verdict.figures)
    tr.command("evaluate", new_round=True)


def _evaluated(tr: Transition) -> None:
    s, e = tr.state, tr.cfg.evaluation
    rec = s.accepted["evaluate"]
    suites = rec["suites"]
    verdict = verdicts.evaluation_verdict(
        suites,
        e.alpha,
        e.regression_margin,
        tr.cfg.training.pending_tolerance,
        e.regression_alpha,
        e.max_phrasing_gap,
    )
    main = suites[0] if suites else {}
    n, full = int(main.get("n", 0)), e.dev_size or tr.cfg.task.dev_size
    if 0 < n < full:  # settled at an interim look (evaluation.interim_looks)
        verdict = replace(verdict, reason=f"{verdict.reason} at an interim look ({n} of {full} dev problems)")
    cand_acc = float(main.get("candidate_accuracy", 0.0))
    inc_acc = float(main.get("incumbent_accuracy", 0.0))
    tr.signal("accuracy", inc_acc, cand_acc)
    already = any(p["evaluation_event_id"] == rec["event_id"] for p in s.promotions)
    row = _row(tr)
    row.update(
        candidate_accuracy=cand_acc,
        incumbent_accuracy=inc_acc,
        p_value=verdict.p_value,
        evaluated=[n, full],
    )
    if verdict.phrasing_candidate is not None and verdict.phrasing_incumbent is not None:
        # the held-out-phrasing split, beside dev (the report's columns, the metrics' gauges)
        row.update(
            heldout_phrasing_candidate_accuracy=verdict.phrasing_candidate,
            heldout_phrasing_incumbent_accuracy=verdict.phrasing_incumbent,
        )
        tr.signal("phrasing_accuracy", verdict.phrasing_incumbent, verdict.phrasing_candidate)
    s.runner_up = {}
    if verdict.ok and not already:
        _promote(
            tr, s.iteration, s.candidate, cand_acc, rec["event_id"], verdict.reason, suites, verdict.figures
        )
        row["promoted"] = True
    else:
        pending = tr.cfg.training.continue_pending and verdict.pending
        # the decision kind stays "reject" (the incumbent keeps serving); the reason says it is kept
        reason = (
            f"{verdict.reason}; kept: the next iteration trains it further" if pending else verdict.reason
        )
        tr.decide("reject", reason, model=s.candidate, evidence=suites, figures=verdict.figures)
        s.train_parent = dict(s.candidate) if pending else {}  # else back to the incumbent
        s.incumbent_accuracy = inc_acc
        tr.signal("reject", inc_acc)
        row["promoted"] = False
        if verdict.pending and cand_acc > inc_acc and n >= full:
            s.runner_up = {
                "model": dict(s.candidate),
                "accuracy": cand_acc,
                "incumbent_accuracy": inc_acc,
                "p_value": verdict.p_value,
                "n": n,
                "iteration": s.iteration,
                "evaluation_event_id": rec["event_id"],
                "suites": suites,
            }
    s.accuracy.append(float(s.incumbent_accuracy or 0.0))
    _refine_or_next(tr)


def _promote(
    tr: Transition,
    iteration: int,
    model: dict,
    accuracy: float,
    evaluation_id: str,
    reason: str,
    suites,
    figures: dict[str, float],
) -> None:
    """Make ``model`` (evaluated in ``iteration``) the incumbent: the decision, the promotion record,
    the lineage."""
    s = tr.state
    decision_id = tr.decide("promote", reason, model=model, evidence=suites, figures=figures)
    if not s.scorecards:  # the first card: the model this promotion replaced, on the same items
        promoted_in = s.promotions[-1]["iteration"] if s.promotions else 0
        s.scorecards.append(rollback.card(s.incumbent, promoted_in, suites, "incumbent"))
    s.scorecards.append(rollback.card(model, iteration, suites, "candidate"))
    s.promotions.append(
        {
            "iteration": iteration,
            "version": model.get("version", ""),
            "evaluation_event_id": evaluation_id,
            "decision_event_id": decision_id,
            "time": tr.now,
            "previous": s.incumbent.get("version", ""),
        }
    )
    for m in s.lineage.get("models", []):
        if m.get("version") == model.get("version"):
            m.update(promoted=True, promoted_at=tr.now, promoted_by=evaluation_id)
    s.incumbent, s.incumbent_accuracy = dict(model), accuracy
    s.train_parent, s.runner_up = {}, {}
    tr.signal("promote", accuracy)
    r = tr.cfg.evaluation.rollback
    if r.enabled:
        drift = rollback.after_promotion(s.scorecards, s.drift_streak, r.margin, r.over_promotions)
        s.scorecards[-1]["drifted"], s.drift_streak = drift.drifted, drift.streak
        if drift.target is not None:
            _rollback(tr, drift)


def _rollback(tr: Transition, verdict: rollback.RollbackVerdict) -> None:
    """Serve ``verdict.target`` again: the decision (the refinement servers swap to it, the
    deployment's incumbent record names it), the models after it marked rolled back in the scorecards
    and the lineage, the rollback recorded."""
    s, target = tr.state, verdict.target
    assert target is not None
    at = max(
        i for i, c in enumerate(s.scorecards) if c["version"] == target["version"] and not c["rolled_back"]
    )
    gone = [c for c in s.scorecards[at + 1 :] if not c["rolled_back"]]
    decision_id = tr.decide(
        "rollback", verdict.reason, model=target["model"], evidence=verdict.evidence, figures=verdict.figures
    )
    for c in gone:
        c["rolled_back"] = True
    versions = [c["version"] for c in gone]
    for m in s.lineage.get("models", []):
        if m.get("version") in versions:
            m.update(rolled_back=True, rolled_back_at=tr.now, rolled_back_by=decision_id)
    s.rollbacks.append(
        {
            "iteration": s.iteration,
            "version": target["version"],
            "previous": s.incumbent.get("version", ""),
            "rolled_back": versions,
            "decision_event_id": decision_id,
            "time": tr.now,
            "reason": verdict.reason,
        }
    )
    s.incumbent = dict(target["model"])
    s.incumbent_accuracy = target["scores"].get(target["main"], s.incumbent_accuracy)
    s.train_parent, s.runner_up, s.drift_streak = {}, {}, 0
    _row(tr)["rolled_back_to"] = target["version"]
    tr.signal("rollback")


def _final_pick(tr: Transition) -> None:
    """``evaluation.final_pick: best_dev``: serve the runner-up (see ``RunState.runner_up``)."""
    s, up = tr.state, tr.state.runner_up
    reason = (
        f"final pick: candidate {up['accuracy']:.3f} > incumbent {up['incumbent_accuracy']:.3f} on all "
        f"{up['n']} dev problems, not significant (p={up['p_value']:.4f}); evaluation.final_pick: best_dev "
        "serves the higher point estimate at the end"
    )
    figures = {
        "candidate_accuracy": up["accuracy"],
        "incumbent_accuracy": up["incumbent_accuracy"],
        "p_value": up["p_value"],
        "final_pick": 1.0,
    }
    _promote(
        tr,
        up["iteration"],
        up["model"],
        up["accuracy"],
        up["evaluation_event_id"],
        reason,
        up["suites"],
        figures,
    )
    for row in s.history:
        if row["iteration"] == up["iteration"]:
            row.update(promoted=True, final_pick=True)
    if s.accuracy:
        s.accuracy[-1] = float(s.incumbent_accuracy or 0.0)  # a rollback may have followed the pick


def _unrefined(tr: Transition) -> bool:
    """Whether the incumbent's inference strategies still need calibrating."""
    s, r = tr.state, tr.cfg.refinement
    return r.enabled and s.refined_for != s.incumbent.get("version", "")


def _refine_or_next(tr: Transition) -> None:
    if tr.cfg.refinement.when == "promotion" and _unrefined(tr):
        tr.command("refine", new_round=True)
    else:
        end_iteration(tr)


def _refined(tr: Transition) -> None:
    s = tr.state
    rec = s.accepted["refine"]
    s.refined_for = s.incumbent.get("version", "")
    s.refined_targets = rec.get("targets") or {}
    if s.finishing:
        tr.finish(COMPLETED, s.finishing)
    else:
        end_iteration(tr)


def conclude(tr: Transition, reason: str, figures: dict[str, float] | None = None) -> None:
    """Complete the run for ``reason``: first, with ``evaluation.final_pick: best_dev``, promote the
    runner-up; then, with ``refinement.when: end`` (or after that pick), calibrate the final incumbent
    (whatever stage was running is abandoned: its late result is ignored)."""
    s = tr.state
    picked = tr.cfg.evaluation.final_pick == "best_dev" and bool(s.runner_up) and not s.finishing
    if picked:
        _final_pick(tr)
    if (tr.cfg.refinement.when == "end" or picked) and not s.finishing and _unrefined(tr):
        s.finishing = reason
        tr.decide(
            "continue", f"{reason}: calibrating the final model's inference strategies", figures=figures
        )
        tr.command("refine", new_round=True)
    else:
        tr.finish(COMPLETED, reason, figures)


def cut_short(iteration: int, elapsed: float, began: float, wall_time_s: float, row: dict) -> str:
    """Why the next iteration is not begun (``budget.whole_iterations``): one as long as the iteration
    that just ended (begun ``began`` seconds after the run's start, ended at ``elapsed``; ``row`` its
    history row) would end after ``wall_time_s``, where the wall-time budget would cut it off and its
    work would be lost; empty when it fits (or the iteration's start is unknown: a run resumed from an
    older snapshot). An evaluation settled at an interim look counts at its full length, as if it
    had needed every dev problem (``evaluate_s`` scaled by ``evaluated``: the problems it scored, of
    how many), since the next one may.

    >>> cut_short(4, 2600.0, 2000.0, 3450.0, {"evaluate_s": 30.0, "evaluated": [100, 400]})
    ''
    >>> cut_short(4, 2627.0, 1855.0, 3450.0, {"evaluate_s": 29.0, "evaluated": [100, 400]})
    'budget spent: iteration 5 would end at about 3486s, after the wall-time budget of 3450s (iteration 4 took 772s, 859s with its evaluation on all 400 dev problems)'
    >>> cut_short(1, 500.0, -1000.0, 600.0, {})
    ''
    """
    took = elapsed - began
    scored, full = row.get("evaluated") or (0, 0)
    need = took + (row.get("evaluate_s", 0.0) * (full / scored - 1) if 0 < scored < full else 0.0)
    if began < 0 or elapsed + need <= wall_time_s:
        return ""
    longer = f", {need:.0f}s with its evaluation on all {full} dev problems" if need > took else ""
    return (
        f"budget spent: iteration {iteration + 1} would end at about {elapsed + need:.0f}s, "
        f"after the wall-time budget of {wall_time_s:.0f}s (iteration {iteration} took {took:.0f}s{longer})"
    )


def end_iteration(tr: Transition) -> None:
    """Stop (target, plateau, budgets) or begin the next iteration."""
    s, cfg = tr.state, tr.cfg
    promoted = [bool(r.get("promoted")) for r in s.history if "promoted" in r]
    figures = {"iteration": float(s.iteration), "tokens_used": s.tokens_used}
    if s.incumbent_accuracy is not None:
        figures["incumbent_accuracy"] = s.incumbent_accuracy
    target = cfg.stopping.target_accuracy
    reason = ""
    if target is not None and s.incumbent_accuracy is not None and s.incumbent_accuracy >= target:
        reason = f"target reached: accuracy {s.incumbent_accuracy:.3f} >= {target}"
    elif verdicts.plateau(promoted, cfg.stopping.plateau_patience):
        reason = f"plateau: no promotion in the last {cfg.stopping.plateau_patience} iterations"
    elif s.iteration >= cfg.budget.iterations:
        reason = f"budget spent: {s.iteration} iterations"
    elif s.tokens_used >= cfg.budget.tokens:
        reason = f"budget spent: {s.tokens_used:.0f} tokens >= {cfg.budget.tokens}"
    elif tr.now - s.started_at >= cfg.budget.wall_time_s:
        reason = f"budget spent: wall time over {cfg.budget.wall_time_s:.0f}s"
    elif cfg.budget.whole_iterations:
        reason = cut_short(
            s.iteration,
            tr.now - s.started_at,
            s.iteration_started_at - s.started_at,
            cfg.budget.wall_time_s,
            _row(tr),
        )
    if reason:
        conclude(tr, reason, figures)
        return
    tr.decide("continue", f"iteration {s.iteration} done: next iteration {s.iteration + 1}", figures=figures)
    s.iteration += 1
    tr.signal("iteration", s.iteration)
    begin_iteration(tr)
