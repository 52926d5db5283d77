"""What "quality" means in a pipeline: class accuracy, sentence-embedding agreement, or a
language model's perplexity and agreement with its fp32 self.

A recipe chooses its metric in a ``[metric]`` table:

- ``kind = "accuracy"`` (the default): top-1 accuracy on the labelled evaluation set; a stage
  is kept when its drop against its input is within the tolerance (:mod:`edgepack.pipeline.keep_rule`).
- ``kind = "embedding"``: for models whose output is a sentence (or image) embedding. Each
  artifact's embeddings of the held-out evaluation inputs are compared with the fp32
  teacher's (its torch model, computed once): the **mean cosine** of each row to the
  teacher's row, and the **Spearman** rank correlation between the teacher's and the
  candidate's cosine similarities of every pair of rows (does it rank "which sentences are
  alike" the same way). A stage is kept only if both reach ``min_cosine`` and
  ``min_spearman``.
- ``kind = "language-model"``: for decoder LLMs (:mod:`edgepack.pipeline.decoder_run`). Each
  artifact's **perplexity** on held-out text (never trained or calibrated on) is divided by
  the fp32 teacher's; its **teacher-forced top-1 agreement** (the same next token as the
  teacher at each position of that text) and its **greedy agreement** (the share of the
  teacher's greedy continuation of fixed prompts it reproduces before the first different
  token) are measured too. A stage is kept only if the ratio stays within
  ``max_perplexity_ratio`` and both agreements reach their minimum. Generation speed is
  measured on a ``prompt_tokens`` prefill and ``new_tokens`` decode steps, ``rounds`` times,
  interleaved with the stage's input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.core.checks import check_choice, check_finite_fields, check_range
from edgepack.core.tensors import as_tuple

METRIC_KINDS = ("accuracy", "embedding", "language-model")
LANGUAGE_MODEL_FIELDS = ("max_perplexity_ratio", "min_top1_agreement", "min_greedy_agreement",
                         "prompt_tokens", "new_tokens", "rounds")
EMBEDDING_KEYS = ("mean_cosine", "spearman")


@dataclass
class MetricSpec:
    """The recipe's ``[metric]`` table."""

    kind: str = "accuracy"
    min_cosine: float = 0.95      # embedding: lowest mean cosine to the teacher kept
    min_spearman: float = 0.95    # embedding: lowest Spearman of pairwise similarities kept
    max_perplexity_ratio: float = 1.04   # language-model: highest perplexity / teacher's kept
    min_top1_agreement: float = 0.85     # language-model: teacher-forced next-token agreement
    min_greedy_agreement: float = 0.0    # language-model: share of greedy tokens reproduced
    prompt_tokens: int = 128             # language-model: the timed prefill's length
    new_tokens: int = 32                 # language-model: decode steps timed per round
    rounds: int = 3                      # language-model: interleaved timing rounds

    def __post_init__(self):
        check_finite_fields(self, "metric")
        check_choice("metric", "kind", self.kind, METRIC_KINDS)
        if self.max_perplexity_ratio < 1.0:
            raise ValueError(f"[metric] max_perplexity_ratio must be >= 1.0 (1.04: 4% above the "
                             f"teacher's perplexity), got {self.max_perplexity_ratio}")
        for name in ("min_top1_agreement", "min_greedy_agreement"):
            check_range("metric", name, getattr(self, name), 0.0, 1.0, high_inclusive=True)
        for name, low, high in (("prompt_tokens", 1, 8192), ("new_tokens", 1, 4096),
                                ("rounds", 1, 100)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"[metric] {name} must be an integer in [{low}, {high}], got "
                                 f"{value!r}")
        check_range("metric", "min_cosine", self.min_cosine, -1.0, 1.0, high_inclusive=True)
        check_range("metric", "min_spearman", self.min_spearman, -1.0, 1.0,
                    high_inclusive=True)

    @property
    def embedding(self) -> bool:
        return self.kind == "embedding"

    @property
    def language_model(self) -> bool:
        return self.kind == "language-model"

    def to_dict(self) -> dict:
        if self.language_model:
            return {"kind": self.kind, **{k: getattr(self, k) for k in LANGUAGE_MODEL_FIELDS}}
        if not self.embedding:
            return {"kind": self.kind}
        return {"kind": self.kind, "min_cosine": self.min_cosine,
                "min_spearman": self.min_spearman}


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


def embedding_reasons(spec: MetricSpec, metrics: dict) -> list[str]:
    """Why a candidate falls short of the recipe's embedding thresholds (empty: it does not)."""
    reasons = []
    if metrics.get("mean_cosine") is not None and metrics["mean_cosine"] < spec.min_cosine:
        reasons.append(f"mean cosine to the teacher {metrics['mean_cosine']:.4f} < "
                       f"min_cosine {spec.min_cosine:.4f}")
    if metrics.get("spearman") is not None and metrics["spearman"] < spec.min_spearman:
        reasons.append(f"Spearman of pairwise similarities {metrics['spearman']:.4f} < "
                       f"min_spearman {spec.min_spearman:.4f}")
    return reasons


def quality_summary(metrics: dict) -> str:
    """One log fragment: accuracy, or cosine and Spearman."""
    if metrics.get("mean_cosine") is not None:
        return (f"cosine {metrics['mean_cosine']:.4f}, Spearman "
                f"{metrics.get('spearman', float('nan')):.4f}")
    accuracy = metrics.get("accuracy")
    return f"accuracy {accuracy:.4f}" if accuracy is not None else "accuracy -"


def teacher_embeddings(teacher, inputs, batch: int = 64) -> np.ndarray:
    """The fp32 teacher's (torch) outputs for every evaluation row: the reference."""
    import torch

    from edgepack.core.tensors import call, num_rows, rows

    teacher.eval()
    with torch.no_grad():
        outs = [call(teacher, rows(inputs, i, i + batch)).float().numpy()
                for i in range(0, num_rows(inputs), batch)]
    return np.concatenate(outs)
