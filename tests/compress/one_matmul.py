"""A one-MatMul ONNX model (input x [1, 3, K], constant weight [K, N]), for the block
writers' tests."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def one_matmul(k: int, n: int, weight: np.ndarray):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
                              "g", [x], [y], [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
