"""Fixtures for the export tests: a tiny net and a small exported model."""

import pytest
import torch

from tests.export.tiny import TinyNet


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode matters
        model.norm.running_mean.uniform_(-0.5, 0.5)
        model.norm.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def exported(tmp_path, tiny_net):
    """A small exported model (dynamo, dynamic batch) and its input length."""
    from edgepack.export.torch_export import ExportConfig, export_onnx

    path = tmp_path / "model.onnx"
    export_onnx(tiny_net, ExportConfig(), torch.randn(1, 1, 16), path,
                parity_inputs=torch.randn(8, 1, 16))
    return path
