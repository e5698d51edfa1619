"""Paraphrased training prompts: cleaning, screening and keep rules, the shard's rows and counts, and
what selection and the command builder make of them (a scripted engine stands in for the model)."""

import re

import pytest

from selfimprove.acquisition import paraphrases
from selfimprove.acquisition.generate import ParaphraseJob, ShardJob, paraphrase, run_shard
from selfimprove.acquisition.shard import shard_stats
from selfimprove.contracts import samples as schema
from selfimprove.contracts.params import SelectParams
from selfimprove.runtime.decontam import Index
from selfimprove.runtime.engine import PromptResult, Sample
from selfimprove.runtime.engine import SamplingParams as EngineSampling
from selfimprove.runtime.evalguard import EvalGuard
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask
from selfimprove.selection.labels import LABEL_FREE, VERIFIED, blind
from selfimprove.selection.pipeline import select

pytestmark = pytest.mark.unit
SRC = "Q: What is 48 + 27?\n\nA:"


@pytest.mark.parametrize(
    ("reply", "answer", "want"),
    [
        ('"What do you get when you add 48 and 27?"', "75", ("What do you get when you add 48 and 27?", "")),
        ("Sure! Here it is:\n\nRestated question: Add 48 and 27.", None, ("Add 48 and 27.", "")),
        ("Q: Find the sum of 48 and 27.\nA: 75", "75", ("Find the sum of 48 and 27.", "")),
        ("What is 48 + 27?", None, (None, "identical")),
        ("48 + 27", None, (None, "identical")),  # a part of the prompt in its own words
        ("Add 48 and 27 to get 75.", "75", (None, "answer")),
        ("Add 48 and 72.", None, (None, "numbers")),  # a changed number is another problem
        ("Add 48 and 27, then add 1.", None, (None, "numbers")),
        ("Which number is 48?", None, (None, "numbers")),
        ("''", None, (None, "empty")),
        ("Add 48 and 27 " + "please " * 60, None, (None, "too_long")),
    ],
)
def test_cleaning(reply, answer, want):
    assert paraphrases.clean(reply, SRC, answer) == want


def test_an_answer_that_is_also_an_operand_is_no_leak():
    assert paraphrases.clean("Take 12 away from 24.", "What is 24 - 12?", "12") == (
        "Take 12 away from 24.",
        "",
    )
    assert paraphrases.clean("Take 12 away from 24: 12.", "What is 24 - 12?", "12")[1] == "answer"
    assert paraphrases.clean("Subtract 12 from 9; it is -3.", "What is 9 - 12?", "-3")[1] == "answer"


def test_screen_drops_repeats_and_evaluation_problems_by_the_prompts_guard():
    item = "Ann had 48 apples and bought 27 more at the shop. How many apples does she have now?"
    guard = EvalGuard(index=Index([item]))
    replies = [
        "How many apples does Ann have after buying 27 more to add to her 48?",
        "how many apples does ann have after buying 27 more to add to her 48",
        f"{item}",  # the evaluation item word for word: n-gram contaminated
        "Ann had 48 apples and bought 27 more at the shop. How many apples does she have now, in total?",
    ]
    kept, why = paraphrases.screen(
        replies, "Ann has 48 apples and gets 27 more. How many now?", None, guard.rule
    )
    assert kept == [replies[0]]
    assert why == {"repeat": 1, "contaminated": 2}


class Restater:
    """A stand-in model. Asked to restate a prompt it writes, in turn, ``Add A and B.``, a copy of
    the question, ``Add A and B+1.`` (another problem) and ``Please add A and B.``; asked a prompt
    starting ``Add`` it answers the sum, ``Please`` ones it answers ``0``, anything else ``wrong``."""

    def __init__(self, wrong: str = "0"):
        self.calls = []
        self.wrong = wrong

    def reply(self, prompt: str, k: int) -> str:
        if prompt == paraphrases.restate_prompt(
            prompt.split("Question: ", 1)[-1].removesuffix("\nRewritten:")
        ):
            question = prompt.split("Question: ", 1)[1].removesuffix("\nRewritten:")
            a, b = (int(x) for x in re.findall(r"\d+", question)[:2])
            return [f"Add {a} and {b}.", question, f"Add {a} and {b + 1}.", f"Please add {a} and {b}."][k % 4]
        if prompt.startswith("Add"):
            a, b = (int(x) for x in re.findall(r"\d+", prompt))
            return f"{a} + {b} = {a + b}."
        return "0" if prompt.startswith("Please") else self.wrong

    def generate(self, request):
        self.calls.append(list(request.prompts))
        return [
            PromptResult(tuple(Sample(self.reply(p, k), 3, "stop") for k in range(request.params.n)), 8)
            for p in request.prompts
        ]


def shard(by_majority: bool, wrong: str = "0"):
    task = ArithmeticTask(categories=("add2",))
    items = task.items("train", 3, seed=1)
    engine = Restater(wrong)
    sampling = EngineSampling(n=2, temperature=0.7, max_new_tokens=8, seed=5)
    rows, _, _ = run_shard(engine, task, ShardJob(items, sampling))
    job = ParaphraseJob(per_prompt=4, max_new_tokens=32, by_majority=by_majority)
    kept, counts = paraphrase(engine, task, items, rows, job, sampling)
    return items, rows, kept, counts, engine


def test_verified_keeps_a_restatement_the_verifier_accepts_against_the_source_answer():
    items, rows, kept, counts, engine = shard(by_majority=False)
    assert len(engine.calls) == 3  # the prompts, every restatement in one batch, their answers in one
    assert len(engine.calls[1]) == 3 and len(engine.calls[2]) == 6  # two usable restatements per prompt
    assert (counts.asked, counts.sampled, counts.kept) == (12, 6, 3)
    assert counts.refused == {"identical": 3, "numbers": 3}
    assert counts.tokens == 12 * 3 + 3 * 2 * 3  # every restatement, and the samples of those not kept
    for row, item in zip(kept, items, strict=True):
        a, b = item.meta["operands"]
        assert (
            row["prompt"] == f"Add {a} and {b}."
            and row["paraphrase_of"] == item.id == row["id"][: -len(".p1")]
        )
        assert row["answer"] == item.answer and row["category"] == item.category and row["pass_rate"] == 1.0
        assert row["meta"]["key"] == rows[items.index(item)]["meta"]["key"] and "pick" not in row["meta"]
    stats = shard_stats([*rows, *kept], 1.0, counts.tokens)
    assert stats.prompts == 3 and stats.samples == 6 and stats.paraphrases_kept == 3
    assert stats.tokens == 6 * 3 + 3 * 2 * 3 + counts.tokens


def test_label_free_keeps_a_restatement_whose_majority_is_the_sources():
    # the model answers every task prompt "0", and "0" to the "Please ..." restatements: they agree
    items, rows, kept, counts, _ = shard(by_majority=True)
    assert all(r["majority"] == "0" for r in rows)
    assert [r["prompt"].split()[0] for r in kept] == ["Please"] * 3  # the right "Add" answers disagree
    assert all(r["meta"]["pick"] == "majority" and r["id"].endswith(".p2") for r in kept)
    assert (counts.sampled, counts.kept) == (6, 3)
    # a source with no majority answer gets no restatement asked: none could be kept
    items, rows, kept, counts, engine = shard(by_majority=True, wrong="no idea")
    assert (counts.asked, kept, len(engine.calls)) == (0, [], 1)


def test_no_reference_answer_no_restatement_in_verified_runs():
    task = ArithmeticTask(categories=("add2",))
    items = [i.__class__(**{**i.__dict__, "answer": None}) for i in task.items("train", 2, seed=1)]
    engine = Restater()
    rows, _, _ = run_shard(engine, task, ShardJob(items, EngineSampling(n=2)))
    kept, counts = paraphrase(engine, task, items, rows, ParaphraseJob(per_prompt=2), EngineSampling(n=2))
    assert kept == [] and counts.asked == 0 and len(engine.calls) == 1


def test_restated_rows_follow_the_samples_schema():
    _, rows, kept, _, _ = shard(by_majority=False)
    required, declared = set(schema.PromptRow.__required_keys__), set(schema.PromptRow.__annotations__)
    for row in schema.from_jsonl(schema.to_jsonl([*rows, *kept])):
        assert required <= set(row) <= declared
    assert [schema.is_paraphrase(r) for r in [*rows, *kept]] == [False] * 3 + [True] * 3


def test_selection_keeps_restatements_as_prompts_and_drops_near_copies():
    _, rows, kept, _, _ = shard(by_majority=False)
    copy = {**kept[0], "id": kept[0]["id"][:-1] + "9", "prompt": kept[0]["prompt"].lower()}  # a repeat
    params = SelectParams(band=(0.0, 1.01), embed=False)
    chosen = select([copy, *kept, *rows], VERIFIED, params, extract=ArithmeticTask().extract)
    restated = {r["prompt"] for r in kept}
    assert restated <= {x["prompt"] for x in chosen.sft}
    counts = chosen.card["counts"]
    assert counts["paraphrases_in"] == 4 and counts["paraphrases_kept"] == 3
    assert chosen.card["dropped"]["duplicate_prompt"] == 1
    # label-free selection never sees a restatement the verifier kept
    assert not any(schema.is_paraphrase(r) for r in blind([*rows, *kept]))
    _, free_rows, free_kept, _, _ = shard(by_majority=True)
    assert sum(schema.is_paraphrase(r) for r in blind([*free_rows, *free_kept])) == 3
    free = select([*free_rows, *free_kept], LABEL_FREE, params, extract=ArithmeticTask().extract)
    assert free.card["counts"]["paraphrases_in"] == 3


def test_commands_paraphrase_from_their_iteration_by_the_run_label_mode():
    from selfimprove.evaluator.commands import paraphrase_at
    from selfimprove.evaluator.config import ConfigError, load_config

    cfg = load_config("acquisition: {paraphrase: {per_prompt: 3, from_iteration: 2, max_new_tokens: 48}}")
    assert paraphrase_at(cfg, 1).per_prompt == 0
    on = paraphrase_at(cfg, 2)
    assert (on.per_prompt, on.max_new_tokens, on.by_majority) == (3, 48, False)
    free = load_config("label_mode: label-free\nacquisition: {paraphrase: {per_prompt: 1}}")
    assert paraphrase_at(free, 1).by_majority
    assert paraphrase_at(load_config(""), 5).per_prompt == 0
    with pytest.raises(ConfigError, match="acquisition.paraphrase.per_promt: Extra inputs"):
        load_config("acquisition: {paraphrase: {per_promt: 2}}")
    with pytest.raises(ConfigError, match="acquisition.paraphrase.per_prompt"):
        load_config("acquisition: {paraphrase: {per_prompt: -1}}")


def test_report_counts_restated_prompts_per_iteration(tmp_path):
    from selfimprove.report.collect import RunFacts
    from selfimprove.report.render import render

    facts = RunFacts(run_id="r", state="completed", stop_reason="", lineage={}, decisions=[])
    assert "Paraphrased prompts" not in render(facts, tmp_path / "off").read_text()
    facts.paraphrases = {1: {"asked": 512, "sampled": 300, "kept": 120}}
    facts.cards = {1: {"counts": {"paraphrases_kept": 80}}}
    text = render(facts, tmp_path / "on").read_text()
    assert "## Paraphrased prompts" in text and "| 1 | 512 | 300 | 120 | 80 |" in text


class HeldOutRestater(Restater):
    """Restates every prompt in one of the task's held-out wordings (``How much is A + B?``, bare)."""

    def reply(self, prompt: str, k: int) -> str:
        if prompt.endswith("\nRewritten:"):
            question = prompt.split("Question: ", 1)[1].removesuffix("\nRewritten:")
            a, b = (int(x) for x in re.findall(r"\d+", question)[:2])
            return f"How much is {a} + {b}?"
        return super().reply(prompt, k)


def test_a_restatement_in_a_held_out_wording_is_never_trained_on():
    task = ArithmeticTask(categories=("add2",))
    assert task.heldout_wording("How much is 12 + 30?")  # one of the 9 held-out templates
    items = task.items("train", 3, seed=1)
    engine = HeldOutRestater()
    sampling = EngineSampling(n=2, temperature=0.7, max_new_tokens=8, seed=5)
    rows, _, _ = run_shard(engine, task, ShardJob(items, sampling))
    kept, counts = paraphrase(engine, task, items, rows, ParaphraseJob(per_prompt=1), sampling)
    assert kept == [] and counts.refused == {"heldout_wording": 3}
    assert len(engine.calls) == 2  # nothing left to answer: no third batch
