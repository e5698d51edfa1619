"""The data task (a user's file, no code) and its verifiers: formats, splits, and every bad-file case
failing with the file, row and field named, when the run config loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfimprove.evaluator.config import ConfigError, load_config
from selfimprove.runtime.tasks import load_task
from selfimprove.runtime.tasks.base import TooFewProblems
from selfimprove.runtime.tasks.datafile import DataFileError, DataTask
from selfimprove.runtime.tasks.verifiers import VerifierError, make_verifier

pytestmark = pytest.mark.unit

ROWS = [
    {"id": f"q{i}", "question": f"Tom has {i} apples and buys 2. How many now?", "answer": str(i + 2)}
    for i in range(60)
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def task(path: Path, **params) -> DataTask:
    return load_task(
        "data", {"path": str(path), "answer": "answer", "id": "id", "verifier": "numeric", **params}
    )  # type: ignore[return-value]


def test_jsonl_csv_parquet_and_save_to_disk_give_the_same_problems(tmp_path: Path) -> None:
    import datasets

    jsonl = write_jsonl(tmp_path / "d.jsonl", ROWS)
    ds = datasets.Dataset.from_list(ROWS)
    ds.to_csv(str(tmp_path / "d.csv"), index=False)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    want = [(i.id, i.prompt, i.answer) for i in task(jsonl).items("dev", 3)]
    for other in ("d.csv", "d.parquet", "saved"):
        got = [(i.id, i.prompt, i.answer) for i in task(tmp_path / other).items("dev", 3)]
        assert got == want, other


def test_splits_are_disjoint_stable_and_cover_the_file(tmp_path: Path) -> None:
    t = task(write_jsonl(tmp_path / "d.jsonl", ROWS), dev_share=0.2)
    with pytest.raises(TooFewProblems) as train_all:
        t.items("train", 1000)
    train = {i.id for i in train_all.value.found}
    with pytest.raises(TooFewProblems) as dev_all:
        t.items("dev", 1000)
    dev = {i.id for i in dev_all.value.found}
    assert not train & dev and len(train | dev) == len(ROWS) and 3 < len(dev) < 25
    # a row stays on its side when the file grows
    bigger = task(
        write_jsonl(tmp_path / "e.jsonl", [*ROWS, *({**r, "id": r["id"] + "x"} for r in ROWS)]), dev_share=0.2
    )
    with pytest.raises(TooFewProblems) as grown:
        bigger.items("dev", 1000)
    assert dev <= {i.id for i in grown.value.found}
    assert [i.id for i in t.items("train", 5, seed=1)] == [i.id for i in t.items("train", 5, seed=1)]
    assert [i.id for i in t.items("train", 5, seed=1)] != [i.id for i in t.items("train", 5, seed=2)]
    # a data file has no templates: no held-out-phrasing split (evaluations score none)
    assert t.splits == ("train", "dev")
    with pytest.raises(ValueError, match="no 'heldout_phrasing' split"):
        t.items("heldout_phrasing", 5)


def test_the_template_and_the_verifier_shape_prompt_and_verdict(tmp_path: Path) -> None:
    t = task(write_jsonl(tmp_path / "d.jsonl", ROWS), template="Q: {question}\nAnswer with a number.")
    item = t.items("dev", 1)[0]
    assert item.prompt.startswith("Q: Tom has") and item.prompt.endswith("Answer with a number.")
    assert t.verify(item, f"So the answer is {item.answer}.") is True
    assert t.verify(item, f"So the answer is {int(item.answer) + 1}.") is False
    assert t.verify(item, "I do not know") is False
    assert item.meta["key"][0] == "text"


@pytest.mark.parametrize(
    ("content", "params", "message"),
    [
        ("", {}, "d.jsonl: the file is empty"),
        (
            '{"question": "a", "answer": "1", "id": "x"}\n{"question": "b", "answer": \n',
            {},
            "d.jsonl: row 2: not valid JSON",
        ),
        ('{"question": "a", "answer": "1", "id": "x"}\n[1, 2]\n', {}, "row 2"),
        (
            json.dumps({"prompt": "a", "answer": "1", "id": "x"}) + "\n",
            {},
            "no field 'question' (the rows have answer, id, prompt)",
        ),
        (
            json.dumps({"question": "a", "answer": "1", "id": "x"})
            + "\n"
            + json.dumps({"question": "", "answer": "2", "id": "y"})
            + "\n",
            {},
            "d.jsonl: row 2: field 'question' is empty",
        ),
        (
            json.dumps({"question": "a", "answer": "1", "id": "x"})
            + "\n"
            + json.dumps({"question": "b", "answer": "2", "id": "x"})
            + "\n",
            {},
            "row 2: the same id 'x' as row 1",
        ),
        (
            json.dumps({"question": "a", "answer": "1", "id": "x"}) + "\n",
            {"template": "{question} {unit}"},
            "no field 'unit'",
        ),
        (
            json.dumps({"question": "a", "answer": "1", "id": "x"}) + "\n",
            {"verifier": "numbers"},
            "unknown verifier 'numbers'",
        ),
    ],
    ids=[
        "empty",
        "bad-json",
        "not-object",
        "missing-field",
        "empty-field",
        "duplicate-id",
        "template-field",
        "verifier",
    ],
)
def test_a_bad_file_fails_at_config_load_naming_file_row_and_field(
    tmp_path: Path, content: str, params: dict, message: str
) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    task_params = {"path": str(path), "answer": "answer", "id": "id", "verifier": "numeric", **params}
    with pytest.raises(ConfigError) as err:
        load_config(json.dumps({"task": {"name": "data", "params": task_params, "dev_size": 1}}))
    assert message in str(err.value)
    assert str(err.value).startswith("invalid run config: task:")


def test_a_missing_file_and_an_unknown_suffix_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="no such data file"):
        task(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataFileError, match="cannot tell the format from the suffix '.txt'"):
        task(tmp_path / "d.txt")


def test_a_file_without_answers_runs_label_free_only(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": r["question"]} for r in ROWS])
    body = {"task": {"name": "data", "params": {"path": str(path)}, "dev_size": 2}}
    with pytest.raises(ConfigError, match="runs with label_mode label-free only"):
        load_config(json.dumps(body))
    cfg = load_config(json.dumps({**body, "label_mode": "label-free"}))
    item = load_task(cfg.task.name, cfg.task.params).items("dev", 1)[0]
    assert item.answer is None


def test_a_small_split_names_the_sizes_at_config_load(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(ConfigError, match=r"task.dev_size: .*the dev split has \d+ problems, fewer than 50"):
        load_config(
            json.dumps(
                {"task": {"name": "data", "params": {"path": str(path), "answer": "answer"}, "dev_size": 50}}
            )
        )


@pytest.mark.parametrize(
    ("name", "params", "reply", "answer", "verdict"),
    [
        ("numeric", {}, "It costs $1,250.", "1250", True),
        ("numeric", {}, "about 3.3", "3.33", False),
        ("numeric", {"tolerance": 0.05}, "about 3.3", "3.33", True),
        ("exact", {}, "Let me think.\nParis.", "paris", True),
        ("choice", {}, "The answer is (c).", "C", True),
        ("choice", {}, "A is wrong, so B", "A", False),
        ("regex", {"pattern": r"answer: (\w+)", "flags": "i"}, "Answer: Blue", "blue", True),
        ("tests.unit.test_runtime_datatask:same_length", {}, "abc", "xyz", True),
    ],
)
def test_verifiers_by_name(name: str, params: dict, reply: str, answer: str, verdict: bool) -> None:
    assert make_verifier(name, params).verify(reply, answer) is verdict


def same_length(reply: str, answer: str) -> bool:
    return len(reply) == len(answer)


def test_bad_verifier_parameters_are_named() -> None:
    with pytest.raises(VerifierError, match="regex: needs a 'pattern'"):
        make_verifier("regex")
    with pytest.raises(VerifierError, match="bad verifier_params"):
        make_verifier("numeric", {"tol": 1})
    with pytest.raises(VerifierError, match="cannot import it"):
        make_verifier("no_such_module:fn")


def test_a_data_task_has_no_phrasing_gap_to_judge(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    body = {"task": {"name": "data", "params": {"path": str(path), "answer": "answer"}, "dev_size": 5}}
    load_config(json.dumps(body))  # the held-out-phrasing suite is sent, and skipped by the workers
    with pytest.raises(ConfigError, match="max_phrasing_gap: task 'data' has no heldout_phrasing split"):
        load_config(json.dumps({**body, "evaluation": {"max_phrasing_gap": 0.05}}))
