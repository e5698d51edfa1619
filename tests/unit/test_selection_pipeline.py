"""Selection's pure logic: labels, filters, the label-free path blind to the truth, outputs."""

import json

import numpy as np
import pytest

from selfimprove.acquisition.shard import make_row
from selfimprove.contracts.params import SelectParams
from selfimprove.runtime.decontam import Index
from selfimprove.runtime.engine import Sample
from selfimprove.selection.labels import LABEL_FREE, VERIFIED, label_of
from selfimprove.selection.pipeline import select
from tests.support.selection_rows import TASK, synthetic_rows

pytestmark = pytest.mark.unit


def hash_embed(texts):
    """Deterministic stand-in vectors (one random direction per text) for the pure pipeline."""
    out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=16) for t in texts])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def with_wrong_truth(rows):
    """Every reference replaced by a wrong one, and every verdict recomputed against it."""
    out = json.loads(json.dumps(rows))
    for row in out:
        row["answer"] = str(int(row["answer"]) + 1000)
        for s in [*row["samples"], *row.get("worked", ())]:
            s["verified"] = s["extracted"] == row["answer"]
        row["pass_rate"] = 0.0
    return out


def test_label_free_output_is_identical_with_wrong_truth():
    rows = synthetic_rows()
    params = SelectParams(band=(0.0, 1.01))
    a = select(rows, LABEL_FREE, params, embed=hash_embed, extract=TASK.extract)
    b = select(with_wrong_truth(rows), LABEL_FREE, params, embed=hash_embed, extract=TASK.extract)
    assert a.sft and a.pairs
    assert a.sft == b.sft and a.pairs == b.pairs
    report = {"pseudo_label_precision", "sft_answer_precision"}
    assert {k: v for k, v in a.card.items() if k not in report} == {
        k: v for k, v in b.card.items() if k not in report
    }
    assert a.card["pseudo_label_precision"] > 0.5 and b.card["pseudo_label_precision"] == 0.0


def test_verified_keeps_only_verified_own_samples_and_pairs_them_with_wrong_ones():
    rows = synthetic_rows()
    chosen = select(rows, VERIFIED, SelectParams(), embed=hash_embed, extract=TASK.extract)
    own = {(r["prompt"], s["text"]) for r in rows for s in r["samples"]}
    truth = {r["prompt"]: r["answer"] for r in rows}
    assert chosen.sft and all((x["prompt"], x["response"]) in own for x in chosen.sft)
    assert all(TASK.extract(x["response"]) == truth[x["prompt"]] for x in chosen.sft)
    assert chosen.card["sft_answer_precision"] == 1.0
    for pair in chosen.pairs:
        assert TASK.extract(pair["chosen"]) == truth[pair["prompt"]] != TASK.extract(pair["rejected"])
    per_prompt = {}
    for x in chosen.sft:
        per_prompt[x["prompt"]] = per_prompt.get(x["prompt"], 0) + 1
    assert max(per_prompt.values()) <= 2
    assert set(chosen.sft[0]) == {"prompt", "response", "id", "category"}
    assert set(chosen.pairs[0]) == {"prompt", "chosen", "rejected", "id", "category"}
    dropped = chosen.card["dropped"]
    assert dropped["difficulty"] > 0  # all-right and all-wrong prompts
    assert chosen.card["counts"]["sft"] == len(chosen.sft) and 0 < chosen.card["yield"] < 1


def test_filters_report_their_drops():
    rows = synthetic_rows(12)
    rows.append({**json.loads(json.dumps(rows[2])), "id": "copy"})  # same prompt, other id
    keys = {tuple([rows[3]["meta"]["key"][0], tuple(rows[3]["meta"]["key"][1])])}
    chosen = select(
        rows, VERIFIED, SelectParams(category_cap=1, max_per_prompt=1), keys, hash_embed, TASK.extract
    )
    d = chosen.card["dropped"]
    assert d["duplicate_prompt"] == 1 and d["decontaminated_key"] == 1 and d["decontaminated_ngram"] == 0
    assert d["per_prompt_cap"] > 0 and d["balance"] > 0
    assert max(chosen.card["category_mix"].values()) <= 1


def test_a_prompt_overlapping_an_evaluation_item_is_dropped_by_the_ngram_rule():
    rows = synthetic_rows(12)
    index = Index([rows[4]["prompt"]])  # an evaluation item with no exact key in common
    chosen = select(
        rows,
        VERIFIED,
        SelectParams(),
        embed=hash_embed,
        extract=TASK.extract,
        contaminated=index.contaminated,
    )
    d = chosen.card["dropped"]
    assert d["decontaminated_key"] == 0 and d["decontaminated_ngram"] == 1
    assert rows[4]["prompt"] not in {x["prompt"] for x in chosen.sft}


def test_refined_targets_become_the_first_response():
    rows = synthetic_rows(12)
    row = rows[2]  # majority right
    target = {"prompt": row["prompt"], "response": f"Refined: the result is {row['answer']}."}
    chosen = select(
        rows, LABEL_FREE, SelectParams(), embed=hash_embed, extract=TASK.extract, refined=[target]
    )
    mine = [x for x in chosen.sft if x["prompt"] == row["prompt"]]
    assert mine[0]["response"] == target["response"]


def test_prefer_short_keeps_the_shortest_correct_responses():
    rows = synthetic_rows(12)
    for row in rows:  # token counts that run against sampling order
        for k, s in enumerate(row["samples"]):
            s["tokens"] = 40 - k
    params = SelectParams(max_per_prompt=1, band=(0.0, 1.01))
    first = select(rows, VERIFIED, params, embed=hash_embed, extract=TASK.extract)
    short = select(
        rows,
        VERIFIED,
        SelectParams(**{**params.model_dump(), "prefer_short": True}),
        embed=hash_embed,
        extract=TASK.extract,
    )
    tokens: dict = {}
    for r in rows:  # exact duplicates keep their first copy
        for s in r["samples"]:
            tokens.setdefault((r["prompt"], s["text"]), s["tokens"])
    assert {x["prompt"] for x in short.sft} == {x["prompt"] for x in first.sft}
    for a, b in zip(first.sft, short.sft, strict=True):
        assert tokens[(b["prompt"], b["response"])] <= tokens[(a["prompt"], a["response"])]
    assert sum(tokens[(x["prompt"], x["response"])] for x in short.sft) < sum(
        tokens[(x["prompt"], x["response"])] for x in first.sft
    )


def with_rationales(rows):
    """Rows where every prompt the model never answered has one right and one wrong hinted reply."""
    out = []
    for row in rows:
        hinted = []
        if row["pass_rate"] == 0.0:
            right = Sample(f"The answer is {row['answer']}.", 6, "stop")
            wrong = Sample(f"The answer is {int(row['answer']) + 7}.", 6, "stop")
            item = next(i for i in TASK.items("train", 30, seed=5) if i.id == row["id"])
            hinted = [right, wrong]
            row = make_row(
                item,
                [Sample(s["text"], s["tokens"], s["finish_reason"]) for s in row["samples"]],
                TASK.extract,
                TASK.verify,
                None,
                hinted,
            )
        out.append(row)
    return out


def test_verified_mode_trains_on_verified_rationales_under_the_plain_prompt():
    rows = with_rationales(synthetic_rows())
    never = {r["prompt"]: r["answer"] for r in rows if r["pass_rate"] == 0.0}
    assert never
    chosen = select(rows, VERIFIED, SelectParams(), embed=hash_embed, extract=TASK.extract)
    hinted = [x for x in chosen.sft if x["prompt"] in never]
    assert {x["prompt"] for x in hinted} == set(never)  # rescued from the difficulty band
    assert all(x["response"] == f"The answer is {never[x['prompt']]}." for x in hinted)
    assert all("The answer is" not in x["prompt"] for x in chosen.sft)
    assert chosen.card["counts"]["prompts_rationalized"] == len(never)
    assert chosen.card["sft_answer_precision"] == 1.0
    plain = select(synthetic_rows(), VERIFIED, SelectParams(), embed=hash_embed, extract=TASK.extract)
    assert not {x["prompt"] for x in plain.sft} & set(never)
    assert plain.card["counts"]["prompts_rationalized"] == 0


def test_label_free_mode_never_sees_rationales():
    rows = synthetic_rows()
    params = SelectParams(band=(0.0, 1.01))
    a = select(rows, LABEL_FREE, params, embed=hash_embed, extract=TASK.extract)
    b = select(with_rationales(rows), LABEL_FREE, params, embed=hash_embed, extract=TASK.extract)
    assert a.sft == b.sft and b.card["counts"]["prompts_rationalized"] == 0


def with_worked(rows, pick="verifier"):
    """Rows where every sum or difference has a worked reply: every step true, or (every third
    prompt) a false first step whose final answer is still right; its steps chosen by ``pick``."""
    from selfimprove.acquisition.generate import Worked
    from selfimprove.runtime.tasks.worked import plan

    items = {i.id: i for i in TASK.items("train", 30, seed=5)}
    out = []
    for k, row in enumerate(rows):
        p = plan(row["meta"])
        replies = []
        if p is not None:
            mid, d = p.answers()
            # every third: "a - t = m, m - o = d" with m one off (both steps false), d still the answer
            text = p.reply(mid + (k % 3 == 0), d)
            replies = [Worked(text, 12, "stop", ("step one", "step two"), pick)]
        samples = [Sample(s["text"], s["tokens"], s["finish_reason"]) for s in row["samples"]]
        out.append(make_row(items[row["id"]], samples, TASK.extract, TASK.verify, None, (), replies))
    return out


def true_worked(rows):
    """``rows`` with each worked reply replaced by its plan's true one (every step right), in place."""
    from selfimprove.runtime.tasks.worked import plan

    for r in rows:
        if r["worked"]:
            r["worked"] = [{**r["worked"][0], "text": plan(r["meta"]).solved(), "verified": True}]
    return rows


def test_verified_mode_prefers_worked_replies_whose_every_step_is_true():
    rows = with_worked(synthetic_rows())
    true_steps = {r["id"] for r in rows if any(w["verified"] for w in r["worked"])}
    false_steps = {r["id"] for r in rows if r["worked"] and not r["worked"][0]["verified"]}
    assert true_steps and false_steps  # a false step fails although the final answer is right
    assert all(r["worked"][0]["extracted"] == r["answer"] for r in rows if r["id"] in false_steps)
    chosen = select(
        rows,
        VERIFIED,
        SelectParams(prefer_short=True, max_per_prompt=1),
        embed=hash_embed,
        extract=TASK.extract,
    )
    plain = select(
        synthetic_rows(),
        VERIFIED,
        SelectParams(prefer_short=True, max_per_prompt=1),
        embed=hash_embed,
        extract=TASK.extract,
    )
    by_prompt = {r["prompt"]: r for r in rows}
    worked = [x for x in chosen.sft if by_prompt[x["prompt"]]["id"] in true_steps]
    assert worked and all(x["response"] == by_prompt[x["prompt"]]["worked"][0]["text"] for x in worked)
    assert all(
        ", so the answer is" not in x["response"]
        for x in chosen.sft
        if by_prompt[x["prompt"]]["id"] not in true_steps
    )
    # what the model always gets is dropped unless a worked reply verified (none here: their first
    # steps are false); what it never got is rescued by a worked reply
    assert all(by_prompt[x["prompt"]]["pass_rate"] < 1.0 for x in chosen.sft)
    rescued = {x["prompt"] for x in chosen.sft} - {x["prompt"] for x in plain.sft}
    assert rescued and all(
        by_prompt[p]["pass_rate"] == 0.0 and by_prompt[p]["id"] in true_steps for p in rescued
    )
    assert chosen.card["counts"]["prompts_worked"] == len(worked)
    easy = [r for r in rows if r["pass_rate"] == 1.0 and r["worked"]]
    true_worked(easy)  # with every step true, the easy prompts are kept, in the worked form
    kept = select(rows, VERIFIED, SelectParams(prefer_short=True, max_per_prompt=1), extract=TASK.extract)
    responses = {x["prompt"]: x["response"] for x in kept.sft}
    assert easy and all(responses[r["prompt"]] == r["worked"][0]["text"] for r in easy)
    assert kept.card["counts"]["prompts_worked"] == chosen.card["counts"]["prompts_worked"] + len(easy)
    assert plain.card["counts"]["prompts_worked"] == 0
    free = SelectParams(band=(0.0, 1.01))
    a = select(synthetic_rows(), LABEL_FREE, free, embed=hash_embed, extract=TASK.extract)
    b = select(rows, LABEL_FREE, free, embed=hash_embed, extract=TASK.extract)
    assert a.sft == b.sft and b.card["counts"]["prompts_worked"] == 0


def test_worked_mastered_off_drops_the_prompts_every_sample_answered_and_keeps_the_rest():
    rows = true_worked(with_worked(synthetic_rows()))  # so each prompt's rate alone decides
    params = SelectParams(prefer_short=True, max_per_prompt=1)
    keep = select(rows, VERIFIED, params, extract=TASK.extract)
    drop = select(rows, VERIFIED, params.model_copy(update={"worked_mastered": False}), extract=TASK.extract)
    by_prompt = {r["prompt"]: r for r in rows}
    mastered = {x["prompt"] for x in keep.sft if by_prompt[x["prompt"]]["pass_rate"] == 1.0}
    assert mastered and all(by_prompt[p]["worked"] for p in mastered)
    assert {x["prompt"] for x in drop.sft} == {x["prompt"] for x in keep.sft} - mastered
    # below a rate of 1 a worked reply still keeps its prompt, a never-answered one included
    assert any(
        by_prompt[x["prompt"]]["pass_rate"] == 0.0 and by_prompt[x["prompt"]]["worked"] for x in drop.sft
    )
    assert drop.card["counts"]["prompts_worked"] == keep.card["counts"]["prompts_worked"] - len(mastered)
    assert drop.card["dropped"]["difficulty"] == keep.card["dropped"]["difficulty"] + len(mastered)


def test_worked_replies_of_the_named_categories_are_trained_as_often_as_asked():
    rows = with_worked(synthetic_rows())
    once = select(rows, VERIFIED, SelectParams(prefer_short=True, max_per_prompt=1), extract=TASK.extract)
    times = {"sub2": 3, "add2": 4}
    repeated = select(
        rows,
        VERIFIED,
        SelectParams(prefer_short=True, max_per_prompt=1, worked_repeat=times),
        extract=TASK.extract,
    )
    worked = [x for x in once.sft if ", so the answer is" in x["response"]]
    plain = [x for x in once.sft if x not in worked]
    # worked replies of a named category and plain replies of one (never repeated) are both there
    assert any(x["category"] == "sub2" for x in worked) and any(x["category"] in times for x in plain)
    assert [x for x in repeated.sft if not x.get("repeat")] == once.sft
    copies = [x for x in repeated.sft if x.get("repeat")]
    expected = [
        (f"{x['id']}r{k}", x["response"]) for x in worked for k in range(1, times.get(x["category"], 1))
    ]
    assert sorted((x["id"], x["response"]) for x in copies) == sorted(expected)
    assert repeated.pairs == once.pairs  # a copy adds no preference pair
    assert repeated.card["counts"]["worked_repeats"] == len(expected) == len(repeated.sft) - len(once.sft)
    assert once.card["counts"]["worked_repeats"] == 0


def test_label_free_trains_a_majority_worked_reply_when_its_answer_is_the_label():
    rows = with_worked(synthetic_rows(), pick="majority")
    params = SelectParams(band=(0.0, 1.01), prefer_short=True, max_per_prompt=1)
    chosen = select(rows, LABEL_FREE, params, embed=hash_embed, extract=TASK.extract)
    by_prompt = {r["prompt"]: r for r in rows}
    label = {r["prompt"]: label_of(r, LABEL_FREE, params.agreement_threshold) for r in rows}
    worked = [x for x in chosen.sft if ", so the answer is" in x["response"]]
    # every worked reply trained is its prompt's, and its answer is the label (here always right)
    assert worked and all(x["response"] == by_prompt[x["prompt"]]["worked"][0]["text"] for x in worked)
    assert all(TASK.extract(x["response"]) == label[x["prompt"]] for x in worked)
    # a prompt whose label is wrong keeps its label's plain samples, never the disagreeing worked reply
    wrong = [x for x in chosen.sft if label[x["prompt"]] != by_prompt[x["prompt"]]["answer"]]
    assert wrong and all(", so the answer is" not in x["response"] for x in wrong)
    assert chosen.card["counts"]["prompts_worked"] == len(worked)
    # blind: the same selection with every reference and verdict wrong
    blind = select(with_wrong_truth(rows), LABEL_FREE, params, embed=hash_embed, extract=TASK.extract)
    assert blind.sft == chosen.sft


def test_sub_question_rows_are_trained_in_verified_mode_counted_apart_and_never_read_blind():
    parents = [i for i in TASK.items("train", 12, seed=9) if i.category == "sub2"][:3]
    steps = [TASK.step_item(p, f"{50 + k} - {10 * (k + 1)}", 1) for k, p in enumerate(parents)]
    step_rows = [
        make_row(s, [Sample(f"{s.answer}.", 3, "stop"), Sample("7.", 3, "stop")], TASK.extract, TASK.verify)
        for s in steps
    ]
    rows = synthetic_rows() + step_rows
    chosen = select(rows, VERIFIED, SelectParams(prefer_short=True, max_per_prompt=1), extract=TASK.extract)
    kept = {x["prompt"]: x["response"] for x in chosen.sft}
    assert all(kept[s.prompt] == f"{s.answer}." for s in steps)
    assert chosen.card["counts"]["prompts_steps"] == len(steps)
    blind = select(rows, LABEL_FREE, SelectParams(band=(0.0, 1.01)), extract=TASK.extract)
    assert blind.card["counts"]["prompts_in"] == len(rows) - len(steps)
    assert not {s.prompt for s in steps} & {x["prompt"] for x in blind.sft}


def test_label_free_drops_labels_their_check_refused_and_counts_them():
    rows = synthetic_rows()
    params = SelectParams(band=(0.0, 1.01))
    plain = select(rows, LABEL_FREE, params, extract=TASK.extract)
    checked = json.loads(json.dumps(rows))
    for k, row in enumerate(checked):  # every other labelled prompt's check fails
        if row["majority"] is not None:
            row["check"] = {"label": row["majority"], "passed": k % 2 == 0}
    chosen = select(checked, LABEL_FREE, params, extract=TASK.extract)
    refused = {r["id"] for k, r in enumerate(checked) if r["check"] and k % 2}
    kept = {x["id"].rsplit("-", 1)[0] for x in chosen.sft}
    assert kept and not kept & refused
    assert kept == {x["id"].rsplit("-", 1)[0] for x in plain.sft} - refused
    labelled = {r["id"] for r in checked if label_of(r, LABEL_FREE, params.agreement_threshold) is not None}
    assert chosen.card["dropped"]["label_check"] == len(refused & labelled) > 0
    verified = select(checked, VERIFIED, params, extract=TASK.extract)  # the verifier needs no check
    assert verified.sft == select(rows, VERIFIED, params, extract=TASK.extract).sft
