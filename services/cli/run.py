"""``selfimprove run``: start (or resume) a run and follow it live until it ends.

    selfimprove run --local                        # local stack + all services, default demo config
    selfimprove run --config configs/small.yaml --iterations 2 --label-mode label-free --local
    selfimprove run --address evaluator:50052      # a deployed loop
    selfimprove run --local --run-id run-1a2b      # resume that run (same --data-dir)

Ctrl-C stops following (and, with ``--local``, the processes): the run's state is durable, so the
same command with ``--run-id`` resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.control import TLS_CA_ENV, control_target
from selfimprove.report.summary import decision_line, summarize

FINAL = ("completed", "stopped", "failed")


def prepare_config(path: Path, iterations: int | None, label_mode: str | None, run_id: str | None) -> str:
    """The config file with the command-line overrides applied, validated (clear error on a bad field)."""
    import yaml

    from selfimprove.evaluator.config import TaskConfig, dump_config, load_config, tactics_model

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read run config {path}: {exc.strerror}", param_hint="--config"
        ) from None
    except yaml.YAMLError as exc:
        raise typer.BadParameter(
            f"run config {path} is not valid YAML: {exc}", param_hint="--config"
        ) from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} is not a YAML mapping", param_hint="--config")
    if iterations is not None:
        data.setdefault("budget", {})["iterations"] = iterations
    if label_mode is not None:
        data["label_mode"] = label_mode
        task = data.get("task")
        if isinstance(task, dict) and isinstance(task.get("tactics"), dict):
            name = task.get("name", TaskConfig.model_fields["name"].default)
            task["tactics"].update(tactics_model(str(name)).off_for(label_mode))
    if run_id is not None:
        data["run_id"] = run_id
    absolute_paths(data, Path.cwd())
    return dump_config(load_config(yaml.safe_dump(data)))


def absolute_paths(data: dict, base: Path) -> None:
    """Data-file paths of a run config (the data task's ``path``, each test set's ``data.path``) made
    absolute from ``base`` (the directory the command runs in), so services started elsewhere read the
    same files. (``acquisition.seed_set`` is made absolute by the config model itself.)

    >>> cfg = {"task": {"name": "data", "params": {"path": "d/train.jsonl"}},
    ...        "evaluation": {"test_sets": [{"label": "t", "data": {"path": "/abs/test.jsonl"}}]}}
    >>> absolute_paths(cfg, Path("/work"))
    >>> cfg["task"]["params"]["path"], cfg["evaluation"]["test_sets"][0]["data"]["path"]
    ('/work/d/train.jsonl', '/abs/test.jsonl')
    """

    def fix(holder: object, key: str) -> None:
        if isinstance(holder, dict) and isinstance(holder.get(key), str):
            holder[key] = str(base / Path(holder[key]).expanduser())

    task = data.get("task")
    if isinstance(task, dict) and task.get("name") == "data":
        fix(task.get("params"), "path")
    for suite in (task or {}).get("regression_suites") or [] if isinstance(task, dict) else []:
        if isinstance(suite, dict) and suite.get("name") == "data":
            fix(suite.get("params"), "path")
    evaluation = data.get("evaluation")
    for test_set in (evaluation or {}).get("test_sets") or [] if isinstance(evaluation, dict) else []:
        if isinstance(test_set, dict):
            fix(test_set.get("data"), "path")


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT stop a local run as Ctrl-C does: services and stack stopped, each SIGKILLed
    after a grace period. Without it the services only got their own SIGTERM when this process died,
    and a service in the middle of a generation kept running for minutes; and a run started in the
    background by a shell (``... &``), which starts it with SIGINT ignored, did not stop on SIGINT."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, interrupt)


def local_replicas(config_yaml: str, cores: int) -> int:
    """Acquisition processes for a local run: one per shard, at most one per core (the shards of an
    iteration are sampled side by side, each process on its share of the cores).

    >>> local_replicas("acquisition: {shards: 4}", 2), local_replicas("acquisition: {shards: 2}", 1)
    (2, 1)
    """
    from selfimprove.evaluator.config import load_config

    return max(1, min(load_config(config_yaml).acquisition.shards, cores))


def run_cmd(
    config: Annotated[Path, typer.Option(help="Run config YAML.")] = Path("configs/demo.yaml"),
    iterations: Annotated[int | None, typer.Option(min=1, help="Override budget.iterations.")] = None,
    label_mode: Annotated[
        str | None,
        typer.Option(
            help="verified | label-free (overrides the config; label-free also turns off the task tactics that "
            "read reference answers, verified the label check)."
        ),
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Bring up the local stack and services.")] = False,
    run_id: Annotated[str | None, typer.Option(help="Resume this run, or name a new one.")] = None,
    address: Annotated[str | None, typer.Option(help="Evaluator control plane host:port.")] = None,
    data_dir: Annotated[Path, typer.Option(help="Local stack data and logs (--local).")] = Path(".stack"),
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary at the end.")] = False,
    report: Annotated[bool, typer.Option(help="Write the report when the run ends.")] = True,
    report_limit: Annotated[int, typer.Option(help="Items per GPT-3 set in the report (0: all).")] = 200,
    acquisition_replicas: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Acquisition processes (--local), sharing the cores; default: one per shard, at most one per core.",
        ),
    ] = None,
) -> None:
    """Start a run and follow it: iteration, stage, dev accuracy and decisions, then a summary."""
    if label_mode not in (None, "verified", "label-free"):
        raise typer.BadParameter("choose verified or label-free", param_hint="--label-mode")
    from selfimprove.evaluator.config import ConfigError

    try:
        config_yaml = prepare_config(config, iterations, label_mode, run_id)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    loop = None
    if local:
        from selfimprove.core.local_loop import LocalLoop
        from selfimprove.core.stack import LocalStack

        typer.echo(f"starting the local stack and services in {data_dir.resolve()} ...", err=True)
        interrupt_on_signals()
        # The stages run one at a time, so each service may use every core (SELFIMPROVE_THREADS overrides).
        threads = int(os.environ.get("SELFIMPROVE_THREADS") or os.cpu_count() or 1)
        replicas = {"acquisition": acquisition_replicas or local_replicas(config_yaml, threads)}
        loop = LocalLoop(LocalStack(root=data_dir), threads=threads, replicas=replicas)
        try:
            loop.start()
        except Exception as exc:
            loop.stop()
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        address = loop.grpc_address("evaluator")
        if not loop.health("evaluator").get("grpc_tls"):
            # This loop's control plane is plaintext: a CA meant for a deployed loop must not apply.
            os.environ.pop(TLS_CA_ENV, None)
        os.environ.update(loop.stack.env())  # the report reads artifacts from this stack
    target = control_target(address)
    try:
        summary = follow(target, config_yaml, run_id, quiet=json_out)
        if loop is not None:
            # Free the CPU for the report's evaluation; the stack and the control plane stay up.
            loop.stop_services(keep=("evaluator",))
        if report and summary["state"] in FINAL:
            from selfimprove.cli.report import write_report

            summary["report"] = str(write_report(summary["run_id"], target, limit=report_limit or None))
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: the run is durable; resume with --run-id", err=True)
        raise typer.Exit(130) from None
    finally:
        if loop is not None:
            loop.stop()
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"\nrun {summary['run_id']}: {summary['state']} ({summary.get('stop_reason', '')})")
        typer.echo(f"dev accuracy per iteration: {summary['accuracy']}")
        if "report" in summary:
            typer.echo(f"report: {summary['report']}")


def follow(
    target: str, config_yaml: str, run_id: str | None, quiet: bool = False, poll_s: float = 2.0
) -> dict:
    """Start or resume the run, show its progress until it ends, return the summary: a status line
    (iteration, stage, dev accuracy) and a bar per shard of the current stage as the stage reports it
    (prompts sampled, training steps, problems evaluated); all on stderr, nothing when ``quiet``."""
    from selfimprove.cli.control import control_stub
    from selfimprove.cli.progress import bars
    from selfimprove.v2 import control_pb2

    stub, _ = control_stub(target)
    started = stub.StartRun(
        control_pb2.StartRunRequest(config_yaml=config_yaml, run_id=run_id or ""), timeout=60
    )
    seen_decisions = 0
    last = None
    with bars(quiet) as progress:
        progress.console.print(
            f"[bold]{'resumed' if started.resumed else 'started'} run {started.run_id}[/] via {target}"
        )
        line = progress.add_task("", total=None)
        shards = StageBars(progress)
        while True:
            status = stub.GetRunStatus(
                control_pb2.GetRunStatusRequest(run_id=started.run_id), timeout=30
            ).status
            for decision in status.decisions[seen_decisions:]:
                progress.console.print(f"  decision: {decision_line(decision)}")
            seen_decisions = len(status.decisions)
            progress.update(line, description=_progress_line(status))
            shards.show(status)
            last = status
            if status.state in FINAL:
                break
            time.sleep(poll_s)
    return summarize(last)


class StageBars:
    """One bar per shard of the current stage, from ``RunStatus.progress``; a stage's bars go when
    the run moves on."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.tasks: dict[tuple[int, int, int, int], object] = {}

    def show(self, status) -> None:
        current = {}
        for p in status.progress:
            key = (status.iteration, p.stage, p.shard, p.attempt)
            current[key] = p
            total = p.progress.total or None
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(
                    f"  {_stage_name(p.stage)} shard {p.shard}"
                    + (f" (attempt {p.attempt})" if p.attempt > 1 else ""),
                    total=total,
                    unit=p.progress.unit,
                )
            self.progress.update(self.tasks[key], completed=p.progress.done, total=total)
        for key in [k for k in self.tasks if k not in current]:
            self.progress.remove_task(self.tasks.pop(key))


def _stage_name(stage: int) -> str:
    from selfimprove.v2.common_pb2 import Stage

    return Stage.Name(stage).removeprefix("STAGE_").lower() if stage else "-"


def _progress_line(status) -> str:
    acc = ", ".join(f"{a:.3f}" for a in status.accuracy) or "-"
    return f"iteration {status.iteration} · {_stage_name(status.stage)} · dev accuracy {acc}"
