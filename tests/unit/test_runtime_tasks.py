import random
from collections import Counter

import pytest

from selfimprove.runtime.tasks import TaskLoadError, load_task
from selfimprove.runtime.tasks.arithmetic import (
    FRAMES,
    TEMPLATES,
    ArithmeticTask,
    canonical_key,
    evaluate,
    in_words,
    phrase,
    phrasing,
    split_of,
)
from selfimprove.runtime.tasks.seedset import load_seed_set

pytestmark = pytest.mark.unit


def test_generator_is_deterministic_and_seeded():
    task = ArithmeticTask()
    a, b = task.items("train", 40, seed=3), task.items("train", 40, seed=3)
    assert [i.prompt for i in a] == [i.prompt for i in b]
    assert [i.prompt for i in task.items("train", 40, seed=4)] != [i.prompt for i in a]


def test_train_and_dev_are_disjoint():
    task = ArithmeticTask(categories=("add2", "sub2", "mul2", "chain1"))
    train = {i.meta["key"] for s in range(3) for i in task.items("train", 400, seed=s)}
    dev = {i.meta["key"] for s in range(3) for i in task.items("dev", 100, seed=s)}
    assert train and dev and not train & dev
    assert all(split_of(k) == "dev" for k in dev)


def test_items_cover_categories_and_verify():
    task = ArithmeticTask()
    items = task.items("dev", 16, seed=0)
    assert {i.category for i in items} == set(task.categories)
    for item in items:
        assert item.answer == str(evaluate(item.meta["expression"]))
        assert task.verify(item, f"I think it is {item.answer}.")
        assert not task.verify(item, f"I think it is {int(item.answer) + 1}.")
        assert task.verify(item, "no number") is False


def test_dev_prompts_mix_every_phrasing_and_name_their_problem():
    items = ArithmeticTask(categories=("add2", "sub2")).items("dev", 400, seed=1234)
    frames = Counter(phrasing(i.prompt)[0] for i in items)
    assert set(frames) == {"bare", "Q/A", "Question/Answer"} and min(frames.values()) >= 60, frames
    worded = sum(in_words(i.meta["expression"]) in i.prompt for i in items)
    assert 120 <= worded <= 280, worded  # about half spell the operators out
    for item in items:  # the prompt asks exactly the item's problem, in symbols or words
        e = item.meta["expression"]
        assert e in item.prompt or in_words(e) in item.prompt, item.prompt


def test_difficulty_filters_categories():
    items = ArithmeticTask().items("train", 10, difficulty=3)
    assert {i.category for i in items} <= {"add3", "sub3"}


def test_exclude_keeps_keys_out():
    first = ArithmeticTask(categories=("add2",)).items("train", 20)
    banned = {i.meta["key"] for i in first[:10]}
    again = ArithmeticTask(categories=("add2",), exclude=banned).items("train", 20)
    assert not banned & {i.meta["key"] for i in again}


def test_canonical_key_and_evaluate():
    assert canonical_key("48 + 27") == ("+", (48, 27))
    assert canonical_key("(9 + 8) * 2") == ("(_+_)*_", (9, 8, 2))
    assert evaluate("(4 - 7) - 3") == -6
    with pytest.raises(ValueError):
        evaluate("__import__('os')")


def test_load_task_errors_are_clear():
    assert isinstance(load_task("arithmetic"), ArithmeticTask)
    assert isinstance(load_task("selfimprove.runtime.tasks.arithmetic:ArithmeticTask"), ArithmeticTask)
    with pytest.raises(TaskLoadError, match="built-in name"):
        load_task("no_such_task")
    with pytest.raises(TaskLoadError, match="cannot import"):
        load_task("no_such_pkg.mod:Task")
    with pytest.raises(TaskLoadError, match="not a subclass"):
        load_task("pathlib:Path")
    with pytest.raises(TaskLoadError, match="bad parameters"):
        load_task("arithmetic", {"colour": "red"})


def test_seed_set_format(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text(
        '# comment\n{"instruction": "Add the numbers.", "input": "2 and 3", "answer": 5, "category": "math"}\n\n'
        '{"instruction": "Write a haiku."}\n'
    )
    first, second = load_seed_set(path)
    assert first.prompt == "Add the numbers.\n\n2 and 3" and first.answer == "5" and first.category == "math"
    assert second.category == "general" and second.answer is None
    path.write_text('{"input": "x"}\n')
    with pytest.raises(ValueError, match="seeds.jsonl:1"):
        load_seed_set(path)


def test_heldout_phrasing_templates_are_disjoint_from_train_and_dev_prompts():
    task = ArithmeticTask(categories=("add2", "sub2", "chain1"))
    assert len(task.heldout) == 9 and not set(task.heldout) & set(task.trained)
    assert set(task.heldout) | set(task.trained) == set(TEMPLATES)
    assert {t.frame for t in task.heldout} == set(FRAMES)  # every frame kind has held-out wordings
    for split in ("train", "dev"):
        for item in task.items(split, 600 if split == "train" else 150, seed=7):
            e = item.meta["expression"]
            held = {t.render(e) for t in task.heldout if t.fits(e)}
            assert item.prompt not in held, (split, item.prompt)
    # over many draws of one problem, train prompts use every trained template and no held-out one
    rng = random.Random(0)
    seen = {phrase("86 + 29", rng, task.trained) for _ in range(3000)}
    assert seen == {t.render("86 + 29") for t in task.trained}


def test_heldout_phrasing_split_asks_the_dev_problems_in_heldout_templates_only():
    task = ArithmeticTask(categories=("add2", "sub2", "chain1"))
    dev = task.items("dev", 120, seed=1234)
    held = task.items("heldout_phrasing", 120, seed=1234)
    assert [i.meta for i in held] == [i.meta for i in dev]  # the same problems, in the same order
    assert all(split_of(i.meta["key"]) == "dev" for i in held)
    for item in held:
        e = item.meta["expression"]
        assert item.prompt in {t.render(e) for t in task.heldout if t.fits(e)}, item.prompt
    assert len({phrasing(i.prompt)[0] for i in held}) == 3  # every frame kind
    # a prefix of the split is the split at that size (an interim look trims it so)
    assert [i.prompt for i in task.items("heldout_phrasing", 40, seed=1234)] == [i.prompt for i in held[:40]]


def test_heldout_phrasing_keeps_the_problems_and_only_drops_wordings():
    every = ArithmeticTask(heldout_phrasing_share=0)
    held_out = ArithmeticTask()
    assert "heldout_phrasing" not in every.splits and "heldout_phrasing" in held_out.splits
    for split in ("train", "dev"):
        a, b = every.items(split, 200, seed=3), held_out.items(split, 200, seed=3)
        assert [i.meta for i in a] == [i.meta for i in b]
        same = sum(x.prompt == y.prompt for x, y in zip(a, b, strict=True))
        assert 0.6 * len(a) < same < len(a)  # the prompts in held-out wordings were asked otherwise
    with pytest.raises(ValueError, match="no 'heldout_phrasing' split"):
        every.items("heldout_phrasing", 5)
    with pytest.raises(ValueError, match="heldout_phrasing_share must be from 0 to 0.5"):
        ArithmeticTask(heldout_phrasing_share=0.75)
    sub = ArithmeticTask(("sub2",))
    [parent] = sub.items("train", 1)
    assert sub.step_item(parent, "61 - 20", 1).prompt == "What is 61 - 20?"  # a trained wording
