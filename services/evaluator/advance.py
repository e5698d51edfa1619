"""How a run moves on once a stage is complete: judge it, decide, command the next stage.

acquire (all shards) -> select -> train -> evaluate -> refine -> next iteration or stop. Too little
data after acquisition or selection re-acquires with more prompts and another seed (a new round,
``max_data_retries`` times) or stops; an unhealthy training or a rejected candidate keeps the
incumbent (with ``training.continue_pending``, a candidate rejected only for a gain not yet
significant, or within ``training.pending_tolerance`` below the incumbent, is what the next training
continues); the stopping rules run at the end of each iteration (collapse also after selection).
"""

from __future__ import annotations

from dataclasses import replace

from selfimprove.core.stage import parse_stats
from selfimprove.evaluator import judge
from selfimprove.evaluator.commands import sampler
from selfimprove.evaluator.config import train_problems
from selfimprove.evaluator.focus import category_asked, category_open, category_pass
from selfimprove.evaluator.state import COMPLETED, slot_name, training_sets
from selfimprove.evaluator.step import Step
from selfimprove.v2.stages_pb2 import AcquireStats, SelectStats, TrainStats


def begin_iteration(step: Step) -> None:
    s, cfg = step.state, step.cfg
    s.slots, s.accepted, s.data_retries = {}, {}, 0
    s.iteration_started_at = step.now
    s.prompts_per_shard = cfg.acquisition.prompts_per_shard
    _acquire_round(step)


def _acquire_round(step: Step) -> None:
    for shard in range(step.cfg.acquisition.shards):
        step.command(slot_name("acquire", shard), new_round=True)


def _stage_done(step: Step, stage: str) -> None:
    starts = [v.started_at for k, v in step.state.slots.items() if k.split("/")[0] == stage]
    seconds = step.now - min(starts) if starts else 0.0
    step.signal("stage_done", stage, seconds)
    _row(step)[f"{stage}_s"] = round(seconds, 1)


def _row(step: Step) -> dict:
    s = step.state
    for row in s.history:
        if row["iteration"] == s.iteration:
            return row
    row = {"iteration": s.iteration, "accuracy": s.incumbent_accuracy}
    s.history.append(row)
    return row


def after_accept(step: Step, stage: str) -> None:
    s = step.state
    open_slots = [k for k in s.slots if k.split("/")[0] == stage and k not in s.accepted]
    if open_slots:
        return
    _stage_done(step, stage)
    {
        "acquire": _acquired,
        "select": _selected,
        "train": _trained,
        "evaluate": _evaluated,
        "refine": _refined,
    }[stage](step)


def _too_little_data(step: Step, verdict: judge.Verdict) -> None:
    s, a = step.state, step.cfg.acquisition
    if s.data_retries >= a.max_data_retries:
        conclude(step, f"{verdict.reason} after {s.data_retries} data retries", verdict.stats)
        return
    grown = max(s.prompts_per_shard + 1, int(s.prompts_per_shard * a.more_prompts_factor))
    have = train_problems(step.cfg, grown * a.shards)
    if have is not None:  # a finite task: every shard gets a full share of what it has, no more
        grown = have // a.shards
    if grown <= s.prompts_per_shard:
        conclude(
            step, f"{verdict.reason}, and the task has no more than {have} train problems", verdict.stats
        )
        return
    s.data_retries += 1
    s.prompts_per_shard = grown
    step.decide(
        "retry",
        f"{verdict.reason}: acquiring again with {s.prompts_per_shard} prompts per shard and another seed",
        figures=verdict.stats,
    )
    _acquire_round(step)


def _acquired(step: Step) -> None:
    s, a = step.state, step.cfg.acquisition
    shards = [
        parse_stats(s.accepted[k]["stats"], AcquireStats())
        for k in sorted(s.accepted)
        if k.startswith("acquire/")
    ]
    verdict = judge.data_verdict(shards, a.min_samples, a.min_yield, step.cfg.label_free)
    row = _row(step)
    row.update(samples=verdict.stats["samples"], **{"yield": verdict.stats["yield"]})
    if "answered" in verdict.stats:  # with hints: the prompts with any verified reply
        row["answered"] = verdict.stats["answered"]
    row["category_pass"] = category_pass(shards)  # the next iteration's focus (verified runs)
    row["category_open"] = category_open(shards)  # and in label-free runs
    row["asked"] = category_asked(shards)  # the prompt mix, for the report
    row["sampled_by"] = sampler(s, step.cfg).version
    sampled = [x for x in shards if x.samples]  # a hint-only shard has no self-agreement
    if sampled:
        row["agreement"] = judge.weighted([(x.agreement_mean, x.samples) for x in sampled])
    if not verdict.ok:
        _too_little_data(step, verdict)
        return
    agreement = {"agreement_mean": row["agreement"]} if sampled else {}
    step.decide("continue", verdict.reason, figures={**verdict.stats, **agreement})
    step.command("select", new_round=True)


def _selected(step: Step) -> None:
    s, cfg = step.state, step.cfg
    stats = parse_stats(s.accepted["select"]["stats"], SelectStats())
    verdict = judge.selection_verdict(stats, cfg.selection.min_kept)
    row = _row(step)
    row.update(kept=verdict.stats["kept"], diversity=verdict.stats["diversity"])
    row["dataset"] = s.accepted["select"].get("dataset")  # for later iterations' replay
    if not verdict.ok:
        _too_little_data(step, verdict)
        return
    c = cfg.stopping.collapse
    collapse = judge.collapse_verdict(
        s.history, c.window, c.diversity_drop, c.agreement_rise, c.accuracy_gain, c.min_diversity
    )
    if not collapse.ok:
        step.signal("collapse")
        conclude(step, collapse.reason, collapse.stats)
        return
    step.decide("continue", verdict.reason, figures=verdict.stats)
    step.command("train", new_round=True)


def _trained(step: Step) -> None:
    s, cfg = step.state, step.cfg
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
    verdict = judge.training_verdict(
        parse_stats(rec["stats"], TrainStats()),
        cfg.training.require_loss_drop,
        cfg.training.heldout_tolerance,
    )
    if not verdict.ok:
        step.decide("reject", verdict.reason, model=candidate, figures=verdict.stats)
        step.signal("reject")
        _row(step)["promoted"] = False
        if s.incumbent_accuracy is not None:
            s.accuracy.append(s.incumbent_accuracy)
        _refine_or_next(step)
        return
    step.decide("continue", verdict.reason, model=candidate, figures=verdict.stats)
    step.command("evaluate", new_round=True)


def _evaluated(step: Step) -> None:
    s, e = step.state, step.cfg.evaluation
    rec = s.accepted["evaluate"]
    suites = rec["suites"]
    verdict = judge.evaluation_verdict(
        suites, e.alpha, e.regression_margin, step.cfg.training.pending_tolerance, e.regression_alpha
    )
    main = suites[0] if suites else {}
    n, full = int(main.get("n", 0)), e.dev_size or step.cfg.task.dev_size
    if 0 < n < full:  # settled at an interim look (evaluation.interim_looks)
        verdict = replace(verdict, reason=f"{verdict.reason} at an interim look ({n} of {full} dev problems)")
    cand_acc = float(main.get("candidate_accuracy", 0.0))
    inc_acc = float(main.get("incumbent_accuracy", 0.0))
    step.signal("accuracy", inc_acc, cand_acc)
    already = any(p["evaluation_event_id"] == rec["event_id"] for p in s.promotions)
    row = _row(step)
    row.update(
        candidate_accuracy=cand_acc,
        incumbent_accuracy=inc_acc,
        p_value=verdict.stats.get("p_value", 1.0),
        evaluated=[n, full],
    )
    s.runner_up = {}
    if verdict.ok and not already:
        _promote(
            step, s.iteration, s.candidate, cand_acc, rec["event_id"], verdict.reason, suites, verdict.stats
        )
        row["promoted"] = True
    else:
        pending = step.cfg.training.continue_pending and verdict.stats.get("pending")
        # the decision kind stays "reject" (the incumbent keeps serving); the reason says it is kept
        reason = (
            f"{verdict.reason}; kept: the next iteration trains it further" if pending else verdict.reason
        )
        step.decide("reject", reason, model=s.candidate, evidence=suites, figures=verdict.stats)
        s.train_parent = dict(s.candidate) if pending else {}  # else back to the incumbent
        s.incumbent_accuracy = inc_acc
        step.signal("reject", inc_acc)
        row["promoted"] = False
        if verdict.stats.get("pending") and cand_acc > inc_acc and n >= full:
            s.runner_up = {
                "model": dict(s.candidate),
                "accuracy": cand_acc,
                "incumbent_accuracy": inc_acc,
                "p_value": verdict.stats.get("p_value", 1.0),
                "n": n,
                "iteration": s.iteration,
                "evaluation_event_id": rec["event_id"],
                "suites": suites,
            }
    s.accuracy.append(float(s.incumbent_accuracy or 0.0))
    _refine_or_next(step)


def _promote(
    step: Step, iteration: int, model: dict, accuracy: float, evaluation_id: str, reason: str, suites, stats
) -> None:
    """Make ``model`` (evaluated in ``iteration``) the incumbent: the decision, the promotion record,
    the lineage."""
    s = step.state
    decision_id = step.decide("promote", reason, model=model, evidence=suites, figures=stats)
    s.promotions.append(
        {
            "iteration": iteration,
            "version": model.get("version", ""),
            "evaluation_event_id": evaluation_id,
            "decision_event_id": decision_id,
            "time": step.now,
            "previous": s.incumbent.get("version", ""),
        }
    )
    for m in s.lineage.get("models", []):
        if m.get("version") == model.get("version"):
            m.update(promoted=True, promoted_at=step.now, promoted_by=evaluation_id)
    s.incumbent, s.incumbent_accuracy = dict(model), accuracy
    s.train_parent, s.runner_up = {}, {}
    step.signal("promote", accuracy)


def _final_pick(step: Step) -> None:
    """``evaluation.final_pick: best_dev``: serve the runner-up (see ``RunState.runner_up``)."""
    s, up = step.state, step.state.runner_up
    reason = (
        f"final pick: candidate {up['accuracy']:.3f} > incumbent {up['incumbent_accuracy']:.3f} on all "
        f"{up['n']} dev problems, not significant (p={up['p_value']:.4f}); evaluation.final_pick: best_dev "
        "serves the higher point estimate at the end"
    )
    stats = {
        "candidate_accuracy": up["accuracy"],
        "incumbent_accuracy": up["incumbent_accuracy"],
        "p_value": up["p_value"],
        "final_pick": 1.0,
    }
    _promote(
        step,
        up["iteration"],
        up["model"],
        up["accuracy"],
        up["evaluation_event_id"],
        reason,
        up["suites"],
        stats,
    )
    for row in s.history:
        if row["iteration"] == up["iteration"]:
            row.update(promoted=True, final_pick=True)
    if s.accuracy:
        s.accuracy[-1] = up["accuracy"]


def _unrefined(step: Step) -> bool:
    """Whether the incumbent's inference strategies still need calibrating."""
    s, r = step.state, step.cfg.refinement
    return r.enabled and s.refined_for != s.incumbent.get("version", "")


def _refine_or_next(step: Step) -> None:
    if step.cfg.refinement.when == "promotion" and _unrefined(step):
        step.command("refine", new_round=True)
    else:
        end_iteration(step)


def _refined(step: Step) -> None:
    s = step.state
    rec = s.accepted["refine"]
    s.refined_for = s.incumbent.get("version", "")
    s.refined_targets = rec.get("targets") or {}
    if s.finishing:
        step.finish(COMPLETED, s.finishing)
    else:
        end_iteration(step)


def conclude(step: Step, reason: str, stats: dict[str, float] | None = None) -> None:
    """Complete the run for ``reason``: first, with ``evaluation.final_pick: best_dev``, promote the
    runner-up; then, with ``refinement.when: end`` (or after that pick), calibrate the final incumbent
    (whatever stage was running is abandoned: its late result is ignored)."""
    s = step.state
    picked = step.cfg.evaluation.final_pick == "best_dev" and bool(s.runner_up) and not s.finishing
    if picked:
        _final_pick(step)
    if (step.cfg.refinement.when == "end" or picked) and not s.finishing and _unrefined(step):
        s.finishing = reason
        step.decide(
            "continue", f"{reason}: calibrating the final model's inference strategies", figures=stats
        )
        step.command("refine", new_round=True)
    else:
        step.finish(COMPLETED, reason, stats)


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


def end_iteration(step: Step) -> None:
    """Stop (target, plateau, budgets) or begin the next iteration."""
    s, cfg = step.state, step.cfg
    promoted = [bool(r.get("promoted")) for r in s.history if "promoted" in r]
    stats = {"iteration": float(s.iteration), "tokens_used": s.tokens_used}
    if s.incumbent_accuracy is not None:
        stats["incumbent_accuracy"] = s.incumbent_accuracy
    target = cfg.stopping.target_accuracy
    reason = ""
    if target is not None and s.incumbent_accuracy is not None and s.incumbent_accuracy >= target:
        reason = f"target reached: accuracy {s.incumbent_accuracy:.3f} >= {target}"
    elif judge.plateau(promoted, cfg.stopping.plateau_patience):
        reason = f"plateau: no promotion in the last {cfg.stopping.plateau_patience} iterations"
    elif s.iteration >= cfg.budget.iterations:
        reason = f"budget spent: {s.iteration} iterations"
    elif s.tokens_used >= cfg.budget.tokens:
        reason = f"budget spent: {s.tokens_used:.0f} tokens >= {cfg.budget.tokens}"
    elif step.now - s.started_at >= cfg.budget.wall_time_s:
        reason = f"budget spent: wall time over {cfg.budget.wall_time_s:.0f}s"
    elif cfg.budget.whole_iterations:
        reason = cut_short(
            s.iteration,
            step.now - s.started_at,
            s.iteration_started_at - s.started_at,
            cfg.budget.wall_time_s,
            _row(step),
        )
    if reason:
        conclude(step, reason, stats)
        return
    step.decide("continue", f"iteration {s.iteration} done: next iteration {s.iteration + 1}", figures=stats)
    s.iteration += 1
    step.signal("iteration", s.iteration)
    begin_iteration(step)
