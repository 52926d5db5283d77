"""ONNX Runtime's own ops in the standard domain (onnxruntime-genai's builder writes them)
pass the file check; everything else in such a graph is still checked."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.core.onnx_files import check_onnx_file


def _rms_norm_model(extra_node=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("SimplifiedLayerNormalization", ["x", "scale"], ["y"],
                              name="norm", axis=-1, epsilon=1e-5)]
    if extra_node is not None:
        nodes.append(extra_node)
    graph = helper.make_graph(nodes, "g", [x], [y],
                              [numpy_helper.from_array(np.ones(4, np.float32), "scale")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_simplified_layer_norm_passes_and_runs(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "rms.onnx"
    onnx.save(_rms_norm_model(), str(path))
    check_onnx_file(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    expected = x / np.sqrt((x ** 2).mean() + 1e-5)
    assert np.allclose(session.run(None, {"x": x})[0], expected, atol=1e-5)


def test_the_rest_of_such_a_graph_is_still_checked(tmp_path):
    path = tmp_path / "bad.onnx"
    broken = helper.make_node("NoSuchOp", ["y"], ["z"], name="bad")
    onnx.save(_rms_norm_model(broken), str(path))
    with pytest.raises(ValueError, match="fails the ONNX checker"):
        check_onnx_file(path)
