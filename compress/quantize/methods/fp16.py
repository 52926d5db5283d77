"""float16: every op with a float16 kernel converted, the overflow-prone ones kept in
float32, and any weight beyond float16's range kept in float32 with its node (the converter
would clamp it to 65504 without a word, scaling every output)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from edgepack.compress.quantize.methods import METHODS, MethodSpec
from edgepack.core.stage import option

# Ops whose float16 results overflow (> 65504) or lose too much precision on ordinary
# inputs are kept in float32, on top of onnxruntime's own block list.
FP16_FLOAT32_OPS = ("Exp", "Pow", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
                    "ReduceProd", "CumSum", "Softplus", "LayerNormalization")
FLOAT16_MAX = 65504.0


@dataclass
class Float16:
    keep_io_fp32: bool = option(True, "fp16: keep float32 inputs and outputs")


def beyond_float16(model: onnx.ModelProto) -> list[str]:
    """Nodes that read a weight with values beyond float16's range (named here if they had
    no name: the converter's block list names nodes)."""
    from onnx import numpy_helper

    large = {init.name for init in model.graph.initializer
             if init.data_type == onnx.TensorProto.FLOAT
             and np.abs(numpy_helper.to_array(init)).max(initial=0.0) > FLOAT16_MAX}
    readers = [node for node in model.graph.node if large & set(node.input)]
    for index, node in enumerate(readers):
        node.name = node.name or f"{node.op_type}_beyond_float16_{index}"
    return [node.name for node in readers]


def quantize_fp16(prepared, target, settings: Float16, job) -> None:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    source = onnx.load(str(prepared))
    exclude = list(job.exclude) + [n for n in beyond_float16(source) if n not in job.exclude]
    model = convert_float_to_float16(
        source, keep_io_types=settings.keep_io_fp32,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP16_FLOAT32_OPS),
        node_block_list=exclude or None)
    # keep_io_types appends its Cast nodes at the end; the ONNX checker wants sorted nodes.
    sorted_model = OnnxModel(model)
    sorted_model.topological_sort()
    onnx.save(sorted_model.model, str(target))


METHODS.register(MethodSpec(
    "fp16", Float16, quantize_fp16,
    describe=lambda settings: f"fp32 inputs/outputs {settings.keep_io_fp32}",
    produces="float16", order=30))
