"""ORT's per-channel axis warning for 1-D weights (LayerNorm scales) is dropped, nothing else."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from edgepack.compress.ort_noise import per_tensor_1d_weights_quietly
from edgepack.compress.quantize import quantize_config, quantize
from edgepack.export.torch_export import ExportConfig, export_onnx


def test_per_channel_quantization_of_layernorm_weights_is_quiet(tmp_path, caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4))
    export_onnx(model, ExportConfig(), torch.randn(2, 16), tmp_path / "m.onnx")
    calibration = {"input": np.random.default_rng(0).standard_normal((32, 16), np.float32)}
    with caplog.at_level(logging.WARNING):
        quantize(tmp_path / "m.onnx", quantize_config(mode="static", per_channel=True,
                                                     speed_check=False, latency_aware=False),
                 tmp_path / "q.onnx", calibration)
    assert (tmp_path / "q.onnx").is_file()
    assert not [r for r in caplog.records if "out-of-range" in r.getMessage()]


def test_only_the_rank_one_message_is_dropped(caplog):
    with caplog.at_level(logging.WARNING), per_tensor_1d_weights_quietly():
        logging.warning("Axis 1 is out-of-range for weight 'norm.weight' with rank 1")
        logging.warning("Axis 3 is out-of-range for weight 'conv.weight' with rank 2")
    assert [r.getMessage() for r in caplog.records] == [
        "Axis 3 is out-of-range for weight 'conv.weight' with rank 2"]
