"""Every file edgepack writes carries an IR version the installed ONNX Runtime reads.

onnx stamps models with its own newest IR version (onnx 1.23: IR 14), and onnxruntime
releases trail it (onnxruntime-gpu 1.31 reads up to IR 13 and refuses the rest outright).
Here the runtime is made to look one IR version older than onnx, and the exporter's and
the quantizer's files must come out at that version.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import edgepack.bench.ir_version as ir_version
from edgepack.bench.ir_version import lower_file_to_runtime, lower_to_runtime, runtime_ir_version

NEWEST = onnx.IR_VERSION


@pytest.fixture
def runtime_one_behind(monkeypatch):
    """This ONNX Runtime reads up to one IR version below what onnx writes."""
    monkeypatch.setattr(ir_version, "runtime_ir_version", lambda: NEWEST - 1)
    return NEWEST - 1


def _identity(opset: int = 17, ir: int = NEWEST) -> onnx.ModelProto:
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


def test_the_probed_version_is_the_newest_this_runtime_loads():
    version = runtime_ir_version()
    model = _identity(opset=13, ir=version)
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    if version < NEWEST:  # the next one up must be what the runtime refused
        model.ir_version = version + 1
        with pytest.raises(Exception, match="IR version"):
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_lowering_stops_at_what_the_opsets_need(runtime_one_behind):
    model = _identity()
    assert lower_to_runtime(model) and model.ir_version == runtime_one_behind
    assert not lower_to_runtime(model)  # already readable: left alone
    needed = helper.find_min_ir_version_for([helper.make_opsetid("", onnx.defs.onnx_opset_version())])
    if needed == NEWEST:  # the newest opset needs the newest IR: lowering would break it
        newest_opset = _identity(opset=onnx.defs.onnx_opset_version())
        assert not lower_to_runtime(newest_opset) and newest_opset.ir_version == NEWEST


def test_a_file_with_external_data_is_lowered_and_its_data_untouched(tmp_path,
                                                                      runtime_one_behind):
    weights = np.arange(1024, dtype=np.float32).reshape(4, 256)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y],
                              [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = NEWEST
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="m.onnx.data",
              size_threshold=0)
    data = (tmp_path / "m.onnx.data").read_bytes()
    assert lower_file_to_runtime(path)
    assert (tmp_path / "m.onnx.data").read_bytes() == data
    loaded = onnx.load(str(path))
    assert loaded.ir_version == runtime_one_behind
    assert np.array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), weights)


def test_exported_and_quantized_files_are_at_the_runtimes_version(tmp_path, runtime_one_behind):
    from edgepack.compress.quantize import quantize
    from edgepack.export.torch_export import ExportConfig, export_onnx
    from tests.compress.test_quantize import cfg

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    exported = tmp_path / "fp32.onnx"
    export_onnx(model, ExportConfig(), torch.randn(1, 8), exported,
                parity_inputs=torch.randn(16, 8))
    onnx_model = onnx.load(str(exported))
    assert onnx_model.ir_version <= runtime_one_behind
    onnx_model.ir_version = runtime_ir_version()  # the newest the real runtime reads
    onnx.save(onnx_model, str(exported))
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    for mode in ("dynamic", "static"):
        out = tmp_path / f"{mode}.onnx"
        quantize(exported, cfg(mode=mode), out, calibration={"input": x})
        assert onnx.load(str(out)).ir_version <= runtime_one_behind, mode
