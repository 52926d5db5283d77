"""What the two int8 methods (dynamic and static) share: target presets, per-channel and
reduce-range weights, and the node-level repairs (accuracy-aware and latency-aware float
nodes, transformer fusions first)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import onnx

from edgepack.core.checks import check_choice
from edgepack.core.stage import option
from edgepack.compress.quantize.presets import PRESET_CHOICES, PRESET_FALLBACKS, resolve_preset

FUSION_CHOICES = ("auto", "on", "off")
# Fused transformer ops (Attention, SkipLayerNormalization...) live in the com.microsoft
# domain, where ONNX shape inference gives no output types; their outputs are float.
FLOAT_DEFAULT = {"DefaultTensorType": onnx.TensorProto.FLOAT}


@dataclass
class Int8Settings:
    """Settings every int8 method has. ``preset`` fills the fields left ``None`` when the
    model is quantized (``auto``: this machine's CPU flags, or the provider)."""

    preset: str = option("auto", "target settings: auto reads this machine's CPU flags (or "
                                 "--provider); none keeps ONNX Runtime's defaults; explicit "
                                 "flags win", choices=PRESET_CHOICES)
    per_channel: bool | None = option(None, "per-channel weight scales")
    reduce_range: bool | None = option(None, "7-bit weights, for AVX2/AVX512 without VNNI")
    accuracy_aware: bool = option(True, "when the output check fails, keep the nodes that "
                                        "most improve it in float, stopping at the first "
                                        "model that passes")
    max_float_nodes: int = option(8, "accuracy-aware: most nodes kept in float")
    latency_aware: bool = option(True, "keep in float the nodes ONNX Runtime's profiler "
                                       "shows slower in int8 on this machine")
    transformer_fusions: str = option("auto", "ONNX Runtime's BERT fusions before quantizing "
                                              "(auto: transformer graphs)",
                                      choices=FUSION_CHOICES)

    def __post_init__(self):
        check_choice("quantize", "preset", self.preset, PRESET_CHOICES)
        check_choice("quantize", "transformer_fusions", self.transformer_fusions,
                     FUSION_CHOICES)
        if self.max_float_nodes < 1:
            raise ValueError(f"quantize.max_float_nodes must be >= 1, got "
                             f"{self.max_float_nodes}")


def resolve_int8(settings: Int8Settings, provider: str, gpu_ready: bool):
    """Fill the unset fields from the preset, then from ONNX Runtime's plain defaults; return
    (resolved settings, the line saying what ``auto`` chose)."""
    preset, _, why = resolve_preset(settings.preset, provider, gpu_ready=gpu_ready)
    filled = {}
    for f in dataclasses.fields(settings):
        if getattr(settings, f.name) is None and (f.name in preset
                                                  or f.name in PRESET_FALLBACKS):
            filled[f.name] = preset.get(f.name, PRESET_FALLBACKS.get(f.name))
    return dataclasses.replace(settings, **filled), why


def int8_fallbacks(method: str, settings: Int8Settings) -> list[tuple]:
    """The next int8 candidates, cheapest first: per-channel weights, then the other weight
    width (7-bit where the preset chose 8, 8-bit where it chose 7: what saturates on AVX2
    need not on VNNI, and a model may lose less either way), then the sensitive nodes kept in
    float (accuracy-aware, slower: fewer int8 nodes)."""
    out, current = [], settings
    if not current.per_channel:
        current = dataclasses.replace(current, per_channel=True)
        out.append(("per-channel weights", method, current, False))
    if not current.reduce_range:
        out.append(("7-bit weights (reduce-range)", method,
                    dataclasses.replace(current, reduce_range=True), False))
    else:   # the preset chose 7-bit weights against saturation: full 8 bits may lose less
        out.append(("full 8-bit weights (no reduce-range)", method,
                    dataclasses.replace(current, reduce_range=False), False))
    if settings.accuracy_aware:
        out.append(("sensitive nodes kept in float (accuracy-aware)", method, current, True))
    return out


def qtype(name: str):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "int8" else QuantType.QUInt8


def int8_causes(settings: Int8Settings) -> list[str]:
    """Causes both int8 methods share (per-tensor weights, 7-bit weights)."""
    causes = []
    if not settings.per_channel:
        causes.append("per-tensor weights: one scale for every output channel; try "
                      "--per-channel")
    if settings.reduce_range:
        causes.append("7-bit weights (reduce-range) halve the weight resolution")
    return causes
