"""The ``quantize-decoder`` stage: a grid of int4 weight-only and int8 candidates for an ONNX
decoder, the fastest one passing the recipe's language-model thresholds kept
(:func:`edgepack.compress.quantize.decoder_quantize.quantize_decoder`), with the files
onnxruntime-genai needs beside it.

The grid is written as lists in the recipe (algorithms, block sizes, symmetric or not,
accuracy levels, int8 dynamic on or off); every combination is a candidate. A combination
a method does not accept (ONNX Runtime's HQQ has no symmetric mode, for instance) is
listed in the record as not applicable rather than dropped unseen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgepack.core.stage import StageConfig, StageInput, StageResult, StageSpec, option, register_stage

MODEL_FOLDER = "model"


def _check_list(name: str, values, valid=None) -> None:
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"quantize-decoder.{name} must be a list, got {values!r}")
    if valid is None:
        return
    bad = [v for v in values if v not in valid]
    if bad:
        raise ValueError(f"quantize-decoder.{name}: {bad[0]!r} is not valid; expected values "
                         f"from {', '.join(map(str, valid))}")


@dataclass
class QuantizeDecoderConfig(StageConfig):
    """The candidate grid and how it is measured."""

    kind: ClassVar[str] = "quantize-decoder"
    algorithms: list = option(factory=lambda: ["rtn", "hqq"],
                              help="int4 algorithms, by their registered names (one that "
                                   "reads calibration gets the calibration windows)",
                              flag=False)
    block_sizes: list = option(factory=lambda: [32, 64, 128], help="int4 block sizes",
                               flag=False)
    symmetric: list = option(factory=lambda: [True, False], help="int4: symmetric and/or not",
                             flag=False)
    accuracy_levels: list = option(factory=lambda: [4, 0], help="MatMulNBits accuracy levels",
                                   flag=False)
    quantize_embedding: bool = option(True, "int4 also the (tied) embedding / lm_head")
    embedding_bits: list = option(factory=lambda: [0],
                                  help="the embedding / lm_head's widths: 0 (as the layers), "
                                       "4, 8", flag=False)
    int8_dynamic: bool = option(True, "also try dynamic int8 (per-channel)")
    threads: int = option(1, "intra-op threads for judging and timing the candidates")

    def __post_init__(self):
        from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS, check_block_size
        from edgepack.compress.quantize.methods.int4 import ACCURACY_LEVELS, EMBEDDING_BITS

        _check_list("algorithms", self.algorithms, INT4_ALGORITHMS.names())
        _check_list("block_sizes", self.block_sizes)
        for block_size in self.block_sizes:
            check_block_size("each of quantize-decoder.block_sizes", block_size)
        _check_list("symmetric", self.symmetric, (True, False))
        _check_list("accuracy_levels", self.accuracy_levels, ACCURACY_LEVELS)
        _check_list("embedding_bits", self.embedding_bits, EMBEDDING_BITS)
        if not (self.algorithms and self.block_sizes and self.symmetric and
                self.accuracy_levels) and not self.int8_dynamic:
            raise ValueError("quantize-decoder: the grid is empty; give at least one algorithm, "
                             "block size, symmetric value and accuracy level, or int8_dynamic")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"quantize-decoder.threads must be an integer >= 1, got "
                             f"{self.threads!r}")


def candidate_grid(config: QuantizeDecoderConfig) -> tuple[list, list[dict]]:
    """The candidates, cheapest first (the config's order), and the combinations a method
    refused, each with its reason."""
    from edgepack.compress.quantize.decoder_candidates import int4, int8_dynamic

    candidates, not_applicable = [], []
    combinations = itertools.product(config.algorithms, config.block_sizes, config.symmetric,
                                     config.embedding_bits, config.accuracy_levels)
    for algorithm, block, symmetric, head_bits, level in combinations:
        try:
            candidates.append(int4(algorithm, block, symmetric, level, config.quantize_embedding,
                                   embedding_bits=head_bits))
        except ValueError as exc:
            not_applicable.append({"algorithm": algorithm, "block_size": block,
                                   "symmetric": symmetric, "embedding_bits": head_bits,
                                   "accuracy_level": level, "why": str(exc).splitlines()[0]})
    if config.int8_dynamic:
        candidates.append(int8_dynamic())
    return candidates, not_applicable


def gate_from_metric(metric):
    """The recipe's language-model thresholds as the search's gate: any object with
    ``max_perplexity_ratio``, ``min_top1_agreement`` and ``min_greedy_agreement`` (the
    ``[metric]`` settings, an :class:`LMGate` or a subclass of it); the gate's defaults
    without one, or for a metric of another kind."""
    import dataclasses

    from edgepack.bench.lm_quality import LMGate

    if metric is None or getattr(metric, "kind", "language-model") != "language-model":
        return LMGate()
    return LMGate(**{f.name: getattr(metric, f.name) for f in dataclasses.fields(LMGate)})


def _run_stage(config: QuantizeDecoderConfig, given: StageInput) -> StageResult:
    from edgepack.compress.quantize.decoder_quantize import quantize_decoder
    from edgepack.export.genai import write_deploy_files

    source = Path(given.artifact)
    candidates, not_applicable = candidate_grid(config)
    calibrated = any(c.needs_calibration for c in candidates)
    metric = given.metric
    target = given.folder / MODEL_FOLDER / "model.onnx"
    result = quantize_decoder(
        source, target, eval_windows=given.data["evaluation"], prompts=given.data["prompts"],
        calibration_windows=given.data.get("calibration") if calibrated else None,
        candidates=candidates, gate=gate_from_metric(metric), threads=config.threads,
        new_tokens=getattr(metric, "new_tokens", 16), rounds=getattr(metric, "rounds", 3),
        work_dir=given.folder)
    result.record["not_applicable"] = not_applicable
    result.record["deploy_files"] = write_deploy_files(target, source.parent)
    return result


def _failures() -> tuple:
    from edgepack.compress.quantize.quantize_config import QuantizationCheckError

    return (QuantizationCheckError,)


register_stage(StageSpec("quantize-decoder", QuantizeDecoderConfig, consumes="onnx",
                         produces="onnx", run=_run_stage, promises_speed=lambda c: True,
                         failures=_failures(), once=True, for_decoders=True))

__all__ = ["QuantizeDecoderConfig", "candidate_grid", "gate_from_metric"]
