"""Quantization settings: modes, target presets and the config dataclass."""

from __future__ import annotations

from dataclasses import dataclass, fields

from core.checks import check_choice
from core.errors import CheckFailed
from core.stage import StageConfig, option

MODES = ("dynamic", "static", "fp16", "int4")
CALIBRATIONS = ("minmax", "entropy", "percentile")
FORMATS = ("qdq", "qoperator")
ACTIVATION_TYPES = ("int8", "uint8")
FUSION_CHOICES = ("auto", "on", "off")
MIN_OPSET = 13  # per-channel QDQ and most quantized kernels need opset >= 13
RANKING_ROWS = 64  # rows used to rank nodes by activation error (every activation is held)

# Target presets: what ONNX Runtime's kernels on each target want (see auto_preset.py for the
# sources and the measurements). A field set explicitly in the config wins over its preset;
# ``auto`` (the default) picks one for the machine and provider at hand.
PRESETS: dict[str, dict] = {
    # x86-64 with VNNI (AVX512-VNNI / AVX-VNNI): VPDPBUSD multiplies u8 x s8 without the
    # 16-bit saturation of VPMADDUBSW: U8S8 with full 8-bit per-channel weights.
    "x86-vnni": {"format": "qdq", "activation_type": "uint8", "per_channel": True,
                 "reduce_range": False, "symmetric": False},
    # x86-64 AVX2 / AVX512 without VNNI: U8S8 on VPMADDUBSW, whose 16-bit intermediate sums
    # can saturate; 7-bit weights (reduce_range) avoid it (ORT's guide says per-channel
    # "generally" needs reduce_range on these machines).
    "x86-avx2": {"format": "qdq", "activation_type": "uint8", "per_channel": True,
                 "reduce_range": True, "symmetric": False},
    # ARM64 with dot-product instructions (SDOT/UDOT): no saturation, S8S8 kernels exist:
    # S8S8 QDQ with full 8-bit per-channel weights.
    "arm64": {"format": "qdq", "activation_type": "int8", "per_channel": True,
              "reduce_range": False, "symmetric": False},
    # ARM64 without dot-product: MLAS's NEON kernels take uint8 activations.
    "arm64-nodot": {"format": "qdq", "activation_type": "uint8", "per_channel": True,
                    "reduce_range": False, "symmetric": False},
    # TensorRT (explicit quantization) reads QDQ graphs and needs int8 with zero points of 0:
    # symmetric activations and weights, per-channel weights; ORT on GPU supports only S8S8.
    "gpu-tensorrt": {"format": "qdq", "activation_type": "int8", "per_channel": True,
                     "reduce_range": False, "symmetric": True},
}
PRESET_CHOICES = ("auto", "none", "") + tuple(PRESETS)  # none and "": ONNX Runtime's defaults
PRESET_FALLBACKS = {"format": "qdq", "per_channel": False, "reduce_range": False,
                    "symmetric": False}

# fp16: ops whose float16 results overflow (> 65504) or lose too much precision on ordinary
# inputs are kept in float32, on top of onnxruntime's own block list.
FP16_FLOAT32_OPS = ("Exp", "Pow", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
                    "ReduceProd", "CumSum", "Softplus", "LayerNormalization")

# Compute ops, as they appear after ONNX Runtime's graph optimisation: float or quantized.
FLOAT_COMPUTE_OPS = ("Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm",
                     "FusedGemm", "Attention", "MultiHeadAttention", "LSTM", "GRU")
INT_COMPUTE_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger",
                   "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention",
                   "DynamicQuantizeLSTM", "MatMulNBits", "NhwcQLinearConv")


class QuantizationCheckError(CheckFailed):
    """The quantized model failed its own check (NaN/Inf outputs, output check, speed
    check): exit code 1, with the figures."""

    exit_code = 1


@dataclass
class QuantizeConfig(StageConfig):
    """How to quantize, and how the result is checked.

    ``preset`` (``auto``, ``x86-vnni``, ``x86-avx2``, ``arm64``, ``arm64-nodot``,
    ``gpu-tensorrt``) fills ``format``, ``activation_type``, ``per_channel``, ``reduce_range``
    and ``symmetric`` where they are left unset (``None``); ``auto`` (the default) picks the
    preset for this machine's CPU flags or for ``provider`` (see
    :mod:`compress.quantize.auto_preset`); ``""`` leaves ONNX Runtime's own defaults.

    Every result is checked against its input: the output check (``min_cosine``,
    ``min_top1_agreement``, ``min_centred_cosine`` on held-out inputs) and, unless
    ``speed_check`` is off, the speed check (interleaved timing on ``provider`` with
    ``speed_threads``; not faster fails unless ``allow_slower``). ``accuracy_aware`` keeps
    the nodes that most improve a failed output check in float, stopping at the first model
    that passes; ``latency_aware`` keeps in float the nodes that ONNX Runtime's profiler
    shows to be slower in int8 than in float on this machine.
    """

    kind = "quantize"
    mode: str = option("static", "how to quantize", choices=MODES)
    preset: str = option("auto", "target settings: auto reads this machine's CPU flags (or "
                                 "--provider); none keeps ONNX Runtime's defaults; explicit "
                                 "flags win", choices=PRESET_CHOICES)
    calibration: str = option("minmax", "static calibration method", choices=CALIBRATIONS)
    format: str | None = option(None, "graph format (qdq unless a preset says otherwise)",
                                choices=FORMATS)
    activation_type: str | None = option(
        None, "activations: int8 is S8S8, uint8 is U8S8 (what x86 kernels are built for)",
        choices=ACTIVATION_TYPES)
    per_channel: bool | None = option(None, "per-channel weight scales")
    reduce_range: bool | None = option(None, "7-bit weights, for AVX2/AVX512 without VNNI")
    symmetric: bool | None = option(None, "symmetric activations (zero point 0)")
    calibration_samples: int = option(512, "calibration samples to use")
    block_size: int = option(128, "int4: weights per quantization block")
    keep_io_fp32: bool = option(True, "fp16: keep float32 inputs and outputs")
    tolerance: float | None = option(None, "largest accepted top-1 accuracy drop (absolute) "
                                           "with labelled data; overrides the recipe's")
    accuracy_aware: bool = option(True, "when the output check fails, keep the nodes that "
                                        "most improve it in float, stopping at the first "
                                        "model that passes")
    max_float_nodes: int = option(8, "accuracy-aware: most nodes kept in float")
    evaluation_samples: int = option(2000, "evaluation rows used by the output check")
    # Output check (every quantization): held-out inputs against the fp32 model.
    min_cosine: float = option(0.99, "output check: smallest mean cosine similarity to the "
                                      "fp32 outputs on held-out inputs, per output")
    min_top1_agreement: float = option(0.9, "output check: smallest top-1 agreement with "
                                            "fp32 on classifier-like outputs")
    min_centred_cosine: float | None = option(None, "output check: also gate the cosine of "
                                                    "batch-centred outputs")
    max_norm_change: float = option(0.2, "output check: largest change of the outputs' size "
                                          "(row norm) against fp32, either way (0.2: 20%)")
    held_out_fraction: float = option(0.25, "share of the calibration rows kept out of "
                                            "calibration for the output check")
    check_rows: int = option(16, "generated rows for the output check without data")
    # Speed check: interleaved timing of the result against its input.
    speed_check: bool = option(True, "time the result against its input (interleaved); "
                                     "not faster exits 1")
    allow_slower: bool = option(False, "keep a model the speed check finds no faster")
    provider: str = option("cpu", "execution provider for the speed check and preset auto")
    speed_threads: int = option(1, "speed check and profiling: intra-op threads")
    speed_min_runs: int = option(20, "speed check: timed runs per model, at least")
    speed_min_time_s: float = option(1.0, "speed check: timed seconds per model, at least")
    # Graph-level choices.
    transformer_fusions: str = option("auto", "ONNX Runtime's BERT fusions before quantizing "
                                              "(auto: transformer graphs)",
                                      choices=FUSION_CHOICES)
    latency_aware: bool = option(True, "keep in float the nodes ONNX Runtime's profiler "
                                       "shows slower in int8 on this machine")

    def __post_init__(self):
        check_choice("quantize", "mode", self.mode, MODES)
        check_choice("quantize", "preset", self.preset, PRESET_CHOICES)
        check_choice("quantize", "transformer_fusions", self.transformer_fusions,
                     FUSION_CHOICES)
        self.auto_choice = self._resolve_preset()
        check_choice("quantize", "calibration", self.calibration, CALIBRATIONS)
        check_choice("quantize", "format", self.format, FORMATS)
        check_choice("quantize", "activation_type", self.activation_type, ACTIVATION_TYPES)
        for name in ("calibration_samples", "max_float_nodes", "evaluation_samples",
                     "check_rows", "speed_min_runs", "speed_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"quantize.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_cosine", "min_top1_agreement", "min_centred_cosine"):
            value = getattr(self, name)
            if value is not None and not -1.0 <= value <= 1.0:
                raise ValueError(f"quantize.{name} must be between -1 and 1, got {value}")
        if self.max_norm_change < 0:
            raise ValueError(f"quantize.max_norm_change must be >= 0, got "
                             f"{self.max_norm_change}")
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ValueError(f"quantize.held_out_fraction must be between 0 and 1 "
                             f"(exclusive), got {self.held_out_fraction}")
        if self.speed_min_time_s < 0:
            raise ValueError(f"quantize.speed_min_time_s must be >= 0, got "
                             f"{self.speed_min_time_s}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"quantize.block_size must be a power of two >= 16, got "
                             f"{self.block_size}")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"quantize.tolerance must be >= 0, got {self.tolerance}")
        if self.preset == "gpu-tensorrt" and self.mode not in ("static", "fp16"):
            raise ValueError(f"quantize.preset='gpu-tensorrt' needs mode 'static' or 'fp16'; "
                             f"TensorRT has no {self.mode!r} quantization")

    def _resolve_preset(self) -> str:
        """Fill unset fields from the preset (``auto``: the one for this machine), then from
        the plain defaults; returns the one-line choice ``auto`` made ("" otherwise)."""
        name, choice = self.preset, ""
        if name == "auto":
            from compress.quantize.auto_preset import choose_preset

            name, why = choose_preset(self.provider)
            if name == "gpu-tensorrt" and self.mode not in ("static", "fp16"):
                name, why = choose_preset("cpu")  # ORT's CUDA EP runs dynamic int8 on CPU ops
            choice = f"{name} ({why})"
        preset = PRESETS.get(name, {})
        for field_name in ("format", "per_channel", "reduce_range", "symmetric",
                           "activation_type"):
            if getattr(self, field_name) is None:
                fallback = PRESET_FALLBACKS.get(field_name)
                setattr(self, field_name, preset.get(field_name, fallback))
        if self.activation_type is None:
            # S8S8 with QOperator is slow on x86-64 (ORT's guide): QOperator gets U8S8.
            self.activation_type = "uint8" if self.format == "qoperator" else "int8"
        return choice

    def settings(self) -> dict:
        """The resolved quantization settings, for the stage record."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["auto_choice"] = self.auto_choice
        return out
