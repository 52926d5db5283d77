"""ONNX Runtime post-training quantization, with the checks users forget.

Methods (one file each in :mod:`edgepack.compress.quantize.methods`): ``dynamic`` (int8 weights,
activations quantized at run time; the usual choice for transformers on CPU), ``static``
(int8 weights and activations calibrated on user data with MinMax, Entropy or Percentile;
QDQ or QOperator format), ``fp16`` (overflow-prone ops kept in float32) and ``int4``
(weight-only, MatMul -> MatMulNBits, for transformers; its rounding algorithms one file each
in :mod:`edgepack.compress.quantize.int4_algorithms`).

Before quantizing, the model goes through ONNX Runtime's quantization pre-processing (shape
inference and graph optimisation), and an opset older than 13 is upgraded (or refused, naming
the op that cannot be upgraded). Calibration and evaluation data are checked against the
model's inputs (name, rank, dtype) before anything runs.

Settings: the int8 methods' ``preset="auto"`` (the default) reads the CPU flags (or the
provider) when the model is quantized and picks the settings ONNX Runtime's kernels want there
(x86: U8S8; see :mod:`.presets`). Transformer graphs get ONNX Runtime's fusions before
quantizing, and static mode on them quantizes only the weight MatMuls (:mod:`.fusions`).
``latency_aware`` keeps in float the nodes the profiler shows to be slower in int8 on this
machine (:mod:`.mixed_precision`).

Every result is then checked against its fp32 input before it is written
(:mod:`.attempt`):

- outputs must be finite, and close on held-out inputs (:mod:`.output_check`: mean cosine,
  batch-centred cosine, size, max/mean absolute error, top-1 agreement; ``min_cosine`` 0.99
  by default). A model that fails is repaired when ``accuracy_aware`` (int8's default): the
  nodes adding the most error are kept in float, one per step, until the check passes
  (:mod:`.search`); otherwise it is refused with :class:`OutputCheckFailed` (exit 1);
- when the first candidate fails its output check, the method's next ones are tried and the
  fastest passing one kept (:mod:`.candidate_search`, on the search every path shares:
  :mod:`.selection`; decoders: :mod:`.decoder_quantize`);
- it must be faster than its input, timed interleaved (:mod:`.speed_check`), or it is
  refused with :class:`SpeedCheckFailed` (exit 1) unless ``allow_slower``; static int8 on a
  transformer must also beat dynamic int8, or it is refused recommending dynamic.

:func:`speed_gate_cause` explains a model that is not faster (Q/DQ pairs left unfused,
compute ops left in float).
"""

from edgepack.compress.quantize.methods import METHODS, quantize_into
from edgepack.compress.quantize.model_checks import count_ops, speed_gate_cause
from edgepack.compress.quantize.output_check import OutputCheckFailed
from edgepack.compress.quantize.prepare import prepare, upgrade_opset
from edgepack.compress.quantize.presets import PRESETS
from edgepack.compress.quantize.quantize_config import (QuantizationCheckError, QuantizeConfig,
                                                        quantize_config)
from edgepack.compress.quantize.quantizer import quantize, resolve_settings
from edgepack.compress.quantize.speed_check import SpeedCheckFailed

__all__ = ["METHODS", "PRESETS", "OutputCheckFailed", "QuantizationCheckError",
           "QuantizeConfig", "SpeedCheckFailed", "count_ops", "prepare", "quantize",
           "quantize_config", "quantize_into", "resolve_settings", "speed_gate_cause",
           "upgrade_opset"]
