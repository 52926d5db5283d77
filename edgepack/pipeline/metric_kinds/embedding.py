"""The ``embedding`` metric kind: for models whose output is a sentence (or image) embedding.

Each artifact's embeddings of the held-out evaluation inputs are compared with the fp32
teacher's (its torch model, computed once): the **mean cosine** of each row to the teacher's
row, and the **Spearman** rank correlation between the teacher's and the candidate's cosine
similarities of every pair of rows (does it rank "which sentences are alike" the same way).
A stage is kept only if both reach ``min_cosine`` and ``min_spearman`` and, for a stage that
promises speed, its p50 latency is below its input's. There are no labels: no accuracy, no
attacks on classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgepack.bench.embedding_quality import embedding_quality
from edgepack.core.checks import check_finite_fields, check_range
from edgepack.core.stage import option
from edgepack.core.tensors import as_tuple
from edgepack.pipeline.embedding_report import embedding_plot, embedding_table
from edgepack.pipeline.keep_rule import speed_reasons
from edgepack.pipeline.measure import (Artifact, measure_candidate, measure_teacher, use_batches,
                                       with_input)
from edgepack.pipeline.metric_kinds import METRIC_KINDS, MetricKind


@dataclass(frozen=True)
class EmbeddingMetric:
    """``[metric] kind = "embedding"``: the agreement with the teacher a stage must keep."""

    kind: ClassVar[str] = "embedding"
    min_cosine: float = option(0.95, "lowest mean cosine to the teacher's embeddings kept")
    min_spearman: float = option(0.95, "lowest Spearman of pairwise similarities kept")

    def __post_init__(self):
        check_finite_fields(self, "metric")
        for name in ("min_cosine", "min_spearman"):
            check_range("metric", name, getattr(self, name), -1.0, 1.0, high_inclusive=True)


def onnx_outputs(path: Path, inputs, batch: int = 64) -> np.ndarray:
    """The ONNX model's first output for every row of ``inputs`` (arrays, one per input)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    arrays = as_tuple(inputs)
    if len(arrays) != len(names):
        raise ValueError(f"{path.name} takes {len(names)} inputs ({', '.join(names)}); the "
                         f"evaluation data has {len(arrays)}")
    outs = [session.run(None, {n: a[i:i + batch] for n, a in zip(names, arrays)})[0]
            for i in range(0, len(arrays[0]), batch)]
    return np.concatenate(outs)


def teacher_embeddings(teacher, inputs, batch: int = 64) -> np.ndarray:
    """The fp32 teacher's (torch) outputs for every evaluation row: the reference."""
    import torch

    from edgepack.core.tensors import call, num_rows, rows

    teacher.eval()
    with torch.no_grad():
        outs = [call(teacher, rows(inputs, i, i + batch)).float().numpy()
                for i in range(0, num_rows(inputs), batch)]
    return np.concatenate(outs)


def summary(figures: dict) -> str:
    return (f"cosine {figures.get('mean_cosine', float('nan')):.4f}, Spearman "
            f"{figures.get('spearman', float('nan')):.4f}")


def _quality(run):
    """The figures of one ONNX model against the teacher's embeddings."""
    def measure_file(onnx_path: Path) -> dict:
        found = embedding_quality(onnx_outputs(onnx_path, run.eval_arrays["inputs"]),
                                  run.state)
        return {"mean_cosine": found["mean_cosine"], "worst_cosine": found["min_cosine"],
                "spearman": found["spearman"]}
    return measure_file


def prepare(run, teacher) -> tuple[dict, Artifact]:
    use_batches(run)
    run.state = teacher_embeddings(teacher, run.eval_arrays["inputs_torch"])
    return measure_teacher(run, teacher, labels=False, quality=_quality(run), probes=False,
                           summary=summary)


def measure(run, candidate: Artifact, source: Artifact) -> dict:
    figures, input_result = measure_candidate(run, candidate, source, labels=False,
                                              quality=_quality(run), probes=False)
    return with_input(figures, input_result, source)


def embedding_reasons(settings: EmbeddingMetric, figures: dict) -> list[str]:
    """Why a candidate falls short of the embedding thresholds (empty: it does not)."""
    reasons = []
    if figures.get("mean_cosine") is not None and figures["mean_cosine"] < settings.min_cosine:
        reasons.append(f"mean cosine to the teacher {figures['mean_cosine']:.4f} < "
                       f"min_cosine {settings.min_cosine:.4f}")
    if figures.get("spearman") is not None and figures["spearman"] < settings.min_spearman:
        reasons.append(f"Spearman of pairwise similarities {figures['spearman']:.4f} < "
                       f"min_spearman {settings.min_spearman:.4f}")
    return reasons


def judge(run, config, source: Artifact, candidate: Artifact, figures: dict) -> list[str]:
    return embedding_reasons(run.metric, figures) + speed_reasons(config, figures,
                                                                  candidate.onnx_path)


def table(rows: list[dict], markdown: bool = False) -> str:
    return embedding_table(rows, markdown=markdown)


def markdown(report: dict, rows: list[dict]) -> str:
    return ""


def plot(report: dict, rows: list[dict], out_dir: Path) -> None:
    embedding_plot(rows, out_dir / "tradeoff.png", title=f"{report.get('name', '')}: "
                   "agreement with the teacher vs latency (hollow: not kept)")


METRIC_KINDS.register(MetricKind(
    "embedding", EmbeddingMetric, prepare=prepare, measure=measure, judge=judge,
    summary=summary, table=table, markdown=markdown, plot=plot, order=20))

__all__ = ["EmbeddingMetric", "embedding_reasons", "onnx_outputs", "teacher_embeddings"]
