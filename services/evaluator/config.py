"""The run config: a YAML document validated by pydantic models (unknown fields are refused).

``load_config(text)`` returns a :class:`RunConfig` or raises :class:`ConfigError` naming every bad
field, e.g. ``acquisition.shards: Input should be greater than or equal to 1 (got 0)``. The schema is
documented in ``docs/run-config.md``; defaults live in ``configs/``.

>>> cfg = load_config("base_model: smollm2-135m-instruct\\nbudget: {iterations: 2}")
>>> cfg.budget.iterations, cfg.acquisition.shards
(2, 2)
>>> load_config("acquisition: {shard: 3}")
Traceback (most recent call last):
...
selfimprove.evaluator.config.ConfigError: invalid run config: acquisition.shard: Extra inputs are not permitted
>>> load_config("training: {hparams: {lrr: 0.1}}")
Traceback (most recent call last):
...
selfimprove.evaluator.config.ConfigError: invalid run config: training.hparams.lrr: Extra inputs are not permitted
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selfimprove.contracts.params import Hparams, SelectParams
from selfimprove.runtime.testsets import TestSet

if TYPE_CHECKING:
    from selfimprove.runtime.tasks.tactics import Tactics

STAGE_NAMES = ("acquire", "select", "train", "evaluate", "refine")


class ConfigError(ValueError):
    """A run config that does not validate; the message names each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SuiteConfig(_Strict):
    """A regression suite: an earlier skill that must not get worse."""

    label: str = Field(description="Name shown in evaluation evidence, e.g. 'add1'.")
    name: str = Field("arithmetic", description="Task name or 'package.module:Class'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Task parameters.")
    dev_size: int | None = Field(None, ge=1, description="Dev items; default: the task's dev_size.")


class TaskConfig(_Strict):
    name: str = Field("arithmetic", description="Task name or 'package.module:Class'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Task parameters (JSON object).")
    dev_size: int = Field(100, ge=1, description="Held-out dev items (the task's dev split).")
    regression_suites: list[SuiteConfig] = Field(default_factory=list)
    tactics: dict[str, Any] = Field(
        default_factory=dict,
        description="The task's acquisition tactics (e.g. rationalize, check_labels), validated by the "
        "task's own tactics model when the config loads (docs/tasks.md).",
    )


class BudgetConfig(_Strict):
    iterations: int = Field(3, ge=1, description="Most iterations of the loop.")
    wall_time_s: float = Field(3600.0, gt=0, description="Most seconds from the run's start.")
    whole_iterations: bool = Field(
        False,
        description="Begin an iteration only if one as long as the last still ends within wall_time_s.",
    )
    tokens: int = Field(10_000_000, ge=1, description="Most tokens generated or trained on, all stages.")


class ParaphraseConfig(_Strict):
    """Paraphrased training prompts: the model restates each prompt in its own words, and its answers
    to a restatement that kept its meaning are trained on too (docs/data.md, "Paraphrased prompts")."""

    per_prompt: int = Field(0, ge=0, le=16, description="Restatements asked per training prompt (0: off).")
    from_iteration: int = Field(1, ge=1, description="The first iteration that paraphrases.")
    max_new_tokens: int = Field(64, ge=8, le=512, description="Tokens of one restatement.")

    def at(self, iteration: int) -> int:
        """Restatements per prompt in ``iteration``.

        >>> ParaphraseConfig(per_prompt=2, from_iteration=2).at(1), ParaphraseConfig(per_prompt=2, from_iteration=2).at(3)
        (0, 2)
        """
        return self.per_prompt if iteration >= self.from_iteration else 0


class AcquisitionConfig(_Strict):
    shards: int = Field(2, ge=1, le=256)
    prompts_per_shard: int = Field(32, ge=1)
    samples_per_prompt: int = Field(4, ge=1, description="K samples per prompt.")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1)
    self_judge: bool = False
    self_instruct: bool = Field(
        False,
        description="Prompts written by the model from acquisition.seed_set instead of the task's generator "
        "(label-free runs only: they have no reference answer).",
    )
    seed_set: str | None = Field(
        None,
        description="With self_instruct: the seed set, a JSONL file (docs/tasks.md), read when the config "
        "loads and by the evaluator, which stores it with the run. A relative path is made absolute.",
    )
    focus: bool = Field(
        False,
        description="Share each iteration's prompts over the task's categories by the last acquisition "
        "(the first iteration uses the task's even mix): in a verified run by how often it failed each; in "
        "a label-free run by how often it gave a checked label not every sample agreed on (no truth read).",
    )
    focus_floor: float = Field(
        0.1, ge=0, le=1, description="With focus: the least share of prompts any category gets."
    )
    min_samples: int = Field(1, ge=0, description="Fewer samples over all shards is too little data.")
    min_yield: float = Field(
        0.0,
        ge=0,
        le=1,
        description="A lower mean share of prompts with a verified reply (label-free: with a majority "
        "answer) is too little data.",
    )
    more_prompts_factor: float = Field(2.0, ge=1, description="Prompts grow by this on a data retry.")
    max_data_retries: int = Field(1, ge=0, description="Re-acquisitions for too little data, then stop.")
    paraphrase: ParaphraseConfig = Field(
        default_factory=ParaphraseConfig,
        description="Restated training prompts, kept when their meaning survived (verifier, or in "
        "label-free runs the agreement of majority answers).",
    )

    @field_validator("seed_set")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        """The path as the process that loads the config first reads it (the evaluator may run
        elsewhere, with another working directory)."""
        return os.path.abspath(os.path.expanduser(path)) if path else path


class SelectionConfig(_Strict):
    params: SelectParams = Field(
        default_factory=SelectParams, description="Selection parameters, sent as params_json."
    )
    min_kept: int = Field(1, ge=0, description="Fewer kept examples is too little data.")


class TrainingConfig(_Strict):
    method: Literal["sft", "dpo", "full"] = "sft"
    hparams: Hparams = Field(
        default_factory=Hparams, description="Training hyper-parameters, sent as hparams_json."
    )
    require_loss_drop: bool = Field(True, description="Reject a candidate whose loss did not fall.")
    heldout_tolerance: float = Field(
        0.0, ge=0, le=10, description="Relative rise of the held-out loss still accepted (0: must fall)."
    )
    replay_iterations: int = Field(
        0, ge=0, description="Also train on the selected sets of up to this many earlier iterations."
    )
    continue_pending: bool = Field(
        False,
        description="A candidate rejected only because its gain was not significant is what the next "
        "iteration trains further (the incumbent still serves, samples and is the baseline).",
    )
    pending_tolerance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="With continue_pending: a candidate at most this far below the incumbent on the dev "
        "set (and no regression) is trained further too, as noise, not a loss (0: only a gain).",
    )

    @model_validator(mode="after")
    def _tolerance_needs_pending(self) -> TrainingConfig:
        if self.pending_tolerance > 0 and not self.continue_pending:
            raise ValueError("training.pending_tolerance needs training.continue_pending: true")
        return self


class RollbackConfig(_Strict):
    """Re-checking each promotion against the best earlier incumbent (``selfimprove.evaluator.rollback``)."""

    enabled: bool = Field(
        False,
        description="Serve the last good model again when promotions drift below an earlier one, or when "
        "collapse stops the run.",
    )
    margin: float = Field(
        0.03,
        ge=0,
        le=1,
        description="Largest drop allowed below the best earlier incumbent on the dev split or any "
        "regression suite, each as recorded when that model was promoted.",
    )
    over_promotions: int = Field(
        2, ge=1, description="Consecutive promotions a drop beyond the margin must hold before rollback."
    )


class EvaluationConfig(_Strict):
    dev_size: int | None = Field(None, ge=1, description="Overrides task.dev_size for evaluation.")
    seed: int = Field(1234, ge=0, description="Dev seed: the same dev items every iteration.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the paired test.")
    regression_margin: float = Field(0.05, ge=0, le=1, description="Largest allowed accuracy drop.")
    regression_alpha: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="A drop beyond regression_margin rejects the candidate only when it is also "
        "significant (exact McNemar p below this); unset: every such drop does.",
    )
    max_new_tokens: int = Field(64, ge=1, description="Greedy answer length on dev items.")
    interim_looks: list[int] = Field(
        default_factory=list,
        description="Dev set sizes (ascending, below the dev size) at which the paired test is looked at "
        "before every item is evaluated: a gain already significant at interim_alpha is promoted there "
        "(Haybittle-Peto), anything else goes on to the whole dev set.",
    )
    interim_alpha: float = Field(
        0.001, gt=0, lt=1, description="Significance an interim look needs (below alpha)."
    )
    heldout_phrasing_size: int | None = Field(
        None,
        ge=0,
        description="Dev problems asked in the task's held-out phrasings (the heldout_phrasing split, "
        "docs/tasks.md), scored beside the dev split at every evaluation; default: the dev size; 0: not "
        "scored. A task without the split (a data file) scores none.",
    )
    max_phrasing_gap: float | None = Field(
        None,
        ge=0,
        le=1,
        description="A candidate whose gap (dev accuracy minus held-out-phrasing accuracy) is wider than "
        "the incumbent's by more than this is not promoted; unset: the gap is reported, never judged.",
    )
    test_sets: list[TestSet] = Field(
        default_factory=list,
        description="Evaluation-only sets (GPT-3 arithmetic or data files) the report and selfimprove eval "
        "score finished models on, and selection decontaminates the training data against.",
    )
    final_pick: Literal["incumbent", "best_dev"] = Field(
        "incumbent",
        description="What serves when the run concludes. incumbent: the last significantly better "
        "model. best_dev: the last evaluated candidate instead, when it scored above the incumbent on "
        "the whole dev set with no significant regression, though not significantly (a choice on the "
        "point estimate, made once at the end; every promotion inside the loop still needs alpha).",
    )
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)


class RefinementConfig(_Strict):
    enabled: bool = True
    when: Literal["promotion", "end"] = Field(
        "promotion",
        description="Calibrate after every promotion, or once for the final incumbent when the run ends "
        "(the loop's time goes to the loop; the served model still hot-swaps on every promotion).",
    )
    strategies: list[str] = Field(default_factory=lambda: ["greedy", "self_consistency@5"])
    token_budget: float = Field(512.0, gt=0, description="Generated tokens per problem.")
    dev_size: int | None = Field(None, ge=1, description="Default: task.dev_size.")
    write_targets: bool = Field(False, description="Refine-then-distill: targets for the next select.")
    target_prompts: int = Field(64, ge=0)


class CollapseConfig(_Strict):
    window: int = Field(2, ge=1, description="Iterations compared.")
    diversity_drop: float = Field(0.1, ge=0, description="Fall of selection diversity over the window.")
    agreement_rise: float = Field(0.1, ge=0, description="Rise of self-agreement over the window.")
    accuracy_gain: float = Field(0.01, ge=0, description="Gain that counts as 'with accuracy'.")
    min_diversity: float = Field(0.0, ge=0, description="Diversity below this is collapse by itself.")


class StoppingConfig(_Strict):
    target_accuracy: float | None = Field(None, ge=0, le=1)
    plateau_patience: int = Field(2, ge=2, description="Stop after P iterations without promotion.")
    collapse: CollapseConfig = Field(default_factory=CollapseConfig)


class StageConfig(_Strict):
    timeout_s: float = Field(1800.0, gt=0, description="Re-command after this long without a result.")
    max_attempts: int = Field(3, ge=1)


class TrackingConfig(_Strict):
    """Where the loop's metrics, decisions and training losses also go, off by default: an MLflow
    tracking store or a TensorBoard log folder, one tracking run per selfimprove run
    (``evaluator/tracking.py``)."""

    backend: Literal["none", "mlflow", "tensorboard"] = Field(
        "none", description="none, mlflow (needs mlflow-skinny) or tensorboard (needs tensorboard)."
    )
    uri: str = Field(
        "",
        description="mlflow: the tracking URI, e.g. file:///data/mlruns (a local file store, no server); "
        "tensorboard: the log folder (a path or file:// URI), one subfolder per run id. Local paths are "
        "on the evaluator's machine, and on the report's, which logs its plots there too.",
    )
    experiment: str = Field("selfimprove", min_length=1, description="mlflow: the experiment's name.")

    @model_validator(mode="after")
    def _uri_needed(self) -> TrackingConfig:
        if self.backend != "none" and not self.uri.strip():
            raise ValueError(f"tracking.uri: the {self.backend} backend needs a uri (got none)")
        return self

    @property
    def enabled(self) -> bool:
        return self.backend != "none"


def _stages() -> dict[str, StageConfig]:
    return {name: StageConfig() for name in STAGE_NAMES}


class RunConfig(_Strict):
    run_id: str | None = Field(None, description="Optional; assigned when empty.")
    seed: int = Field(0, ge=0)
    base_model: str = "smollm2-135m-instruct"
    engine_backend: Literal["transformers", "vllm"] = "transformers"
    label_mode: Literal["verified", "label-free"] = "verified"
    task: TaskConfig = Field(default_factory=TaskConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    acquisition: AcquisitionConfig = Field(default_factory=AcquisitionConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    refinement: RefinementConfig = Field(default_factory=RefinementConfig)
    stopping: StoppingConfig = Field(default_factory=StoppingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    stages: dict[Literal["acquire", "select", "train", "evaluate", "refine"], StageConfig] = Field(
        default_factory=_stages
    )

    def stage(self, name: str) -> StageConfig:
        return self.stages.get(name) or StageConfig()  # type: ignore[call-overload]

    @property
    def label_free(self) -> bool:
        """Whether the run trains on pseudo-labels only (``label_mode: label-free``)."""
        return self.label_mode == "label-free"


def load_config(text: str, *, files: bool = True) -> RunConfig:
    """Parse and validate a YAML run config; with ``files`` also read the files it names (the seed
    set), as a new run does. A run's stored config is reloaded without (its files are in the store)."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"run config is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("run config must be a YAML mapping of fields")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top)"
            got = "" if err["type"] == "extra_forbidden" else f" (got {err.get('input')!r})"
            problems.append(f"{where}: {err['msg']}{got}")
        raise ConfigError("invalid run config: " + "; ".join(problems)) from None
    check_dev_sizes(cfg)
    check_answers(cfg)
    check_tactics(cfg)
    check_refine_when(cfg)
    check_interim_looks(cfg)
    check_phrasing_gap(cfg)
    check_self_instruct(cfg, files)
    if files:
        check_tracking(cfg)
    return cfg


def tactics_of(cfg: RunConfig) -> Tactics:
    """The run's ``task.tactics`` validated by the task's tactics model (the generic one for a task
    this process cannot import: a plug-in installed only where the stages run). Raises
    ``ValueError`` (pydantic's) on a bad section."""
    return tactics_model(cfg.task.name).model_validate(cfg.task.tactics)


def tactics_model(task_name: str) -> type[Tactics]:
    """The tactics model of the task ``task_name`` (the generic one for a task this process cannot
    import)."""
    from selfimprove.runtime.tasks import TaskLoadError, task_class
    from selfimprove.runtime.tasks.tactics import Tactics

    try:
        return task_class(task_name).tactics_model
    except TaskLoadError:
        return Tactics


def check_tactics(cfg: RunConfig) -> None:
    """Refuse task tactics the task does not take, and those the run's label mode cannot: one that
    would show the truth to a label-free run, or a label-free one in a verified run.

    >>> check_tactics(RunConfig.model_validate({"label_mode": "label-free", "task": {"tactics": {"rationalize": True}}}))
    Traceback (most recent call last):
    ...
    selfimprove.evaluator.config.ConfigError: invalid run config: task.tactics.rationalize: hints carry the reference answer, so it needs label_mode verified (got label-free)
    >>> check_tactics(RunConfig.model_validate({"task": {"tactics": {"check_labels": True}}}))
    Traceback (most recent call last):
    ...
    selfimprove.evaluator.config.ConfigError: invalid run config: task.tactics.check_labels: it checks label-free pseudo-labels, so it needs label_mode label-free (got verified)
    >>> check_tactics(RunConfig.model_validate({"task": {"tactics": {"hint_only": True}}}))
    Traceback (most recent call last):
    ...
    selfimprove.evaluator.config.ConfigError: invalid run config: task.tactics.hint_only: Extra inputs are not permitted
    """
    try:
        tactics = tactics_of(cfg)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"task.tactics.{where}: {msg}" if where else f"task.tactics.{msg}")
        raise ConfigError("invalid run config: " + "; ".join(problems)) from None
    try:
        tactics.check(cfg.label_mode)
    except ValueError as exc:
        raise ConfigError(f"invalid run config: task.tactics.{exc}") from None


def check_self_instruct(cfg: RunConfig, files: bool = True) -> None:
    """Self-instruct prompts come with no reference answer, so only a label-free run can take them, and
    they are written from a seed set: ``acquisition.seed_set`` goes with ``self_instruct``, and with
    ``files`` it must be a readable, well-formed seed set with at least one example.

    >>> check_self_instruct(RunConfig.model_validate({"acquisition": {"self_instruct": True}}))
    Traceback (most recent call last):
    ...
    selfimprove.evaluator.config.ConfigError: invalid run config: acquisition.self_instruct: the model's own prompts have no reference answer, so it needs label_mode label-free (got verified)
    >>> check_self_instruct(RunConfig.model_validate({"label_mode": "label-free", "acquisition": {"self_instruct": True}}))
    Traceback (most recent call last):
    ...
    selfimprove.evaluator.config.ConfigError: invalid run config: acquisition.self_instruct: needs acquisition.seed_set, the JSONL file of examples the model writes new prompts from
    """
    a = cfg.acquisition
    if a.seed_set and not a.self_instruct:
        raise ConfigError(
            "invalid run config: acquisition.seed_set: it is read only with acquisition.self_instruct: true"
        )
    if not a.self_instruct:
        return
    if not cfg.label_free:
        raise ConfigError(
            "invalid run config: acquisition.self_instruct: the model's own prompts have no reference "
            f"answer, so it needs label_mode label-free (got {cfg.label_mode})"
        )
    if not a.seed_set:
        raise ConfigError(
            "invalid run config: acquisition.self_instruct: needs acquisition.seed_set, the JSONL file of "
            "examples the model writes new prompts from"
        )
    if files:
        try:
            read_seed_set(a.seed_set)
        except ValueError as exc:
            raise ConfigError(f"invalid run config: acquisition.seed_set: {exc}") from None


TRACKING_PACKAGES = {"mlflow": ("mlflow", "mlflow-skinny"), "tensorboard": ("tensorboard", "tensorboard")}


def check_tracking(cfg: RunConfig) -> None:
    """A new run that tracks needs its backend's package in this process (imported only when used).

    >>> import importlib.util
    >>> cfg = RunConfig.model_validate({"tracking": {"backend": "mlflow", "uri": "file:///tmp/mlruns"}})
    >>> check_tracking(cfg) if importlib.util.find_spec("mlflow") else None
    """
    import importlib.util

    if not cfg.tracking.enabled:
        return
    module, package = TRACKING_PACKAGES[cfg.tracking.backend]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"invalid run config: tracking.backend: {cfg.tracking.backend} needs the {package} package, "
            f"not installed here: pip install 'selfimprove[tracking]' (or {package})"
        )


def read_seed_set(path: str) -> bytes:
    """The bytes of a seed-set file, checked: readable, every line an example, at least one. Raises
    ``ValueError`` naming the file (and the line of a bad example)."""
    from pathlib import Path

    from selfimprove.runtime.tasks.seedset import parse_seed_lines

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc}") from None
    if not parse_seed_lines(text, path):
        raise ValueError(f"{path} has no seed example (one JSON object per line, docs/tasks.md)")
    return data


def check_refine_when(cfg: RunConfig) -> None:
    """Refine-then-distill feeds the next iteration's selection, so it needs a refine every iteration.

    >>> check_refine_when(RunConfig.model_validate({"refinement": {"when": "end", "write_targets": True}}))
    Traceback (most recent call last):
    ...
    selfimprove.evaluator.config.ConfigError: invalid run config: refinement.write_targets: its targets feed the next iteration's selection, so it needs refinement.when: promotion, not end
    """
    r = cfg.refinement
    if r.enabled and r.write_targets and r.when == "end":
        raise ConfigError(
            "invalid run config: refinement.write_targets: its targets feed the next iteration's selection, "
            "so it needs refinement.when: promotion, not end"
        )


def check_interim_looks(cfg: RunConfig) -> None:
    """Interim looks come before the whole dev set, in order, at a stricter level than the final test.

    >>> check_interim_looks(RunConfig.model_validate({"task": {"dev_size": 400}, "evaluation": {"interim_looks": [100, 400]}}))
    Traceback (most recent call last):
    ...
    selfimprove.evaluator.config.ConfigError: invalid run config: evaluation.interim_looks: [100, 400] must be ascending sizes from 1 to below the dev size 400
    """
    e = cfg.evaluation
    n = e.dev_size or cfg.task.dev_size
    looks = e.interim_looks
    if looks and (looks != sorted(set(looks)) or looks[0] < 1 or looks[-1] >= n):
        raise ConfigError(
            f"invalid run config: evaluation.interim_looks: {looks} must be ascending sizes from 1 to "
            f"below the dev size {n}"
        )
    if looks and e.interim_alpha >= e.alpha:
        raise ConfigError(
            f"invalid run config: evaluation.interim_alpha: {e.interim_alpha} must be below alpha {e.alpha}"
        )


def phrasing_size(cfg: RunConfig) -> int:
    """Held-out-phrasing problems per evaluation (0: none): ``evaluation.heldout_phrasing_size``, by
    default the evaluation's dev size.

    >>> phrasing_size(RunConfig()), phrasing_size(RunConfig.model_validate({"evaluation": {"heldout_phrasing_size": 0}}))
    (100, 0)
    """
    e = cfg.evaluation
    return (e.dev_size or cfg.task.dev_size) if e.heldout_phrasing_size is None else e.heldout_phrasing_size


def check_phrasing_gap(cfg: RunConfig) -> None:
    """A gap gate needs the held-out-phrasing split scored, on a task that has it.

    >>> check_phrasing_gap(RunConfig.model_validate({"evaluation": {"max_phrasing_gap": 0.05, "heldout_phrasing_size": 0}}))
    Traceback (most recent call last):
    ...
    selfimprove.evaluator.config.ConfigError: invalid run config: evaluation.max_phrasing_gap: 0.05 needs the held-out-phrasing split scored (evaluation.heldout_phrasing_size is 0)
    """
    from selfimprove.runtime.tasks import HELDOUT_PHRASING, TaskLoadError, load_task

    gap = cfg.evaluation.max_phrasing_gap
    if gap is None:
        return
    if phrasing_size(cfg) == 0:
        raise ConfigError(
            f"invalid run config: evaluation.max_phrasing_gap: {gap} needs the held-out-phrasing split "
            "scored (evaluation.heldout_phrasing_size is 0)"
        )
    try:
        task = load_task(cfg.task.name, cfg.task.params)
    except (TaskLoadError, ImportError, ValueError, TypeError):
        return  # reported by check_dev_sizes, or a plug-in this process cannot import
    if HELDOUT_PHRASING not in task.splits:
        raise ConfigError(
            f"invalid run config: evaluation.max_phrasing_gap: task {cfg.task.name!r} has no "
            f"{HELDOUT_PHRASING} split (it has {', '.join(task.splits)}), so there is no gap to judge"
        )


def check_dev_sizes(cfg: RunConfig) -> None:
    """Refuse dev sizes the task's dev split cannot fill, before a run spends hours reaching them.

    Tasks this process cannot import (a plug-in installed only where the stages run) are left to the
    stages. The built-in arithmetic task has about 10 distinct dev problems per 1-digit category:

    >>> check_dev_sizes(RunConfig.model_validate({"task": {"params": {"categories": ["add1"]}, "dev_size": 30}}))
    Traceback (most recent call last):
    ...
    selfimprove.evaluator.config.ConfigError: invalid run config: task.dev_size: categories ['add1'] have too few distinct dev problems for n=30 (they have 12)
    """
    from selfimprove.runtime.tasks import HELDOUT_PHRASING, TaskLoadError, load_task

    main = cfg.evaluation.dev_size or cfg.task.dev_size
    wanted = [("task.dev_size", cfg.task.name, cfg.task.params, main)]
    if cfg.refinement.enabled:
        wanted.append(
            (
                "refinement.dev_size",
                cfg.task.name,
                cfg.task.params,
                cfg.refinement.dev_size or cfg.task.dev_size,
            )
        )
    for i, suite in enumerate(cfg.task.regression_suites):
        n = suite.dev_size or cfg.task.dev_size
        wanted.append((f"task.regression_suites.{i}.dev_size", suite.name, suite.params, n))
    wanted.append(("evaluation.heldout_phrasing_size", cfg.task.name, cfg.task.params, phrasing_size(cfg)))
    for where, name, params, n in wanted:
        try:
            task = load_task(name, params)
        except (
            TaskLoadError,
            ImportError,
        ):  # a plug-in, or datasets, not installed here: the evaluator checks
            continue
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid run config: {where.rsplit('.', 1)[0]}: {exc}") from None
        split = HELDOUT_PHRASING if where == "evaluation.heldout_phrasing_size" else "dev"
        if n == 0 or split not in task.splits:
            continue  # not scored
        try:
            task.items(split, n)
        except ValueError as exc:
            raise ConfigError(f"invalid run config: {where}: {exc}") from None


def check_answers(cfg: RunConfig) -> None:
    """Refuse a verified run on a task without reference answers (a data file that names no answer
    field): there is nothing to verify against, so only label-free runs can use it.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "q.jsonl"
    >>> _ = path.write_text("".join(f'{{"question": "What is {i} + 1?"}}\\n' for i in range(40)))
    >>> check_answers(RunConfig.model_validate({"task": {"name": "data", "params": {"path": str(path)}}}))
    Traceback (most recent call last):
    ...
    selfimprove.evaluator.config.ConfigError: invalid run config: task.params.answer: the task has no reference answers, so it runs with label_mode label-free only (got verified)
    """
    from selfimprove.runtime.tasks import TaskLoadError, load_task

    if cfg.label_mode != "verified" or cfg.acquisition.self_instruct:
        return
    try:
        task = load_task(cfg.task.name, cfg.task.params)
    except (TaskLoadError, ImportError, ValueError, TypeError):
        return  # reported by check_dev_sizes, or a plug-in this process cannot import
    if getattr(task, "has_answers", True) is False:
        raise ConfigError(
            "invalid run config: task.params.answer: the task has no reference answers, so it runs with "
            "label_mode label-free only (got verified)"
        )


def train_problems(cfg: RunConfig, n: int) -> int | None:
    """How many distinct train problems the run's task has when that is fewer than ``n``, else
    ``None`` (also for a self-instruct run, whose prompts the model writes, and for a task this process
    cannot import). A data retry asks no more than this. The 1-digit additions have 88:

    >>> train_problems(RunConfig.model_validate({"task": {"params": {"categories": ["add1"]}}}), 200)
    88
    >>> train_problems(RunConfig.model_validate({"task": {"params": {"categories": ["add1", "add2"]}}}), 200)
    """
    from selfimprove.runtime.tasks import TaskLoadError, TooFewProblems, load_task

    if cfg.acquisition.self_instruct:
        return None
    try:
        load_task(cfg.task.name, cfg.task.params).items("train", n)
    except (TaskLoadError, ImportError):
        return None
    except TooFewProblems as exc:
        return len(exc.found)
    return None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
