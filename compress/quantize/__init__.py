"""ONNX Runtime post-training quantization, with the checks users forget.

Modes: ``dynamic`` (int8 weights, activations quantized at run time; the usual choice for
transformers on CPU), ``static`` (int8 weights and activations calibrated on user data with
MinMax, Entropy or Percentile; QDQ or QOperator format), ``fp16`` (overflow-prone ops kept in
float32) and ``int4`` (weight-only, MatMul -> MatMulNBits, for transformers).

Before quantizing, the model goes through ONNX Runtime's quantization pre-processing (shape
inference and graph optimisation), and an opset older than 13 is upgraded (or refused, naming
the op that cannot be upgraded). Calibration and evaluation data are checked against the
model's inputs (name, rank, dtype) before anything runs.

After quantizing, the quantized model runs on the calibration data and must give finite
outputs: a model that "quantized fine" but returns NaN is refused here, not discovered on a
device. With ``accuracy_aware=True`` and evaluation data, a model whose accuracy drop exceeds
the tolerance is repaired step by step: nodes are ranked by the quantization error they add
(fp32 vs quantized activations, via ``onnxruntime.quantization.qdq_loss_debug``) and the worst
are kept in float until the drop is within tolerance; if no step gets there, the best step is
returned and the record says so.

Whether the quantized model is *faster* is decided by the pipeline, which times it against its
input; :func:`speed_gate_cause` explains a model that is not (Q/DQ pairs left unfused, compute
ops left in float).
"""

from compress.quantize.backends import quantize_into
from compress.quantize.checks import count_ops, speed_gate_cause
from compress.quantize.config import PRESETS, QuantizationCheckError, QuantizeConfig
from compress.quantize.prepare import prepare, upgrade_opset
from compress.quantize.stage import quantize

__all__ = ["PRESETS", "QuantizationCheckError", "QuantizeConfig", "count_ops", "prepare",
           "quantize", "quantize_into", "speed_gate_cause", "upgrade_opset"]
