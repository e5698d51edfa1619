"""Evaluation sets a run declares (``evaluation.test_sets``): what the report and ``selfimprove eval``
score finished models on, and what selection decontaminates the training stream against.

A test set is a named GPT-3 arithmetic set (read from the benchmarks folder of the process that
needs it) or any data file described like a data task (:class:`~.tasks.datafile.DataSource`)::

    evaluation:
      test_sets:
        - {label: 2D+, gpt3: two_digit_addition}
        - {label: svamp, data: {path: /data/svamp_test.jsonl, answer: answer, verifier: numeric}}

Test sets are evaluation only: the loop never samples, tunes or trains on them. A run that
declares none needs no evaluation files at all.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selfimprove.runtime.tasks.base import Item
from selfimprove.runtime.tasks.datafile import DataSource, data_items


class TestSet(BaseModel):
    """One evaluation set: ``gpt3`` (a GPT-3 arithmetic set name) or ``data`` (a data file)."""

    __test__ = False  # not a pytest class
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(description="Name in the report and the metrics, e.g. 'svamp'.")
    gpt3: str | None = Field(None, description="A GPT-3 arithmetic set, e.g. two_digit_addition.")
    data: DataSource | None = Field(None, description="A data file, described as for task: data.")

    @model_validator(mode="after")
    def _one_source(self) -> TestSet:
        if (self.gpt3 is None) == (self.data is None):
            raise ValueError(f"test set {self.label!r}: give exactly one of gpt3 or data")
        if self.gpt3 is not None:
            from selfimprove.runtime.benchmarks import GPT3_SETS

            if self.gpt3 not in GPT3_SETS:
                raise ValueError(
                    f"test set {self.label!r}: unknown GPT-3 set {self.gpt3!r} (use one of {', '.join(GPT3_SETS)})"
                )
        return self

    def source(self, benchmarks_dir: Path | None = None) -> DataSource:
        """The data source of this set; a GPT-3 set scored by its fixed rule (last signed integer,
        exact match)."""
        if self.data is not None:
            return self.data
        from selfimprove.runtime.benchmarks import resolve_sets

        path = resolve_sets(str(self.gpt3), benchmarks_dir)[str(self.gpt3)]
        return DataSource(
            path=str(path),
            prompt="context",
            answer="completion",
            verifier="integer",
        )

    def items(self, benchmarks_dir: Path | None = None, limit: int | None = None) -> list[Item]:
        """The set's problems in file order (the first ``limit``)."""
        found = data_items(self.source(benchmarks_dir))
        return found if limit is None else found[:limit]


def gpt3_sets() -> list[TestSet]:
    """The six GPT-3 arithmetic sets, labelled as the GPT-3 paper does."""
    from selfimprove.runtime.benchmarks import GPT3_SETS

    labels = ("2D+", "2D-", "3D+", "3D-", "2Dx", "1DC")
    return [TestSet(label=label, gpt3=name) for label, name in zip(labels, GPT3_SETS, strict=True)]
