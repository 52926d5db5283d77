"""The keep rule: a stage's candidate is kept only if it earns its place.

A candidate is kept when its accuracy drop against its input is within the tolerance (the
stage's own ``tolerance`` field, or the recipe's) and, for a stage that promises speed
(structured pruning, quantization), its p50 latency is below its input's, timed interleaved
on the same runtime. With the embedding metric (:mod:`edgepack.pipeline.quality`) the accuracy
tolerance is replaced by the recipe's minimum cosine and Spearman against the teacher.
"""

from __future__ import annotations

from pathlib import Path

from edgepack.core.stage import StageConfig, spec_for
from edgepack.pipeline.quality import embedding_reasons


def stage_tolerance(default: float, config: StageConfig) -> float:
    """The stage's own tolerance where it sets one, else the recipe's."""
    own = getattr(config, "tolerance", None)
    return default if own is None else float(own)


def promises_speed(config: StageConfig) -> bool:
    return bool(spec_for(config).promises_speed(config))


def slow_cause(config: StageConfig, candidate: Path) -> str:
    """The likely reason a compressed model is not faster (from its stage)."""
    explain = spec_for(config).slow_cause
    return explain(config, candidate) if explain else "likely cause: unknown"


def judge(ctx, config: StageConfig, source, metrics: dict, reference_latency: dict | None,
          candidate: Path) -> tuple[bool, str]:
    """Keep the candidate only if accurate enough and, where promised, faster: (kept, the
    reasons in one line)."""
    reasons = keep_reasons(ctx, config, source, metrics, reference_latency, candidate)
    return not reasons, "; ".join(reasons)


def keep_reasons(ctx, config: StageConfig, source, metrics: dict,
                 reference_latency: dict | None, candidate: Path) -> list[str]:
    """Why the candidate is not kept, one line each (empty: it is kept)."""
    tolerance = stage_tolerance(ctx.tolerance, config)
    reasons = []
    ref_acc, acc = source.metrics.get("accuracy"), metrics.get("accuracy")
    if ref_acc is not None and acc is not None and ref_acc - acc > tolerance + 1e-12:
        reasons.append(f"accuracy drop {ref_acc - acc:.4f} > tolerance {tolerance:.4f}")
    if ctx.metric.embedding:
        reasons += embedding_reasons(ctx.metric, metrics)
    if promises_speed(config) and reference_latency is not None:
        ref_p50, p50 = reference_latency["p50"], metrics["latency_ms"]["p50"]
        if p50 >= ref_p50:
            reasons.append(f"not faster (p50 {p50:.4f} ms vs {ref_p50:.4f} ms for its input; "
                           f"{slow_cause(config, candidate)})")
    return reasons
