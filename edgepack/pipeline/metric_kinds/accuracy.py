"""The ``accuracy`` metric kind (the default): top-1 accuracy on the labelled evaluation set.

Every artifact is run by ONNX Runtime on the evaluation set (a torch artifact through a
scratch export), timed interleaved with its input; the teacher's row also sets up the
robustness probe (attacks, attribution drift) and, with a ``[privacy]`` table, the membership
attacks, which then run on every row. A stage is kept when its accuracy drop against its
input is within the tolerance (the stage's own ``tolerance``, else the recipe's) and, for a
stage that promises speed (structured pruning, quantization), its p50 latency is below its
input's.

The kind has no settings of its own: the tolerance is the recipe's (``tolerance = 0.01``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgepack.bench.privacy.privacy_report import privacy_plot
from edgepack.bench.report import results_table, tradeoff_plot
from edgepack.bench.robustness.robustness_report import robustness_plot
from edgepack.pipeline.keep_rule import speed_reasons, stage_tolerance
from edgepack.pipeline.measure import (Artifact, measure_candidate, measure_teacher, use_batches,
                                       with_input)
from edgepack.pipeline.metric_kinds import METRIC_KINDS, MetricKind


@dataclass(frozen=True)
class AccuracyMetric:
    """``[metric] kind = "accuracy"``: no keys of its own (the recipe's ``tolerance``)."""

    kind: ClassVar[str] = "accuracy"


def summary(figures: dict) -> str:
    accuracy = figures.get("accuracy")
    return f"accuracy {accuracy:.4f}" if accuracy is not None else "accuracy -"


def prepare(run, teacher) -> tuple[dict, Artifact]:
    use_batches(run)
    return measure_teacher(run, teacher, summary=summary)


def measure(run, candidate: Artifact, source: Artifact) -> dict:
    figures, input_result = measure_candidate(run, candidate, source)
    return with_input(figures, input_result, source)


def accuracy_reasons(run, config, source: Artifact, figures: dict) -> list[str]:
    """An accuracy drop beyond the stage's tolerance (nothing when a side has no accuracy)."""
    tolerance = stage_tolerance(run.tolerance, config)
    before, after = source.metrics.get("accuracy"), figures.get("accuracy")
    if before is not None and after is not None and before - after > tolerance + 1e-12:
        return [f"accuracy drop {before - after:.4f} > tolerance {tolerance:.4f}"]
    return []


def judge(run, config, source: Artifact, candidate: Artifact, figures: dict) -> list[str]:
    return accuracy_reasons(run, config, source, figures) + speed_reasons(
        config, figures, candidate.onnx_path)


def table(rows: list[dict], markdown: bool = False) -> str:
    return results_table(rows, markdown=markdown)


def markdown(report: dict, rows: list[dict]) -> str:
    from edgepack.pipeline.run_report import privacy_section, robustness_section

    return robustness_section(report, rows) + privacy_section(report, rows)


def plot(report: dict, rows: list[dict], out_dir: Path) -> None:
    name = report.get("name", "")
    tradeoff_plot(rows, out_dir / "tradeoff.png",
                  title=f"{name}: accuracy vs latency (x: not kept)")
    robustness_plot(rows, out_dir / "robustness.png",
                    title=f"{name}: clean vs attacked accuracy per stage")
    privacy_plot(rows, out_dir / "privacy.png",
                 title=f"{name}: membership inference per artifact")


METRIC_KINDS.register(MetricKind(
    "accuracy", AccuracyMetric, prepare=prepare, measure=measure, judge=judge,
    summary=summary, table=table, markdown=markdown, plot=plot, labels=True, order=10))

__all__ = ["AccuracyMetric", "accuracy_reasons"]
