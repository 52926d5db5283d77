"""Tiny ONNX models built with onnx.helper, so bench tests need no torch export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _save(graph, path: Path, opset: int = 17, ir_version: int | None = None, **save_kwargs):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.checker.check_model(model)
    onnx.save(model, str(path), **save_kwargs)
    return path


def matmul_add(path: Path, features: int = 16, classes: int = 10, batch="N", seed: int = 0,
               opset: int = 17, **save_kwargs) -> Path:
    """y = x @ W + b, with x of shape [batch, features]."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((features, classes)).astype(np.float32),
                                     "W")
    bias = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["y"])],
        "matmul_add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])], [weight, bias])
    return _save(graph, path, opset=opset, **save_kwargs)


def token_model(path: Path, vocab: int = 50, hidden: int = 8) -> Path:
    """Two int64 inputs with symbolic dims: embeddings of input_ids, masked by attention_mask."""
    table = numpy_helper.from_array(
        np.random.default_rng(1).standard_normal((vocab, hidden)).astype(np.float32), "E")
    axis = numpy_helper.from_array(np.array([2], np.int64), "axis")
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["emb"]),
             helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask_f", "axis"], ["mask_u"]),
             helper.make_node("Mul", ["emb", "mask_u"], ["hidden_states"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask")]
    graph = helper.make_graph(nodes, "tokens", inputs, [helper.make_tensor_value_info(
        "hidden_states", TensorProto.FLOAT, ["batch", "sequence", hidden])], [table, axis])
    return _save(graph, path)


def opset9_model(path: Path) -> Path:
    """An old-style model: opset 9, IR version 3, initializers also listed as graph inputs."""
    weight = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Relu", ["xw"], ["y"])],
        "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [weight])
    return _save(graph, path, opset=9, ir_version=3)


def external_data_model(folder: Path) -> Path:
    """matmul_add with its weights in ``weights.bin`` beside the model."""
    return matmul_add(folder / "ext.onnx", features=64, classes=32, save_as_external_data=True,
                      all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)


def reference_outputs(x: np.ndarray, seed: int = 0, features: int = 16,
                      classes: int = 10) -> np.ndarray:
    """What :func:`matmul_add` computes, in numpy."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((features, classes)).astype(np.float32)
    bias = rng.standard_normal(classes).astype(np.float32)
    return x @ weight + bias


@pytest.fixture
def models(tmp_path):
    """A folder of the tiny models above."""
    return {"matmul": matmul_add(tmp_path / "mm.onnx"),
            "tokens": token_model(tmp_path / "tok.onnx"),
            "opset9": opset9_model(tmp_path / "old.onnx")}


QUICK = {"warmup": 2, "min_runs": 5, "min_time_s": 0.0}
