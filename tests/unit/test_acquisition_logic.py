"""Acquisition's pure logic: shard prompts, rows and statistics, sampling defaults."""

import dataclasses
import random
import re

import pytest

from selfimprove.acquisition import prompts
from selfimprove.acquisition.generate import ShardJob, run_shard
from selfimprove.acquisition.service import sampling_params
from selfimprove.acquisition.shard import make_row, shard_stats
from selfimprove.contracts.samples import from_jsonl, to_jsonl
from selfimprove.runtime.engine import PromptResult, Sample
from selfimprove.runtime.engine import SamplingParams as EngineSampling
from selfimprove.runtime.tasks.arithmetic import ArithmeticTask, canonical_key
from selfimprove.runtime.tasks.base import problem_key
from selfimprove.v2.common_pb2 import SamplingParams
from selfimprove.v2.stages_pb2 import AcquireCommand

pytestmark = pytest.mark.unit


def test_shards_are_disjoint_deterministic_and_change_with_iteration():
    task = ArithmeticTask()
    shards = [prompts.shard_items(task, 7, 1, s, 4, 10) for s in range(4)]
    ids = [i.id for shard in shards for i in shard]
    assert len(ids) == len(set(ids)) == 40
    assert [i.id for i in prompts.shard_items(task, 7, 1, 2, 4, 10)] == [i.id for i in shards[2]]
    assert {i.id for i in prompts.shard_items(task, 7, 2, 0, 4, 10)} != {i.id for i in shards[0]}
    with pytest.raises(ValueError, match="outside"):
        prompts.shard_items(task, 7, 1, 4, 4, 10)


def test_evaluation_problems_are_never_drawn():
    from collections import Counter

    task = ArithmeticTask(categories=("add2", "sub2"))
    plain = [i for s in range(2) for i in prompts.shard_items(task, 7, 1, s, 2, 20)]
    banned = {problem_key(i.meta) for i in plain[::3]}  # every third problem is an evaluation item
    for weights in (None, {"add2": 1.0, "sub2": 3.0}):
        shards = [prompts.shard_items(task, 7, 1, s, 2, 20, weights, banned) for s in range(2)]
        drawn = [i for shard in shards for i in shard]
        assert len({i.id for i in drawn}) == 40 and not {problem_key(i.meta) for i in drawn} & banned
    assert Counter(i.category for i in drawn) == {"add2": 10, "sub2": 30}  # the weights still hold
    unbanned = [i.id for i in plain if problem_key(i.meta) not in banned]
    assert [i.id for i in prompts.shard_items(task, 7, 1, 0, 2, 20, None, banned)] == unbanned[:20]


def test_a_task_that_runs_out_gives_what_it_has():
    class Three(ArithmeticTask):  # a task with only three train problems
        def items(self, split, n, seed=0, difficulty=None):
            return super().items(split, min(n, 3), seed, difficulty)

    task = Three(categories=("add2",))
    first = task.items("train", 3)
    left = prompts.train_stream(task, 5, 0, {problem_key(first[0].meta)})
    assert [i.id for i in left] == [i.id for i in first[1:]]

    # the built-in task: the 1-digit additions have 88 train problems; two shards of 64 share them out
    add1 = ArithmeticTask(categories=("add1",))
    shards = [prompts.shard_items(add1, 0, 1, k, 2, 64) for k in range(2)]
    assert [len(s) for s in shards] == [64, 24]
    assert len({i.id for s in shards for i in s}) == 88


def test_category_weights_share_out_disjoint_shards():
    from collections import Counter

    task = ArithmeticTask(categories=("add2", "sub2"))
    weights = {"add2": 0.25, "sub2": 0.75}
    shards = [prompts.shard_items(task, 7, 2, s, 2, 40, weights) for s in range(2)]
    ids = [i.id for shard in shards for i in shard]
    assert len(ids) == len(set(ids)) == 80
    assert Counter(i.category for shard in shards for i in shard) == {"add2": 20, "sub2": 60}
    assert [i.id for i in prompts.shard_items(task, 7, 2, 1, 2, 40, weights)] == [i.id for i in shards[1]]
    assert all({i.category for i in shard} == {"add2", "sub2"} for shard in shards)  # each shard a mix
    with pytest.raises(ValueError, match="unknown categories \\['mul2'\\]"):
        prompts.shard_items(task, 7, 2, 0, 2, 40, {"mul2": 1.0})
    with pytest.raises(ValueError, match="negative weight"):
        prompts.shard_items(task, 7, 2, 0, 2, 40, {"add2": -1.0})


def test_rows_score_every_sample_and_round_trip():
    task = ArithmeticTask(categories=("add2",))
    [item] = task.items("train", 1, seed=0)
    wrong = str(int(item.answer) + 1)
    samples = [
        Sample(f"It is {item.answer}.", 5, "stop"),
        Sample(f"{item.answer}", 2, "stop"),
        Sample(f"maybe {wrong}", 4, "stop"),
        Sample("I do not know", 9, "length"),
    ]
    row = make_row(item, samples, task.extract, task.verify, [0.9, 0.8, 0.2, 0.5])
    assert row["majority"] == item.answer and row["agreement"] == 0.5 and row["pass_rate"] == 0.5
    assert [s["verified"] for s in row["samples"]] == [True, True, False, False]
    assert [s["agrees"] for s in row["samples"]] == [True, True, False, False]
    assert row["samples"][3]["extracted"] is None and row["samples"][0]["judge"] == 0.9
    assert row["meta"]["key"] == ["+", list(item.meta["operands"])]
    assert from_jsonl(to_jsonl([row])) == [row]
    stats = shard_stats([row], 4.0)
    assert stats.samples == 4 and stats.tokens == 20 and stats.tokens_per_second == 5.0
    assert stats.yield_rate == 1.0 and stats.pass_rate_0_50 == 1 and stats.agreement_mean == 0.5


def test_sampling_defaults_and_per_shard_seed():
    cmd = AcquireCommand(shard=1, seed=3, sampling=SamplingParams(temperature=0.7))
    params = sampling_params(cmd, iteration=2)
    assert (params.n, params.top_p, params.max_new_tokens, params.temperature) == (
        4,
        1.0,
        128,
        pytest.approx(0.7),
    )
    cmd.shard = 2
    assert sampling_params(cmd, 2).seed != params.seed


class ScriptedEngine:
    """A stand-in engine: every sample of a prompt is ``reply(prompt)``; the prompts of each call are kept."""

    tokens = 4

    def __init__(self):
        self.prompts = []

    def reply(self, prompt: str) -> str:
        raise NotImplementedError

    def generate(self, request):
        self.prompts.append(list(request.prompts))
        return [
            PromptResult((Sample(self.reply(p), self.tokens, "stop"),) * request.params.n, 8)
            for p in request.prompts
        ]


class HintReader(ScriptedEngine):
    """Answers right only when the prompt carries the answer as a hint."""

    def reply(self, prompt):
        return (
            f"It is {prompt.split('The answer is ')[1].split('.')[0] if 'The answer is ' in prompt else '0'}."
        )


def test_rationalize_asks_again_only_for_unanswered_prompts_and_keeps_hints_apart():
    task = ArithmeticTask(categories=("add2",))
    items = task.items("train", 4, seed=3)
    items[0] = dataclasses.replace(items[0], prompt="What is 0 + 0?", answer="0")  # the model gets this one
    engine = HintReader()
    job = ShardJob(items, EngineSampling(n=2, max_new_tokens=8), rationalize=True)
    rows, _, _ = run_shard(engine, task, job)
    assert len(engine.prompts) == 2 and len(engine.prompts[1]) == 3
    assert all(p.endswith("Reply briefly, giving the answer.") for p in engine.prompts[1])
    assert rows[0]["rationales"] == [] and rows[0]["pass_rate"] == 1.0
    for row, item in zip(rows[1:], items[1:], strict=True):
        assert row["pass_rate"] == 0.0 and row["prompt"] == item.prompt
        assert [s["verified"] for s in row["rationales"]] == [True, True]
    stats = shard_stats(rows, 1.0)
    assert stats.yield_rate == 0.25 and stats.rationalized == 3 and stats.hinted_samples == 6
    assert stats.tokens == 4 * 2 * 4 + 6 * 4
    off, _, _ = run_shard(HintReader(), task, ShardJob(items, EngineSampling(n=2, max_new_tokens=8)))
    assert all(r["rationales"] == [] for r in off)


class Calculator(ScriptedEngine):
    """Answers the sub-questions of worked replies, off by one when the first operand is 58, and
    nothing else."""

    tokens = 6

    def reply(self, prompt):
        if m := re.fullmatch(r"What is (\d+) ([+-]) (\d+)\?", prompt):
            a, op, b = int(m[1]), m[2], int(m[3])
            return f"The answer is {(a + b if op == '+' else a - b) + (a == 58)}."
        return "I do not know."


def test_worked_replies_are_written_from_the_models_own_sub_answers_and_verified_step_by_step():
    task = ArithmeticTask(categories=("sub2",))
    rng = random.Random(0)
    items = [task._item(e, canonical_key(e), "sub2", rng) for e in ("23 - 61", "74 - 16", "68 - 10")]
    items = [
        dataclasses.replace(i, prompt=f"Calculate {i.meta['expression']}.") for i in items
    ]  # never answered
    mul = ArithmeticTask(categories=("mul1",)).items("train", 1, seed=1)[0]
    engine = Calculator()
    rows, _, _ = run_shard(
        engine, task, ShardJob([*items, mul], EngineSampling(n=1, max_new_tokens=8), worked=True)
    )
    assert engine.prompts[1] == ["What is 61 - 20?", "What is 74 - 10?", "What is 68 - 10?"]
    assert engine.prompts[2] == ["What is 41 - 3?", "What is 64 - 6?", "What is 58 - 0?"]
    first, second, third, product = (r["worked"] for r in rows[:4])
    assert first == [
        {
            "text": "23 - 61 = -(61 - 23): 61 - 20 = 41, 41 - 3 = 38, so the answer is -38.",
            "tokens": 12,
            "finish_reason": "stop",
            "extracted": "-38",
            "verified": True,
            "steps": ["The answer is 41.", "The answer is 38."],
            "pick": "verifier",
        }
    ]
    assert second[0]["verified"] and second[0]["text"].endswith("the answer is 58.")
    assert (
        third[0]["text"] == "68 - 10 = 58, 58 - 0 = 59, so the answer is 59."
        and third[0]["verified"] is False
    )
    assert product == []
    steps = rows[4:]  # the sub-questions, as rows of their own after the prompts'
    assert [r["prompt"] for r in steps] == [*engine.prompts[1], *engine.prompts[2]]
    assert [r["meta"]["step"] for r in steps] == [1, 1, 1, 2, 2, 2]
    assert [r["pass_rate"] for r in steps] == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert steps[0]["id"] == f"{items[0].id}.s1" and steps[0]["answer"] == "41"
    stats = shard_stats(rows, 1.0)
    assert stats.worked == 2 and stats.worked_replies == 3
    assert stats.prompts == 4 and stats.step_prompts == 6 and stats.step_yield == pytest.approx(5 / 6)
    assert stats.tokens == 4 * 6 + 6 * 6
    assert all(r["worked"] == [] for r in run_shard(Calculator(), task, ShardJob(items, EngineSampling()))[0])
    engine = Calculator()  # a prompt a worked reply answered is not asked again with a hint
    run_shard(engine, task, ShardJob([*items, mul], EngineSampling(), rationalize=True, worked=True))
    assert [p.split(" The answer")[0] for p in engine.prompts[3]] == [items[2].prompt, mul.prompt]


class HintedCalculator(Calculator):
    """Like :class:`Calculator`, and a prompt with its answer as a hint is answered with that answer."""

    def reply(self, prompt):
        hint = re.search(r"The answer is (-?\d+)\. Reply briefly", prompt)
        return f"It is {hint[1]}." if hint else super().reply(prompt)


def test_rationalize_steps_hints_only_the_steps_no_sample_answered_and_writes_from_the_hinted_answer():
    task = ArithmeticTask(categories=("sub2",))
    rng = random.Random(0)
    items = [task._item(e, canonical_key(e), "sub2", rng) for e in ("23 - 61", "68 - 10", "78 - 20")]
    sampling = EngineSampling(n=2, max_new_tokens=8)
    engine = HintedCalculator()  # gets 58 - 0 wrong: the second step of both 68 - 10 and 78 - 20
    rows, _, _ = run_shard(engine, task, ShardJob(items, sampling, worked=True, rationalize_steps=True))
    assert engine.prompts[1] == ["What is 61 - 20?", "What is 68 - 10?", "What is 78 - 20?"]
    assert len(engine.prompts) == 4  # plain, first steps (all right: no hint asked), second steps, hints
    assert engine.prompts[3] == [prompts.hint_prompt(task.step_item(i, "58 - 0", 2)) for i in items[1:]]
    second, third = rows[1]["worked"][0], rows[2]["worked"][0]
    assert second["verified"] and second["text"] == "68 - 10 = 58, 58 - 0 = 58, so the answer is 58."
    assert second["steps"] == ["The answer is 58.", "It is 58."]
    assert third["verified"] and rows[0]["worked"][0]["steps"][1] == "The answer is 38."
    steps = rows[3:]
    assert [len(r["rationales"]) for r in steps] == [0, 0, 0, 0, 2, 2]
    assert all(s["verified"] for r in steps[4:] for s in r["rationales"]) and steps[4]["pass_rate"] == 0.0
    stats = shard_stats(rows, 1.0)
    assert stats.steps_rationalized == 2 and stats.worked == 3
    assert stats.tokens == (3 + 6) * 2 * 6 + 2 * 2 * 6  # the hinted step replies are counted too
    engine = HintedCalculator()  # off: no hint, and the wrong step's reply is refused
    rows, _, _ = run_shard(engine, task, ShardJob(items, sampling, worked=True))
    assert len(engine.prompts) == 3 and rows[1]["worked"][0]["verified"] is False
    with pytest.raises(ValueError, match="label-free"):
        run_shard(
            engine,
            task,
            ShardJob(items, sampling, worked=True, worked_by_majority=True, rationalize_steps=True),
        )


class Unsure(Calculator):
    """Like :class:`Calculator`, but a prompt's first sample is off by ten (the second is right)."""

    def generate(self, request):
        results = super().generate(request)
        wrong = lambda s: Sample(re.sub(r"\d+", lambda m: str(int(m[0]) + 10), s.text), s.tokens, "stop")  # noqa: E731
        return [PromptResult((wrong(r.samples[0]), *r.samples[1:]), 8) for r in results]


def test_worked_replies_are_written_from_a_verified_sample_of_each_step_when_one_exists():
    task = ArithmeticTask(categories=("sub2",))
    item = task._item("23 - 61", canonical_key("23 - 61"), "sub2", random.Random(0))
    engine = Unsure()
    rows, _, _ = run_shard(engine, task, ShardJob([item], EngineSampling(n=2, max_new_tokens=8), worked=True))
    assert engine.prompts[2] == ["What is 41 - 3?"]  # the second step is asked on the right first answer
    [worked] = rows[0]["worked"]
    assert worked["verified"]
    assert worked["text"] == "23 - 61 = -(61 - 23): 61 - 20 = 41, 41 - 3 = 38, so the answer is -38."
    assert [r["pass_rate"] for r in rows[1:]] == [0.5, 0.5]
    engine = Unsure()  # with one sample, the wrong one is all there is: the reply is written, and refused
    rows, _, _ = run_shard(engine, task, ShardJob([item], EngineSampling(n=1, max_new_tokens=8), worked=True))
    assert engine.prompts[2] == ["What is 51 - 3?"] and rows[0]["worked"][0]["verified"] is False


class Outvoted(Calculator):
    """Like :class:`Calculator`, but only a prompt's first sample is right: the others are off by ten."""

    def generate(self, request):
        results = super().generate(request)
        wrong = lambda s: Sample(re.sub(r"\d+", lambda m: str(int(m[0]) + 10), s.text), s.tokens, "stop")  # noqa: E731
        return [PromptResult((r.samples[0], *map(wrong, r.samples[1:])), 8) for r in results]


def test_label_free_worked_replies_follow_each_steps_majority_and_never_the_verifier():
    task = ArithmeticTask(categories=("sub2",))
    item = task._item("23 - 61", canonical_key("23 - 61"), "sub2", random.Random(0))
    sampling = EngineSampling(n=3, max_new_tokens=8)
    engine = Outvoted()  # verified: the one right sample of each step is chosen
    rows, _, _ = run_shard(engine, task, ShardJob([item], sampling, worked=True))
    assert engine.prompts[2] == ["What is 41 - 3?"] and rows[0]["worked"][0]["pick"] == "verifier"
    engine = Outvoted()  # label-free: the two wrong samples outvote it, at both steps
    rows, _, _ = run_shard(engine, task, ShardJob([item], sampling, worked=True, worked_by_majority=True))
    assert engine.prompts[2] == ["What is 51 - 3?"]
    [worked] = rows[0]["worked"]
    assert worked["text"] == "23 - 61 = -(61 - 23): 61 - 20 = 51, 51 - 3 = 58, so the answer is -58."
    assert worked["pick"] == "majority" and worked["verified"] is False
    assert [r["meta"]["pick"] for r in rows[1:]] == ["majority", "majority"]
    engine = Outvoted()  # two samples tie: no majority, so no second question and no reply
    two = EngineSampling(n=2, max_new_tokens=8)
    rows, _, _ = run_shard(engine, task, ShardJob([item], two, worked=True, worked_by_majority=True))
    assert len(engine.prompts) == 2 and rows[0]["worked"] == [] and len(rows) == 2


class SumsRight(ScriptedEngine):
    """Answers every sum right and every difference one too high: its subtraction labels are wrong,
    and the check of a difference (a sum) says so."""

    def reply(self, prompt):
        expr = re.search(r"(-?\d+) (\+|-|plus|minus) (-?\d+)", prompt)
        a, op, b = int(expr.group(1)), expr.group(2), int(expr.group(3))
        return f"The answer is {a + b if op in ('+', 'plus') else a - b + 1}."


def test_label_check_asks_one_greedy_question_per_majority_and_never_reads_the_truth():
    task = ArithmeticTask(categories=("add2", "sub2"))
    items = task.items("train", 6, seed=3)
    engine = SumsRight()
    job = ShardJob(items, EngineSampling(n=3, temperature=0.7, max_new_tokens=8), check_labels=True)
    rows, _, _ = run_shard(engine, task, job)
    assert len(engine.prompts) == 2 and engine.prompts[1] == [r["check"]["prompt"] for r in rows]
    for row, item in zip(rows, items, strict=True):
        check, a = row["check"], item.meta["operands"][0]
        assert check["label"] == row["majority"]
        assert check["passed"] is (item.meta["operator"] == "+")  # a wrong difference fails its check
        assert check["expects"] == (row["majority"] if item.meta["operator"] == "+" else str(a))
    blind = [dataclasses.replace(i, answer=None) for i in items]  # the same without the truth
    blind_rows, _, _ = run_shard(SumsRight(), task, dataclasses.replace(job, items=blind))
    assert [r["check"] for r in blind_rows] == [r["check"] for r in rows]
    stats = shard_stats(rows, 1.0)
    assert stats.labels_checked == 6 and stats.labels_confirmed == 3
    assert stats.tokens == 6 * 3 * 4 + 6 * 4
    off, _, _ = run_shard(SumsRight(), task, dataclasses.replace(job, check_labels=False))
    assert all(r["check"] is None for r in off)


class CarriesWrong(ScriptedEngine):
    """Adds ten to a sum of two numbers that are both at least 10 and neither round (the same wrong
    answer however the sum is asked), answers other sums right, and every difference one too high."""

    def reply(self, prompt):
        expr = re.search(r"(-?\d+) (\+|-|plus|minus) (-?\d+)", prompt)
        a, op, b = int(expr.group(1)), expr.group(2), int(expr.group(3))
        if op in ("-", "minus"):
            return f"The answer is {a - b + 1}."
        slip = 10 if min(a, b) >= 10 and a % 10 and b % 10 else 0
        return f"The answer is {a + b + slip}."


class SaysSeven(ScriptedEngine):
    """States every question as a (false) equation with 7 as its value."""

    def reply(self, prompt):
        expr = re.search(r"(-?\d+) (\+|-|plus|minus) (-?\d+)", prompt)
        return f"{expr.group(1)} + {expr.group(3)} = 7 is my answer"


def test_label_check_is_consistency_alone_not_the_verifier_judging_stated_equations():
    task = ArithmeticTask(categories=("add2",))
    items = task.items("train", 4, seed=3)
    job = ShardJob(items, EngineSampling(n=2, max_new_tokens=8), check_labels=True)
    rows, _, _ = run_shard(SaysSeven(), task, job)
    # every label is 7, wrong, and the check's reply states a false equation: a verifier would refuse
    # it; the model's own answers agree, so the check passes (it must not be a hidden verifier)
    assert all(r["check"]["label"] == "7" and r["check"]["passed"] for r in rows)
    assert not any(task.verify(i, r["check"]["text"]) for i, r in zip(items, rows, strict=True))


def test_rows_follow_the_shared_samples_schema():
    """What acquisition writes has exactly the keys that :mod:`selfimprove.contracts.samples` declares,
    which is what selection reads."""
    from selfimprove.contracts import samples as schema

    def keys(typed):
        return set(typed.__required_keys__), set(typed.__annotations__)

    task = ArithmeticTask(categories=("add2", "sub2"))
    items = task.items("train", 6, seed=5)
    job = ShardJob(
        items,
        EngineSampling(n=3, temperature=0.7, max_new_tokens=8),
        rationalize=True,
        worked=True,
        check_labels=True,
    )
    rows, _, _ = run_shard(CarriesWrong(), task, job)
    parts = {
        "samples": schema.Sample,
        "rationales": schema.Rationale,
        "worked": schema.WorkedReply,
        "check": schema.Check,
    }
    seen = set()
    required, declared = keys(schema.PromptRow)
    for row in from_jsonl(to_jsonl(rows)):
        assert required <= set(row) <= declared, row
        for name, typed in parts.items():
            entry = row.get(name)
            for e in entry if isinstance(entry, list) else [entry] if entry else []:
                assert set(e) == keys(typed)[1], (name, e)
                seen.add(name)
    assert seen == set(parts) and any(schema.is_step(r) for r in rows)
