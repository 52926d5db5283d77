"""A small trained MNIST-1D CNN and its ONNX files, shared by the robustness tests.

Trained once per test session (a few seconds on one core): attacks need a model that has
learned something, or there is no accuracy to take away.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch


@functools.lru_cache(maxsize=1)
def mnist1d_arrays(samples: int = 1500, seed: int = 7) -> dict:
    from edgepack.zoo.mnist1d_models import cached_mnist1d

    data = cached_mnist1d(samples, seed)
    return {"x": data["x"][:, None, :], "y": data["y"],
            "x_test": data["x_test"][:, None, :], "y_test": data["y_test"]}


def train_tiny(width: int = 16, epochs: int = 8, seed: int = 0, adversarial: dict | None = None):
    """An MNIST-1D CNN trained on 1,200 samples (about 60% accurate: room to fall).

    The data are those of tests/edgepack/test_pipeline.py (one generation per session).
    """
    from torch.utils.data import DataLoader, TensorDataset

    from edgepack.compress.trainer import TrainConfig, fit
    from edgepack.zoo.mnist1d_models import mnist1d_cnn

    torch.set_num_threads(1)
    arrays = mnist1d_arrays()
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    torch.manual_seed(seed)
    model = mnist1d_cnn(width=width)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    fit(model, loader, TrainConfig(epochs=epochs, lr=1e-2, seed=seed, progress=False))
    return model.eval()


@functools.lru_cache(maxsize=1)
def trained_tiny():
    return train_tiny()


def export_tiny(model, path: Path) -> Path:
    from edgepack.export.torch_export import ExportConfig, export_onnx

    x = torch.from_numpy(mnist1d_arrays()["x"][:8])
    export_onnx(model, ExportConfig(), x[:1], path, parity_inputs=x)
    return path


def quantize_tiny(fp32: Path, path: Path) -> Path:
    """Static int8 (QDQ), calibrated on training inputs; kept even where it is no faster
    (these tests attack the int8 file, they do not time it)."""
    from edgepack.compress.quantize import quantize_config, quantize

    x = mnist1d_arrays()["x"][:256]
    quantize(fp32, quantize_config(mode="static", allow_slower=True), path, calibration={"input": x})
    return path


def eval_arrays(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    arrays = mnist1d_arrays()
    return arrays["x_test"][:n], arrays["y_test"][:n]
