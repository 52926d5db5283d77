"""Checks on a quantized model: finite outputs, op counts, and why it may not be faster."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgepack.compress.quantize.quantize_config import (FLOAT_COMPUTE_OPS, INT_COMPUTE_OPS,
                                                        QuantizationCheckError)
from edgepack.compress.quantize.data import _cpu_session
from edgepack.core.onnx_files import check_inputs_and_outputs

QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                 *INT_COMPUTE_OPS)


def _non_finite_output(model_path: Path, feeds) -> str | None:
    """The name of the first float output holding NaN or Inf on ``feeds``, if any."""
    session = _cpu_session(model_path)
    for feed in feeds:
        for out, value in zip(session.get_outputs(), session.run(None, feed)):
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                return out.name
    return None


def check_input_finite(model_path: Path, feeds) -> None:
    """Refuse a float model that already gives NaN/Inf: quantization is not to blame."""
    name = _non_finite_output(model_path, feeds)
    if name is not None:
        raise ValueError(f"the float model {model_path.name} already gives NaN or Inf in "
                         f"output {name!r} on the calibration data; fix the model or the data "
                         "before quantizing")


def check_finite_outputs(model_path: Path, feeds, source: Path) -> None:
    """Run the quantized model on the calibration feeds; refuse NaN or Inf outputs
    (``source``: the user's float model, which the message names)."""
    name = _non_finite_output(model_path, feeds)
    if name is not None:
        raise QuantizationCheckError(f"the quantized model of {source.name} gives NaN or Inf "
                                     f"in output {name!r} on calibration data")


def _float_initializers(model: onnx.ModelProto):
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                              onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16):
            yield init.name, numpy_helper.to_array(init)


def check_quantizable(model_path: Path) -> None:
    """Refuse what no quantizer can work on, naming the file: a graph without inputs or
    outputs, a model already quantized, weights holding NaN or Inf (exit 1: no quantized
    model of it can give finite outputs)."""
    model = onnx.load(str(model_path))
    check_inputs_and_outputs(model, model_path, "quantization")
    counts = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    if counts:
        held = ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
        raise ValueError(f"{model_path} is already quantized (it holds {held}); quantize its "
                         "float original instead")
    for name, values in _float_initializers(model):
        if not np.isfinite(values).all():
            raise QuantizationCheckError(
                f"the float model {model_path.name} holds NaN or Inf in its weight {name!r}; "
                "no quantized model of it can give finite outputs: fix the weights first")


def count_ops(model_path: Path) -> dict[str, int]:
    """How many nodes of each op type the graph holds (QuantizeLinear, MatMulNBits, ...)."""
    counts: dict[str, int] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts



def has_quantized_ops(model_path: Path) -> bool:
    """Whether the graph still quantizes anything (Q/DQ pairs or integer compute ops)."""
    counts = count_ops(model_path)
    return any(counts.get(op) for op in QUANTIZED_OPS)


def optimized_op_counts(model_path: Path) -> tuple[dict[str, int], int]:
    """Op counts of the graph ONNX Runtime actually runs on the CPU (after fusion), and the
    number of Q/DQ nodes at the graph's inputs and outputs (needed by any int8 graph)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    boundary = sum(1 for n in graph.node
                   if (n.op_type == "QuantizeLinear" and n.input[0] in inputs)
                   or (n.op_type == "DequantizeLinear" and n.output[0] in outputs))
    return counts, boundary


def speed_gate_cause(candidate_path) -> str:
    """Why a quantized model is likely not faster than its fp32 input, read from the graph
    ONNX Runtime runs: Q/DQ nodes left unfused, compute ops left in float, fp16 casts."""
    counts, boundary = optimized_op_counts(Path(candidate_path))
    qdq = counts.get("QuantizeLinear", 0) + counts.get("DequantizeLinear", 0)
    inner = qdq - boundary
    left_float = {op: counts[op] for op in FLOAT_COMPUTE_OPS if counts.get(op)}
    int_ops = sum(counts.get(op, 0) for op in INT_COMPUTE_OPS)
    causes = []
    if inner > 0:
        causes.append(f"{inner} QuantizeLinear/DequantizeLinear nodes left unfused inside the "
                      "graph after ONNX Runtime's optimisation (each converts a whole tensor)")
    if left_float:
        listed = ", ".join(f"{n} {op}" for op, n in left_float.items())
        causes.append(f"compute ops left in float ({listed}) next to {int_ops} int8 ones")
    if counts.get("Cast", 0) and not int_ops:
        causes.append(f"{counts['Cast']} Cast nodes converting between float16 and float32 "
                      "(the CPU provider has few float16 kernels)")
    if not causes:
        causes.append(f"all {int_ops} compute ops run in int8; the model is likely too small "
                      "for faster int8 kernels to outweigh ONNX Runtime's fixed per-call "
                      f"overhead and the {boundary} Q/DQ conversions at its inputs/outputs")
    return "likely cause: " + "; ".join(causes)
