"""ONNX files no command should accept as they are, one of each kind (for the bad-input and
fuzz tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BAD_MODEL_KINDS = ("no-inputs", "no-outputs", "duplicate-names", "nan-weights", "huge-shape")


def save_graph(path: Path, nodes, inputs, outputs, initializers) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _weight(values=None, name="W"):
    return numpy_helper.from_array(np.ones((16, 10), np.float32) if values is None else values,
                                   name)


def bad_model(folder: Path, kind: str) -> Path:
    """One ONNX file of each kind of bad model."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    path = folder / f"{kind}.onnx"
    if kind == "no-inputs":
        const = numpy_helper.from_array(np.ones((1, 16), np.float32), "c")
        return save_graph(path, [helper.make_node("MatMul", ["c", "W"], ["y"])], [],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                     [_weight(), const])
    if kind == "no-outputs":
        return save_graph(path, [helper.make_node("MatMul", ["x", "W"], ["y"])], [x], [], [_weight()])
    if kind == "duplicate-names":
        bias = numpy_helper.from_array(np.ones(10, np.float32), "B")
        return save_graph(path, [helper.make_node("MatMul", ["x", "W"], ["xw"], name="same"),
                            helper.make_node("Add", ["xw", "B"], ["y"], name="same")],
                     [x], [y], [_weight(), bias])
    if kind == "nan-weights":
        values = np.ones((16, 10), np.float32)
        values[3, 4] = np.nan
        return save_graph(path, [helper.make_node("MatMul", ["x", "W"], ["y"])], [x], [y],
                     [_weight(values)])
    if kind == "huge-shape":
        big = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1_000_000, 1_000_000, 16])
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1_000_000, 1_000_000, 10])
        return save_graph(path, [helper.make_node("MatMul", ["x", "W"], ["y"])], [big], [out],
                     [_weight()])
    raise ValueError(kind)
