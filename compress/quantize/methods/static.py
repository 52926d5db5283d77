"""Static int8: weights and activations quantized ahead of time, activation ranges
calibrated on the user's data (MinMax, Entropy or Percentile), as QDQ or QOperator graphs.

On a transformer graph only the MatMul/Gemm nodes with constant weights are quantized (the
attention-mask path, softmax and the score MatMuls have ranges no 8-bit scale covers:
:mod:`edgepack.compress.quantize.fusions`), and the result must also beat dynamic int8.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgepack.compress.ort_noise import per_tensor_1d_weights_quietly
from edgepack.compress.quantize.methods import METHODS, MethodSpec
from edgepack.compress.quantize.methods._int8 import (FLOAT_DEFAULT, Int8Settings, int8_causes,
                                                      int8_fallbacks, qtype, resolve_int8)
from edgepack.core.checks import check_choice
from edgepack.core.stage import option

CALIBRATIONS = ("minmax", "entropy", "percentile")
FORMATS = ("qdq", "qoperator")
ACTIVATION_TYPES = ("int8", "uint8")


@dataclass
class StaticInt8(Int8Settings):
    """Calibration method, graph format, activation type and symmetry (``None``: the
    preset's choice)."""

    calibration: str = option("minmax", "static calibration method", choices=CALIBRATIONS)
    format: str | None = option(None, "graph format (qdq unless a preset says otherwise)",
                                choices=FORMATS)
    activation_type: str | None = option(
        None, "activations: int8 is S8S8, uint8 is U8S8 (what x86 kernels are built for)",
        choices=ACTIVATION_TYPES)
    symmetric: bool | None = option(None, "symmetric activations (zero point 0)")

    def __post_init__(self):
        super().__post_init__()
        check_choice("quantize", "calibration", self.calibration, CALIBRATIONS)
        if self.format is not None:
            check_choice("quantize", "format", self.format, FORMATS)
        if self.activation_type is not None:
            check_choice("quantize", "activation_type", self.activation_type, ACTIVATION_TYPES)


def resolve(settings: StaticInt8, provider: str):
    resolved, why = resolve_int8(settings, provider, gpu_ready=True)
    if resolved.activation_type is None:
        # S8S8 with QOperator is slow on x86-64 (ORT's guide): QOperator gets U8S8.
        resolved.activation_type = "uint8" if resolved.format == "qoperator" else "int8"
    return resolved, why


@per_tensor_1d_weights_quietly()  # ORT's per-channel noise on 1-D weights: compress/ort_noise.py
def quantize_static(prepared, target, settings: StaticInt8, job) -> None:
    from onnxruntime import quantization as q

    from edgepack.compress.quantize.data import FeedReader

    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    fmt = q.QuantFormat.QDQ if settings.format == "qdq" else q.QuantFormat.QOperator
    q.quantize_static(str(prepared), str(target), FeedReader(job.feeds), quant_format=fmt,
                      per_channel=settings.per_channel, reduce_range=settings.reduce_range,
                      activation_type=qtype(settings.activation_type),
                      weight_type=q.QuantType.QInt8, nodes_to_exclude=job.exclude,
                      nodes_to_quantize=job.include or [],
                      calibrate_method=methods[settings.calibration],
                      extra_options={"ActivationSymmetric": settings.symmetric,
                                     "WeightSymmetric": True, **FLOAT_DEFAULT})


def describe(settings: StaticInt8) -> str:
    preset = [f"preset {settings.preset}"] if settings.preset not in ("", "none") else []
    return ", ".join(preset + [f"format {settings.format}",
                               f"activations {settings.activation_type}",
                               f"per-channel {settings.per_channel}",
                               f"reduce-range {settings.reduce_range}",
                               f"{settings.calibration} calibration"])


def qdq_ops() -> set[str]:
    from onnxruntime.quantization import registry

    return set(registry.QLinearOpsRegistry) | set(registry.QDQRegistry)


def transformer_scope(model, transformer: bool):
    from edgepack.compress.quantize.fusions import static_transformer_scope

    return static_transformer_scope(model) if transformer else (None, {})


def dynamic_rival(settings: StaticInt8, transformer: bool):
    """On a transformer static int8 must beat dynamic int8 with the same weights."""
    if not transformer:
        return None
    dynamic = METHODS.get("dynamic").settings   # through the registry: methods import no other
    return "dynamic", dynamic(preset="none", per_channel=settings.per_channel,
                              reduce_range=settings.reduce_range)


def fallbacks(settings: StaticInt8, has_calibration: bool) -> list[tuple]:
    """Per-channel, 7-bit weights, percentile calibration (MinMax spends the range on
    outliers), then accuracy-aware: the plain ones first, they keep every node in int8."""
    out = int8_fallbacks("static", settings)
    if settings.calibration != "minmax":
        return out
    percentile = dataclasses.replace(settings, per_channel=True, calibration="percentile")
    plain, repaired = [c for c in out if not c[3]], [c for c in out if c[3]]
    return plain + [("percentile calibration", "static", percentile, False)] + repaired


def likely_causes(settings: StaticInt8, transformer: bool) -> list[str]:
    causes = []
    if transformer:
        causes.append("static int8 activations on a transformer: attention scores, softmax "
                      "and the attention-mask path have ranges too wide for 8 bits; use "
                      "--mode dynamic")
    causes += int8_causes(settings)
    if settings.calibration == "minmax":
        causes.append("MinMax calibration spends the range on outliers; try --calibration "
                      "percentile or more representative --data")
    return causes


METHODS.register(MethodSpec(
    "static", StaticInt8, quantize_static, describe, produces="int8", resolve=resolve,
    needs_calibration=True, repairable=True, quantizable_ops=qdq_ops, scope=transformer_scope,
    rival=dynamic_rival, likely_causes=likely_causes, fallbacks=fallbacks, order=20,
    label="static int8"))
