"""The four ways to quantize: dynamic and static int8, fp16, int4 weight-only."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import onnx

from bench.ir_version import lower_file_to_runtime
from compress.ort_noise import per_tensor_1d_weights_quietly
from compress.quantize.config import FP16_FLOAT32_OPS, QuantizeConfig
from compress.quantize.data import _FeedReader


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "int8" else QuantType.QUInt8


# Fused transformer ops (Attention, SkipLayerNormalization...) live in the com.microsoft
# domain, where ONNX shape inference gives no output types; their outputs are float.
_FLOAT_DEFAULT = {"DefaultTensorType": onnx.TensorProto.FLOAT}


@per_tensor_1d_weights_quietly()  # ORT's per-channel noise on 1-D weights: compress/ort_noise.py
def _quantize_static(prepared: Path, target: Path, config: QuantizeConfig, feeds,
                     exclude: list[str], include: list[str] | None) -> None:
    from onnxruntime import quantization as q

    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    fmt = q.QuantFormat.QDQ if config.format == "qdq" else q.QuantFormat.QOperator
    q.quantize_static(str(prepared), str(target), _FeedReader(feeds), quant_format=fmt,
                      per_channel=config.per_channel, reduce_range=config.reduce_range,
                      activation_type=_qtype(config.activation_type),
                      weight_type=q.QuantType.QInt8, nodes_to_exclude=list(exclude),
                      nodes_to_quantize=list(include or []),
                      calibrate_method=methods[config.calibration],
                      extra_options={"ActivationSymmetric": config.symmetric,
                                     "WeightSymmetric": True, **_FLOAT_DEFAULT})


FLOAT16_MAX = 65504.0


def beyond_float16(model: onnx.ModelProto) -> list[str]:
    """Nodes that read a weight with values beyond float16's range. The converter would
    clamp such a weight to 65504 without a word, scaling the outputs; these nodes stay in
    float32 instead."""
    from onnx import numpy_helper

    import numpy as np

    large = {init.name for init in model.graph.initializer
             if init.data_type == onnx.TensorProto.FLOAT
             and np.abs(numpy_helper.to_array(init)).max(initial=0.0) > FLOAT16_MAX}
    readers = [node for node in model.graph.node if large & set(node.input)]
    for index, node in enumerate(readers):
        node.name = node.name or f"{node.op_type}_beyond_float16_{index}"  # the list names nodes
    return [node.name for node in readers]


def _quantize_fp16(prepared: Path, target: Path, config: QuantizeConfig,
                   exclude: list[str]) -> None:
    from onnxruntime.transformers.float16 import (
        DEFAULT_OP_BLOCK_LIST,
        convert_float_to_float16,
    )
    from onnxruntime.transformers.onnx_model import OnnxModel

    source = onnx.load(str(prepared))
    exclude = list(exclude) + [n for n in beyond_float16(source) if n not in exclude]
    model = convert_float_to_float16(
        source, keep_io_types=config.keep_io_fp32,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP16_FLOAT32_OPS),
        node_block_list=exclude or None)
    # keep_io_types appends its Cast nodes at the end; the ONNX checker wants sorted nodes.
    sorted_model = OnnxModel(model)
    sorted_model.topological_sort()
    onnx.save(sorted_model.model, str(target))


def _quantize_int4(prepared: Path, target: Path, config: QuantizeConfig,
                   exclude: list[str]) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(prepared)), bits=4,
                                     block_size=config.block_size,
                                     is_symmetric=bool(config.symmetric),
                                     nodes_to_exclude=list(exclude))
    quantizer.process()
    if not any(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node):
        raise ValueError("quantize.mode='int4' found no MatMul with a constant 2-D weight to "
                         "quantize; int4 weight-only quantization is for transformer MatMuls "
                         "(use mode 'dynamic' or 'static' for this model)")
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def quantize_into(prepared: Path, target: Path, config: QuantizeConfig, feeds,
                  exclude: Iterable[str] = (), include: Iterable[str] | None = None) -> None:
    """Quantize the prepared model into ``target``; ``exclude``: node names kept in float;
    ``include``: when given, the only nodes quantized (int8 modes)."""
    from onnxruntime import quantization as q

    exclude = list(exclude)
    include = list(include) if include is not None else None
    if config.mode == "dynamic":
        q.quantize_dynamic(str(prepared), str(target), per_channel=config.per_channel,
                           reduce_range=config.reduce_range, weight_type=q.QuantType.QInt8,
                           nodes_to_exclude=exclude, nodes_to_quantize=include or [],
                           extra_options={"WeightSymmetric": True, **_FLOAT_DEFAULT})
    elif config.mode == "static":
        _quantize_static(prepared, target, config, feeds, exclude, include)
    elif config.mode == "fp16":
        _quantize_fp16(prepared, target, config, exclude)
    else:
        _quantize_int4(prepared, target, config, exclude)
    lower_file_to_runtime(target)  # the quantizers stamp onnx's newest IR version
