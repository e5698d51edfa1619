"""Render ``RunFacts`` as ``report.md`` plus PNG plots in one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfimprove.report.collect import RunFacts


def _mix(asked: Any) -> str:
    """A prompt mix as text.

    >>> _mix({"add2": 96.0, "sub2": 32.0}), _mix(None)
    ('add2 96, sub2 32', '-')
    """
    return ", ".join(f"{c} {n:.0f}" for c, n in asked.items()) if asked else "-"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f} %"


def _num(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(float(value), spec)


def _pyplot():
    """matplotlib without a display, imported only when a report draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _plot_accuracy(facts: RunFacts, out: Path) -> str | None:
    rows = [r for r in facts.lineage.get("history", []) if r.get("candidate_accuracy") is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    its = [r["iteration"] for r in rows]
    ax.plot(its, [r.get("incumbent_accuracy") for r in rows], "o-", label="incumbent")
    ax.plot(its, [r.get("candidate_accuracy") for r in rows], "s--", label="candidate")
    if any("heldout_phrasing_candidate_accuracy" in r for r in rows):
        for key, style in (("incumbent", "o:"), ("candidate", "s:")):
            values = [r.get(f"heldout_phrasing_{key}_accuracy") for r in rows]
            ax.plot(
                its,
                [float("nan") if v is None else v for v in values],
                style,
                label=f"{key}, held-out phrasing",
            )
    ax.set(xlabel="iteration", ylabel="dev accuracy", ylim=(0, 1), title="Dev accuracy per iteration")
    ax.set_xticks(its)
    ax.legend()
    return _save(plt, fig, out, "accuracy.png")


def _plot_benchmark(facts: RunFacts, out: Path) -> str | None:
    if not facts.benchmark:
        return None
    plt = _pyplot()
    labels = list(facts.benchmark)
    sets = list(next(iter(facts.benchmark.values())))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        xs = [j + i * width for j in range(len(sets))]
        accs = [facts.benchmark[label][s]["accuracy"] for s in sets]
        low = [max(0.0, a - facts.benchmark[label][s]["low"]) for a, s in zip(accs, sets, strict=True)]
        high = [max(0.0, facts.benchmark[label][s]["high"] - a) for a, s in zip(accs, sets, strict=True)]
        ax.bar(xs, accs, width, yerr=[low, high], capsize=3, label=label)
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(sets))])
    ax.set_xticklabels([s.replace("_", "\n") for s in sets], fontsize=7)
    ax.set(ylabel="accuracy (95 % CI)", ylim=(0, 1), title="Test sets (greedy)")
    ax.legend(fontsize=7)
    return _save(plt, fig, out, "benchmark.png")


def _plot_losses(facts: RunFacts, out: Path) -> str | None:
    if not facts.losses:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for iteration, points in sorted(facts.losses.items()):
        ax.plot(
            [p.get("step", i) for i, p in enumerate(points)],
            [p.get("loss") for p in points],
            label=f"iter {iteration}",
        )
    ax.set(xlabel="step", ylabel="training loss", title="Training loss")
    ax.legend()
    return _save(plt, fig, out, "loss.png")


def _paired_cell(p: dict[str, Any] | None) -> str:
    """The final model minus the base on one set.

    >>> _paired_cell({"delta": 0.05, "low": -0.01, "high": 0.11, "p_value": 0.12})
    '+5.0 pp (-1.0 to +11.0), p=0.12'
    """
    if not p:
        return "-"
    pp = [f"{100 * float(p[k]):+.1f}" for k in ("delta", "low", "high")]
    return f"{pp[0]} pp ({pp[1]} to {pp[2]}), p={float(p['p_value']):.3g}"


def _test_set_lines(facts: RunFacts) -> list[str]:
    labels = list(facts.benchmark)
    final = next((p["final"] for p in facts.paired.values() if p.get("final")), None)
    lines = [
        "",
        "## Test sets",
        "",
        "Greedy; each set judged by its verifier (GPT-3 sets: the last signed integer of the reply, exact "
        "match); 95 % Wilson intervals.",
    ]
    if final:
        lines += [
            f"{final} - base: the paired difference on the same items, its 95 % interval and the exact "
            "McNemar p-value."
        ]
    lines += [""]
    extra = [f"{final} - base"] if final else []
    columns = ["set", *labels, *extra]
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for name in next(iter(facts.benchmark.values())):
        cells = [
            f"{_pct(facts.benchmark[m][name]['accuracy'])} ({_pct(facts.benchmark[m][name]['low'])}-"
            f"{_pct(facts.benchmark[m][name]['high'])}, n={facts.benchmark[m][name]['n']})"
            for m in labels
        ]
        cells += [_paired_cell(facts.paired.get(name))] if final else []
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _accuracy_table(history: list[dict[str, Any]]) -> list[str]:
    """Dev accuracy per iteration, with the held-out-phrasing split beside it (the same dev problems in
    wordings never trained on) when the run's task has it.

    >>> rows = [{"iteration": 1, "incumbent_accuracy": 0.2, "candidate_accuracy": 0.5, "p_value": 0.01,
    ...          "promoted": True, "heldout_phrasing_incumbent_accuracy": 0.1,
    ...          "heldout_phrasing_candidate_accuracy": 0.25}]
    >>> print("\\n".join(_accuracy_table(rows)))
    | iteration | incumbent | candidate | held-out phrasing: incumbent | held-out phrasing: candidate | p-value | promoted |
    | --- | --- | --- | --- | --- | --- | --- |
    | 1 | 20.0 % | 50.0 % | 10.0 % | 25.0 % | 0.01 | True |
    >>> _accuracy_table([{"iteration": 1, "incumbent_accuracy": 0.2}])[2]
    '| 1 | 20.0 % | - | - | - |'
    """
    phrasing = any("heldout_phrasing_candidate_accuracy" in r for r in history)
    extra = ["held-out phrasing: incumbent", "held-out phrasing: candidate"] if phrasing else []
    columns = ["iteration", "incumbent", "candidate", *extra, "p-value", "promoted"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for r in history:
        cells = [
            str(r.get("iteration")),
            _pct(r.get("incumbent_accuracy")),
            _pct(r.get("candidate_accuracy")),
        ]
        if phrasing:
            cells += [
                _pct(r.get("heldout_phrasing_incumbent_accuracy")),
                _pct(r.get("heldout_phrasing_candidate_accuracy")),
            ]
        cells += [_num(r.get("p_value")), str(r.get("promoted", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _lineage_lines(lineage: dict[str, Any]) -> list[str]:
    """The served model's lineage: the base model, each promotion and each rollback, in order; a model
    a rollback took back is marked so. None for a run that never promoted.

    >>> lineage = {"models": [{"version": "r/base"}, {"version": "r/iter-002", "rolled_back": True}],
    ...            "promotions": [{"iteration": 1, "version": "r/iter-001", "previous": "r/base", "time": 1.0},
    ...                           {"iteration": 2, "version": "r/iter-002", "previous": "r/iter-001", "time": 2.0}],
    ...            "rollbacks": [{"iteration": 2, "version": "r/iter-001", "previous": "r/iter-002", "time": 2.0,
    ...                           "rolled_back": ["r/iter-002"], "reason": "drift"}]}
    >>> print("\\n".join(_lineage_lines(lineage)))
    <BLANKLINE>
    ## Model lineage
    <BLANKLINE>
    | iteration | event | serves | replaces | why |
    | --- | --- | --- | --- | --- |
    | 0 | start | r/base | - | - |
    | 1 | promote | r/iter-001 | r/base | - |
    | 2 | promote | r/iter-002 (rolled back) | r/iter-001 | - |
    | 2 | rollback | r/iter-001 | r/iter-002 | drift |
    """
    promotions, rollbacks = lineage.get("promotions") or [], lineage.get("rollbacks") or []
    if not promotions:
        return []
    gone = {m.get("version") for m in lineage.get("models", []) if m.get("rolled_back")}

    def name(version: str) -> str:
        return f"{version} (rolled back)" if version in gone else version

    events = [("promote", p) for p in promotions] + [("rollback", r) for r in rollbacks]
    events.sort(key=lambda e: (float(e[1].get("time", 0.0)), e[0] == "rollback"))
    lines = ["", "## Model lineage", "", "| iteration | event | serves | replaces | why |"]
    lines.append("|" + " --- |" * 5)
    first = (lineage.get("models") or [{}])[0].get("version") or promotions[0].get("previous", "-")
    lines.append(f"| 0 | start | {name(first)} | - | - |")
    for kind, e in events:
        why = e.get("reason", "-") if kind == "rollback" else "-"
        lines.append(
            f"| {e.get('iteration')} | {kind} | {name(e.get('version', ''))} | {e.get('previous') or '-'} | {why} |"
        )
    return lines


def render(facts: RunFacts, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Run {facts.run_id}", "", f"State: **{facts.state}**. {facts.stop_reason}", ""]
    lines += [f"Code: `{facts.lineage.get('code_version', '')}`", ""]
    lines += ["## Dev accuracy per iteration", "", *_accuracy_table(facts.lineage.get("history", []))]
    if plot := _plot_accuracy(facts, out):
        lines += ["", f"![dev accuracy]({plot})"]
    lines += _lineage_lines(facts.lineage)
    if facts.benchmark:
        lines += _test_set_lines(facts)
        if plot := _plot_benchmark(facts, out):
            lines += ["", f"![benchmark]({plot})"]
    elif facts.benchmark_note:
        lines += ["", "## Test sets", "", facts.benchmark_note]
    lines += [
        "",
        "## Data per iteration",
        "",
        "| iteration | samples | yield | answered | kept | hinted prompts | worked prompts | sub-questions "
        "| diversity | prompts per category | drops per filter |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in facts.lineage.get("history", []):
        card = facts.cards.get(r.get("iteration"), {})
        counts = card.get("counts") or {}
        drops = card.get("drops") or card.get("dropped") or {}
        drop_text = ", ".join(f"{k} {v}" for k, v in drops.items()) if isinstance(drops, dict) else str(drops)
        lines.append(
            f"| {r.get('iteration')} | {_num(r.get('samples'), '.0f')} | {_pct(r.get('yield'))} | {_pct(r.get('answered'))} "
            f"| {_num(r.get('kept'), '.0f')} | {_num(counts.get('prompts_rationalized'), '.0f')} "
            f"| {_num(counts.get('prompts_worked'), '.0f')} | {_num(counts.get('prompts_steps'), '.0f')} "
            f"| {_num(r.get('diversity'), '.3f')} | {_mix(r.get('asked'))} | {drop_text or '-'} |"
        )
    lines += _paraphrase_lines(facts)
    if plot := _plot_losses(facts, out):
        lines += ["", "## Training", "", f"![loss]({plot})"]
    if facts.refine_tables:
        lines += [
            "",
            "## Refinement (calibration on the dev set)",
            "",
            "| iteration | strategy | accuracy | tokens/problem | s/problem |",
            "| --- | --- | --- | --- | --- |",
        ]
        for iteration, table in sorted(facts.refine_tables.items()):
            for row in table:
                lines.append(
                    f"| {iteration} | {row.get('strategy')} | {_pct(row.get('accuracy'))} "
                    f"| {float(row.get('tokens_per_problem', 0)):.1f} | {float(row.get('seconds_per_problem', 0)):.3f} |"
                )
    lines += ["", "## Decisions", ""] + [f"{i + 1}. {d['line']}" for i, d in enumerate(facts.decisions)]
    if facts.stage_seconds:
        stages = ("acquire", "select", "train", "evaluate", "refine")
        lines += [
            "",
            "## Wall time per stage (s)",
            "",
            "| iteration | " + " | ".join(stages) + " |",
            "| --- |" + " --- |" * len(stages),
        ]
        for iteration, secs in sorted(facts.stage_seconds.items()):
            lines.append(
                f"| {iteration} | "
                + " | ".join(f"{secs[s]:.0f}" if s in secs else "-" for s in stages)
                + " |"
            )
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _paraphrase_lines(facts: RunFacts) -> list[str]:
    """The restated prompts of each iteration (``acquisition.paraphrase``): asked, answered (past the
    cleaning and the evaluation-set guard) and kept by acquisition, then kept by selection; none when
    the run paraphrased nothing."""
    if not facts.paraphrases:
        return []
    lines = [
        "",
        "## Paraphrased prompts",
        "",
        "| iteration | asked | answered | kept (meaning survived) | kept by selection |",
        "| --- | --- | --- | --- | --- |",
    ]
    for iteration, n in sorted(facts.paraphrases.items()):
        card = (facts.cards.get(iteration) or {}).get("counts") or {}
        lines.append(
            f"| {iteration} | {n['asked']} | {n['sampled']} | {n['kept']} "
            f"| {_num(card.get('paraphrases_kept'), '.0f')} |"
        )
    return lines
