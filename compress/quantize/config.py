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
MIN_OPSET = 13  # per-channel QDQ and most quantized kernels need opset >= 13
RANKING_ROWS = 64  # rows used to rank nodes by activation error (every activation is held)

# Target presets: the settings ONNX Runtime's quantization guide recommends for each target.
# A field set explicitly in the config wins over its preset.
PRESETS: dict[str, dict] = {
    # VNNI (AVX512-VNNI / AVX-VNNI) multiplies int8 without the 16-bit saturation of
    # VPMADDUBSW, so 8-bit weights are safe: S8S8 QDQ, ORT's default and first choice on CPU.
    # Per-channel weights keep accuracy on layers with uneven channel ranges.
    "x86-vnni": {"format": "qdq", "activation_type": "int8", "per_channel": True,
                 "reduce_range": False, "symmetric": False},
    # AVX2 / AVX512 without VNNI: U8S8 runs on VPMADDUBSW, whose 16-bit intermediate sums can
    # saturate; 7-bit weights (reduce_range) avoid it, and ORT's guide says per-channel
    # "generally" needs reduce_range on these machines.
    "x86-avx2": {"format": "qdq", "activation_type": "uint8", "per_channel": True,
                 "reduce_range": True, "symmetric": False},
    # ARM64 with dot-product instructions (SDOT/UDOT) has no saturation issue: S8S8 QDQ with
    # full 8-bit per-channel weights.
    "arm64": {"format": "qdq", "activation_type": "int8", "per_channel": True,
              "reduce_range": False, "symmetric": False},
    # TensorRT (explicit quantization) reads QDQ graphs and needs int8 with zero points of 0:
    # symmetric activations and weights, per-channel weights; ORT on GPU supports only S8S8.
    "gpu-tensorrt": {"format": "qdq", "activation_type": "int8", "per_channel": True,
                     "reduce_range": False, "symmetric": True},
}
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
    """The quantized model failed its own check (NaN/Inf outputs): exit code 1."""

    exit_code = 1


@dataclass
class QuantizeConfig(StageConfig):
    """How to quantize. Static mode needs calibration data; accuracy-aware needs evaluation data.

    ``preset`` (``x86-vnni``, ``x86-avx2``, ``arm64``, ``gpu-tensorrt``) fills ``format``,
    ``activation_type``, ``per_channel``, ``reduce_range`` and ``symmetric`` where they are
    left unset (``None``); see :data:`PRESETS` for why each target gets what it gets.
    """

    kind = "quantize"
    mode: str = option("static", "how to quantize", choices=MODES)
    preset: str = option("", "target settings (explicit flags win)", choices=("",) + tuple(PRESETS))
    calibration: str = option("minmax", "static calibration method", choices=CALIBRATIONS)
    format: str | None = option(None, "graph format (qdq unless a preset says otherwise)",
                                choices=FORMATS)
    activation_type: str | None = option(
        None, "activations: int8 is S8S8, uint8 is U8S8 (the default for qoperator)",
        choices=ACTIVATION_TYPES)
    per_channel: bool | None = option(None, "per-channel weight scales")
    reduce_range: bool | None = option(None, "7-bit weights, for AVX2/AVX512 without VNNI")
    symmetric: bool | None = option(None, "symmetric activations (zero point 0)")
    calibration_samples: int = option(512, "calibration samples to use")
    block_size: int = option(128, "int4: weights per quantization block")
    keep_io_fp32: bool = option(True, "fp16: keep float32 inputs and outputs")
    tolerance: float | None = option(None, "largest accepted accuracy drop (absolute); "
                                           "overrides the recipe's for this stage")
    accuracy_aware: bool = option(False, "keep the worst nodes in float until the drop is "
                                         "within the tolerance")
    max_float_nodes: int = option(8, "accuracy-aware: most nodes kept in float")
    evaluation_samples: int = option(2000, "accuracy-aware: evaluation rows used per step")

    def __post_init__(self):
        check_choice("quantize", "mode", self.mode, MODES)
        check_choice("quantize", "preset", self.preset, ("",) + tuple(PRESETS))
        self._resolve_preset()
        check_choice("quantize", "calibration", self.calibration, CALIBRATIONS)
        check_choice("quantize", "format", self.format, FORMATS)
        check_choice("quantize", "activation_type", self.activation_type, ACTIVATION_TYPES)
        for name in ("calibration_samples", "max_float_nodes", "evaluation_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"quantize.{name} must be >= 1, got {getattr(self, name)}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"quantize.block_size must be a power of two >= 16, got "
                             f"{self.block_size}")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"quantize.tolerance must be >= 0, got {self.tolerance}")
        if self.preset == "gpu-tensorrt" and self.mode not in ("static", "fp16"):
            raise ValueError(f"quantize.preset='gpu-tensorrt' needs mode 'static' or 'fp16'; "
                             f"TensorRT has no {self.mode!r} quantization")

    def _resolve_preset(self) -> None:
        """Fill unset fields from the preset, then from the plain defaults."""
        preset = PRESETS.get(self.preset, {})
        for name in ("format", "per_channel", "reduce_range", "symmetric", "activation_type"):
            if getattr(self, name) is None:
                fallback = PRESET_FALLBACKS.get(name)
                setattr(self, name, preset.get(name, fallback))
        if self.activation_type is None:
            # S8S8 with QOperator is slow on x86-64 (ORT's guide): QOperator gets U8S8.
            self.activation_type = "uint8" if self.format == "qoperator" else "int8"

    def settings(self) -> dict:
        """The resolved quantization settings, for the stage record."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
