"""int4 blocks with float offsets on the symmetric kernel: exact on a min/max grid, and the
ONNX graph computes what the arrays say."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.quantize.methods._block_offset import (dequantize, offset_blocks,
                                                     quantize_offset_int4)


def _q4_1_weight(k, n, block, seed=0):
    """A weight already on llama.cpp's Q4_1 grid: per block of K, minimum + step * level."""
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 16, size=(n, k // block, block))
    levels[..., 0], levels[..., 1] = 0, 15     # every block spans its whole grid
    step = rng.uniform(0.01, 0.05, size=(n, k // block, 1))
    low = rng.normal(0, 0.1, size=(n, k // block, 1))
    return (low + step * levels).reshape(n, k).T.astype(np.float32)


def test_a_q4_1_grid_is_reproduced_exactly():
    weight = _q4_1_weight(64, 8, 32)
    packed, scales, offsets = offset_blocks(weight, 32)
    assert packed.shape == (8, 2, 16) and scales.shape == (16,) and offsets.shape == (2, 8)
    assert np.abs(dequantize(packed, scales, offsets) - weight).max() < 1e-6


def test_any_weight_is_within_half_a_step():
    weight = np.random.default_rng(1).normal(size=(128, 12)).astype(np.float32)
    packed, scales, offsets = offset_blocks(weight, 32)
    error = np.abs(dequantize(packed, scales, offsets) - weight)
    steps = np.repeat(scales.reshape(12, 4), 32, axis=1).T
    assert (error <= steps / 2 + 1e-6).all()


def _one_matmul(k, n, weight):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
                              "g", [x], [y], [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("accuracy_level", [0, 4])
def test_the_graph_computes_the_dequantized_weight(accuracy_level):
    import onnxruntime as ort

    weight = _q4_1_weight(96, 16, 32, seed=2)
    model = _one_matmul(96, 16, weight)
    result = quantize_offset_int4(model, 32, accuracy_level)
    assert result.quantized == ["proj"] and not result.skipped
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["MatMulNBits", "Reshape", "ReduceSum", "MatMul", "Add"]
    assert "w" not in {i.name for i in model.graph.initializer}
    onnx.checker.check_model(model)
    x = np.random.default_rng(3).normal(size=(1, 3, 96)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    expected = x @ weight
    # level 4 quantizes the activations to int8 blocks: a looser bound, still far below
    # what a wrong offset or block order would give (errors of order |x| * |w| * K).
    tolerance = 1e-4 if accuracy_level == 0 else 0.05 * np.abs(expected).max()
    assert np.abs(got - expected).max() < tolerance


def test_a_matmul_that_is_not_whole_blocks_stays_in_float():
    model = _one_matmul(40, 8, np.ones((40, 8), np.float32))
    result = quantize_offset_int4(model, 32)
    assert result.quantized == [] and "K=40 is not a whole number of 32-blocks" in \
        result.skipped["proj"]
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
