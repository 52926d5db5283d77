"""Property: int8 quantize -> dequantize, as ONNX Runtime runs it, errs by at most half a step.

The parameters come from onnxruntime's own quantization utilities (the ones quantize() uses),
and the round trip runs as QuantizeLinear -> DequantizeLinear in an ONNX Runtime session, so
the bound holds for what a quantized model actually computes, not for a reimplementation.
"""

import numpy as np
import onnxruntime as ort
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import quant_utils

values = arrays(np.float32, st.integers(2, 64),
                elements=st.floats(-1e3, 1e3, width=32, allow_nan=False))


def _round_trip(x: np.ndarray, scale: np.float32, zero_point: np.integer) -> np.ndarray:
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x)])],
        [numpy_helper.from_array(np.array(scale, np.float32), "s"),
         numpy_helper.from_array(np.array(zero_point), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@settings(max_examples=60, deadline=None)
@given(x=values, symmetric=st.booleans(), signed=st.booleans())
def test_round_trip_error_is_at_most_half_a_step(x, symmetric, signed):
    qtype = TensorProto.INT8 if signed else TensorProto.UINT8
    zero_point, scale, _ = quant_utils.quantize_data(x, qtype, symmetric)
    zero_point = np.asarray(zero_point).astype(np.int8 if signed else np.uint8)
    scale = np.float32(scale)
    y = _round_trip(x, scale, zero_point)
    # Inside the calibrated range the error is rounding only: half a quantization step.
    assert np.all(np.abs(y - x) <= scale / 2 + 1e-6 * np.abs(x).max() + 1e-12)
