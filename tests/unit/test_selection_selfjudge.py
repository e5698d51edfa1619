"""Self-judged selection (``SelectParams.self_judge``): the model's own P(Yes) on its majority samples,
on synthetic rows whose hidden truth is known, so the kept pseudo-labels' precision can be compared."""

import json

import pytest
from pydantic import ValidationError

from selfimprove.contracts.params import SelectParams, SelfJudgeParams
from selfimprove.selection.labels import LABEL_FREE, VERIFIED
from selfimprove.selection.pipeline import select
from selfimprove.selection.service import result_stats
from tests.support.selection_rows import TASK, judged, synthetic_rows
from tests.unit.test_selection_pipeline import hash_embed, with_wrong_truth

pytestmark = pytest.mark.unit
ALL_AGREEING_TOO = (0.0, 1.01)  # the band that keeps prompts every sample agrees on


def params(**self_judge):
    return SelectParams(band=ALL_AGREEING_TOO, max_per_prompt=4, self_judge=SelfJudgeParams(**self_judge))


def run(rows, label_mode=LABEL_FREE, **self_judge):
    return select(rows, label_mode, params(**self_judge), embed=hash_embed, extract=TASK.extract)


def kept_prompts(chosen):
    return {x["id"].rsplit("-", 1)[0] for x in chosen.sft}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mode", ["filter", "rank"])
def test_an_informative_judge_keeps_labels_at_least_as_precise(mode, seed):
    rows = judged(synthetic_rows(60), seed=seed)
    plain, judging = run(rows), run(rows, mode=mode)
    p0, p1 = plain.card["pseudo_label_precision"], judging.card["pseudo_label_precision"]
    assert p0 is not None and p1 is not None
    assert p1 >= p0 and p1 > 0.9 > p0  # the synthetic mix has majority-wrong prompts; the judge doubts them
    assert judging.card["sft_answer_precision"] >= plain.card["sft_answer_precision"]
    assert kept_prompts(judging) < kept_prompts(plain)
    assert judging.card["dropped"]["self_judge_prompt"] > 0
    assert judging.card["counts"]["prompts_self_judged"] == judging.card["counts"]["prompts_kept"]


def test_a_perfect_judge_keeps_only_right_labels_and_right_samples():
    rows = judged(synthetic_rows(60), right=(1.0, 1.0), wrong=(0.0, 0.0))
    chosen = run(rows, mode="filter")
    assert chosen.card["pseudo_label_precision"] == 1.0 == chosen.card["sft_answer_precision"]


def test_the_judge_reads_no_truth():
    rows = judged(synthetic_rows(30))
    a, b = run(rows, mode="filter"), run(with_wrong_truth(rows), mode="filter")
    assert a.sft and a.sft == b.sft and a.pairs == b.pairs and a.card["dropped"] == b.card["dropped"]


def test_filter_drops_the_majority_samples_judged_below_the_threshold():
    rows = judged(synthetic_rows(30))
    for row in rows:  # one doubted sample among right ones: the prompt stays, the sample goes
        agreeing = [s for s in row["samples"] if s["extracted"] == row["answer"]]
        for s in agreeing:
            s["judge"] = 0.9
        if len(agreeing) >= 3:
            agreeing[0]["judge"], agreeing[0]["text"] = 0.2, agreeing[0]["text"] + " Doubted."
    chosen = run(rows, mode="filter", min_p_yes=0.5)
    doubted = {s["text"] for r in rows for s in r["samples"] if s["judge"] == 0.2}
    assert doubted and not doubted & {x["response"] for x in chosen.sft}
    assert chosen.card["dropped"]["self_judge"] > 0
    stats = result_stats({**chosen.card, "sources": []})
    assert stats.self_judge_responses_dropped == chosen.card["dropped"]["self_judge"]
    assert stats.self_judge_prompts_dropped == chosen.card["dropped"]["self_judge_prompt"]
    assert {d.filter: d.count for d in stats.dropped}["self_judge"] == stats.self_judge_responses_dropped


def test_rank_keeps_the_top_judged_majority_samples_of_each_prompt():
    rows = judged(synthetic_rows(30))
    chosen = run(rows, mode="rank", keep_top=1, drop_prompts=False)
    per_prompt = {}
    for x in chosen.sft:
        per_prompt.setdefault(x["prompt"], []).append(x["response"])
    assert per_prompt and all(len(v) == 1 for v in per_prompt.values())
    assert chosen.card["dropped"]["format"] == 0  # a cut-off sample is ranked after a whole one
    for row in rows:
        if row["prompt"] in per_prompt:
            agreeing = [s for s in row["samples"] if s["extracted"] == row["majority"]]
            best = max(agreeing, key=lambda s: (s["finish_reason"] == "stop", s["judge"]))  # cut-off last
            assert per_prompt[row["prompt"]] == [best["text"]]
    assert chosen.card["dropped"]["self_judge_prompt"] == 0


def test_off_unjudged_rows_and_verified_runs_are_untouched():
    rows = judged(synthetic_rows(30))
    off = run(rows)
    assert off.card["dropped"]["self_judge"] == off.card["dropped"]["self_judge_prompt"] == 0
    unjudged = json.loads(json.dumps(rows))
    for row in unjudged:
        for s in row["samples"]:
            s["judge"] = None
    assert run(unjudged, mode="filter").sft == off.sft
    assert run(rows, VERIFIED, mode="filter").sft == run(rows, VERIFIED).sft


def test_self_judge_params_are_checked_by_name():
    with pytest.raises(ValidationError, match="mode"):
        SelectParams.model_validate({"self_judge": {"mode": "vote"}})
    with pytest.raises(ValidationError, match="min_pyes"):
        SelectParams.model_validate({"self_judge": {"min_pyes": 0.5}})
    with pytest.raises(ValidationError, match="keep_top"):
        SelectParams.model_validate({"self_judge": {"keep_top": 0}})
    parsed = SelectParams.model_validate_json(params(mode="rank", keep_top=2).model_dump_json())
    assert parsed.self_judge == SelfJudgeParams(mode="rank", keep_top=2)


def test_the_report_shows_the_self_judge_drops_among_the_data_cards_drops(tmp_path):
    from selfimprove.report.collect import RunFacts
    from selfimprove.report.render import render

    card = run(judged(synthetic_rows(30)), mode="filter").card
    prompts, responses = card["dropped"]["self_judge_prompt"], card["dropped"]["self_judge"]
    assert prompts > 0
    facts = RunFacts(
        run_id="r1",
        state="completed",
        stop_reason="budget spent",
        lineage={"history": [{"iteration": 1, "kept": card["counts"]["sft"]}]},
        decisions=[],
        cards={1: card},
    )
    data = render(facts, tmp_path).read_text().split("## Data per iteration")[1]
    assert f"self_judge_prompt {prompts}, self_judge {responses}" in data
