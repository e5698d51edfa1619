from collections import Counter

import pytest

from selfimprove.runtime.tasks import TaskLoadError, load_task
from selfimprove.runtime.tasks.arithmetic import (
    ArithmeticTask,
    canonical_key,
    evaluate,
    in_words,
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
