"""The run report renders every section and plot from the facts it is given."""

import pytest

from selfimprove.report.collect import RunFacts
from selfimprove.report.render import render

pytestmark = pytest.mark.unit


def test_report_has_every_section_and_plot(tmp_path):
    facts = RunFacts(
        run_id="r1",
        state="completed",
        stop_reason="budget spent: 2 iterations",
        lineage={
            "code_version": "git:abc",
            "history": [
                {
                    "iteration": 1,
                    "incumbent_accuracy": 0.2,
                    "candidate_accuracy": 0.5,
                    "p_value": 0.001,
                    "promoted": True,
                    "samples": 96,
                    "yield": 0.4,
                    "answered": 0.75,
                    "kept": 30,
                    "diversity": 0.55,
                    "asked": {"add1": 20.0, "add2": 76.0},
                },
                {
                    "iteration": 2,
                    "incumbent_accuracy": 0.5,
                    "candidate_accuracy": 0.52,
                    "p_value": 0.6,
                    "promoted": False,
                    "samples": 96,
                    "yield": 0.6,
                    "kept": 41,
                    "diversity": 0.5,
                },
            ],
        },
        decisions=[{"line": "promote: significant gain"}, {"line": "reject: not significant"}],
        cards={
            1: {
                "dropped": {"decontamination": 7, "difficulty": 5},
                "counts": {"prompts_rationalized": 12, "prompts_worked": 9, "prompts_steps": 31},
            }
        },
        losses={1: [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.6}]},
        refine_tables={
            1: [{"strategy": "greedy", "accuracy": 0.5, "tokens_per_problem": 40, "seconds_per_problem": 0.1}]
        },
        stage_seconds={1: {"acquire": 300.0, "train": 120.0}},
        benchmark={
            "base": {
                "two_digit_addition": {"accuracy": 0.19, "low": 0.14, "high": 0.25, "n": 200},
                # a bound off by rounding at 0 % must not break the error bars
                "three_digit_subtraction": {"accuracy": 0.0, "low": 1e-17, "high": 0.02, "n": 200},
            },
            "iter 1": {
                "two_digit_addition": {"accuracy": 0.6, "low": 0.53, "high": 0.66, "n": 200},
                "three_digit_subtraction": {"accuracy": 0.01, "low": 0.0, "high": 0.04, "n": 200},
            },
        },
    )
    path = render(facts, tmp_path / "out")
    text = path.read_text()
    assert "| 1 | 20.0 % | 50.0 % | 0.001 | True |" in text
    assert "| two_digit_addition | 19.0 % (14.0 %-25.0 %, n=200) | 60.0 % (53.0 %-66.0 %, n=200) |" in text
    assert "decontamination 7, difficulty 5" in text
    row = text.split("## Data per iteration")[1].splitlines()[4]  # iteration 1: hinted, worked, sub-questions
    assert "| 12 | 9 | 31 |" in row
    assert "| 40.0 % | 75.0 % | 30 |" in row  # yield, answered (with hints), kept
    assert "| add1 20, add2 76 | decontamination 7" in row  # the prompt mix (focus), then the drops
    assert "| 60.0 % | - | 41 |" in text.split("## Data per iteration")[1].splitlines()[5]
    assert "| 1 | greedy | 50.0 % | 40.0 | 0.100 |" in text
    assert "1. promote: significant gain" in text and "2. reject: not significant" in text
    assert "| 1 | 300 | - | 120 | - | - |" in text
    for png in ("accuracy.png", "benchmark.png", "loss.png"):
        assert f"({png})" in text
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_shows_the_final_minus_base_per_test_set(tmp_path):
    score = {"accuracy": 0.5, "low": 0.4, "high": 0.6, "n": 100}
    facts = RunFacts(
        run_id="r2",
        state="completed",
        stop_reason="",
        lineage={},
        decisions=[],
        benchmark={"base": {"svamp": score}, "iter 3": {"svamp": {**score, "accuracy": 0.55}}},
        paired={"svamp": {"final": "iter 3", "delta": 0.05, "low": -0.01, "high": 0.11, "p_value": 0.12}},
    )
    text = render(facts, tmp_path / "out").read_text()
    assert "| set | base | iter 3 | iter 3 - base |" in text
    assert (
        "| svamp | 50.0 % (40.0 %-60.0 %, n=100) | 55.0 % (40.0 %-60.0 %, n=100) | +5.0 pp (-1.0 to +11.0), p=0.12 |"
        in text
    )


def test_a_run_without_test_sets_says_so(tmp_path):
    facts = RunFacts(
        run_id="r3",
        state="completed",
        stop_reason="",
        lineage={},
        decisions=[],
        benchmark_note="No test sets declared (the run config has no evaluation.test_sets).",
    )
    text = render(facts, tmp_path / "out").read_text()
    assert "## Test sets\n\nNo test sets declared" in text
    assert not (tmp_path / "out" / "benchmark.png").exists()


def test_the_heldout_phrasing_split_has_columns_beside_dev_accuracy(tmp_path):
    history = [
        {
            "iteration": 1,
            "incumbent_accuracy": 0.4,
            "candidate_accuracy": 0.6,
            "heldout_phrasing_incumbent_accuracy": 0.3,
            "heldout_phrasing_candidate_accuracy": 0.35,
            "p_value": 0.01,
            "promoted": True,
        },
        {"iteration": 2, "incumbent_accuracy": 0.6},  # not evaluated (a training was rejected)
    ]
    facts = RunFacts(
        run_id="r1", state="completed", stop_reason="", lineage={"history": history}, decisions=[]
    )
    text = render(facts, tmp_path / "out").read_text()
    assert (
        "| iteration | incumbent | candidate | held-out phrasing: incumbent | held-out phrasing: candidate |"
        in text
    )
    assert "| 1 | 40.0 % | 60.0 % | 30.0 % | 35.0 % | 0.01 | True |" in text
    assert "| 2 | 60.0 % | - | - | - | - | - |" in text
    assert "(accuracy.png)" in text
    # a task without the split (a data file): no such columns
    plain = RunFacts(
        run_id="r2", state="completed", stop_reason="", lineage={"history": history[1:]}, decisions=[]
    )
    assert "held-out phrasing" not in render(plain, tmp_path / "plain").read_text()
