"""The parts of the keep rule every metric kind shares: a stage's tolerance, whether it
promises speed, and the latency verdict for kinds timed by p50 latency.

A candidate is kept when its metric kind finds nothing wrong with it
(:mod:`edgepack.pipeline.metric_kinds`: the accuracy drop within the tolerance, the
embedding's agreement with the teacher, the language model's gate) and, for a stage that
promises speed (structured pruning, quantization), it is faster than its input, timed
interleaved on the same runtime.
"""

from __future__ import annotations

from pathlib import Path

from edgepack.core.stage import StageConfig, spec_for


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


def speed_reasons(config: StageConfig, figures: dict, candidate: Path | None) -> list[str]:
    """"Not faster" when the stage promises speed and its p50 latency is not below its
    input's (``figures["input"]["latency_ms"]``, timed interleaved with it)."""
    reference = (figures.get("input") or {}).get("latency_ms")
    if not promises_speed(config) or reference is None:
        return []
    ref_p50, p50 = reference["p50"], figures["latency_ms"]["p50"]
    if p50 < ref_p50:
        return []
    return [f"not faster (p50 {p50:.4f} ms vs {ref_p50:.4f} ms for its input; "
            f"{slow_cause(config, candidate)})"]
