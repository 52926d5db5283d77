"""Tiny models and ONNX Runtime helpers shared by the export tests."""

import numpy as np
import onnxruntime as ort
import torch
from torch import nn


class TinyNet(nn.Module):
    """A 1-D conv net with batch norm and dropout: what the export path meets in practice."""

    def __init__(self, width: int = 8, length: int = 16, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv1d(1, width, 3, padding=1)
        self.norm = nn.BatchNorm1d(width)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(width * length, classes)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.norm(self.conv(x)))).flatten(1))


class SequenceNet(nn.Module):
    """Mean over a variable-length sequence axis: inputs (batch, time, features)."""

    def __init__(self, features: int = 6, classes: int = 3):
        super().__init__()
        self.proj = nn.Linear(features, 16)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(torch.tanh(self.proj(x)).mean(dim=1))


def cpu_session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(path, *arrays) -> list[np.ndarray]:
    session = cpu_session(path)
    feeds = {i.name: np.asarray(a) for i, a in zip(session.get_inputs(), arrays)}
    return session.run(None, feeds)


def add_model(weight=None, location: str | None = None, offset: int = 0,
              length: int | None = None):
    """``y = x + w`` for a float32[4] ``w``; with ``location`` the weight is declared
    external (at ``offset``/``length`` of that file) instead of stored inline."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.arange(4, dtype=np.float32) if weight is None else weight
    tensor = numpy_helper.from_array(weight, "w")
    if location is not None:
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        entries = {"location": location, "offset": str(offset),
                   "length": str(weight.nbytes if length is None else length)}
        for key, value in entries.items():
            tensor.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [tensor])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
