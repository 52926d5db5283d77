"""Dynamic int8: weights quantized ahead of time, activations at run time.

No calibration data: each activation's scale is computed as the model runs. It is the usual
choice for transformers on a CPU (ONNX Runtime's MatMulInteger / DynamicQuantizeMatMul and
QAttention kernels), and weights are symmetric int8.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgepack.compress.quantize.methods import METHODS, MethodSpec
from edgepack.compress.quantize.methods._int8 import (FLOAT_DEFAULT, Int8Settings, int8_causes,
                                                      int8_fallbacks, resolve_int8)


@dataclass
class DynamicInt8(Int8Settings):
    """Dynamic int8 has no settings beyond the int8 ones (no graph format, no calibration)."""

    def __post_init__(self):
        super().__post_init__()
        if self.preset == "gpu-tensorrt":
            raise ValueError("quantize.preset='gpu-tensorrt' needs mode 'static' or 'fp16'; "
                             "TensorRT has no 'dynamic' quantization")


def quantize_dynamic(prepared, target, settings: DynamicInt8, job) -> None:
    from onnxruntime import quantization as q

    q.quantize_dynamic(str(prepared), str(target), per_channel=settings.per_channel,
                       reduce_range=settings.reduce_range, weight_type=q.QuantType.QInt8,
                       nodes_to_exclude=job.exclude, nodes_to_quantize=job.include or [],
                       extra_options={"WeightSymmetric": True, **FLOAT_DEFAULT})


def describe(settings: DynamicInt8) -> str:
    preset = [f"preset {settings.preset}"] if settings.preset not in ("", "none") else []
    return ", ".join(preset + [f"per-channel {settings.per_channel}",
                               f"reduce-range {settings.reduce_range}"])


def fallbacks(settings: DynamicInt8, has_calibration: bool) -> list[tuple]:
    """Per-channel, 7-bit weights, accuracy-aware; then static int8 where data was given."""
    out = int8_fallbacks("dynamic", settings)
    if has_calibration:   # the other method, through the registry (no import between methods)
        static = METHODS.get("static").settings
        out.append(("static int8, calibrated on the given data", "static",
                    static(preset=settings.preset, per_channel=True,
                           latency_aware=settings.latency_aware), False))
    return out


def integer_ops() -> set[str]:
    from onnxruntime.quantization import registry

    return set(registry.IntegerOpsRegistry)


METHODS.register(MethodSpec(
    "dynamic", DynamicInt8, quantize_dynamic, describe, produces="int8",
    resolve=lambda settings, provider: resolve_int8(settings, provider, gpu_ready=False),
    repairable=True, quantizable_ops=integer_ops,
    likely_causes=lambda settings, transformer: int8_causes(settings), fallbacks=fallbacks,
    order=10,
    label="dynamic int8"))
