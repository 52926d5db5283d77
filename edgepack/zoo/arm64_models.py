"""Models the arm64 on-device check is tested and measured on (``tests/export/test_arm64.py``,
``benchmarks/arm64_device_check.py``): random weights, as the kernels of the x86 and aarch64
builds are compared, not accuracy. Each function writes its ONNX file and returns the path."""

from __future__ import annotations

import numpy as np
import torch

from edgepack.export.torch_export import ExportConfig, export_onnx


def export(model, example, path, **config):
    """``model`` exported with torchscript at opset 17 to ``path``."""
    export_onnx(model.eval(), ExportConfig(exporter="torchscript", opset=17, **config),
                example, path)
    return path


def demo_int8_model(tmp_path):
    """The demo's int8 model: the MNIST-1D CNN in static QDQ int8, quantized with the demo
    recipe's settings (uint8 activations, per-channel int8 weights, min-max calibration) on
    MNIST-1D signals; random weights, as the kernels and not the accuracy are checked."""
    from edgepack.compress.quantize import quantize, quantize_config
    from edgepack.zoo.mnist1d_models import cached_mnist1d, mnist1d_cnn

    torch.manual_seed(0)
    fp32 = export(mnist1d_cnn(width=48), torch.randn(1, 1, 40), tmp_path / "cnn.onnx")
    signals = cached_mnist1d(2000, 42)["x"][:64].astype(np.float32)[:, None, :]
    config = quantize_config(mode="static", calibration="minmax", format="qdq",
                             activation_type="uint8", per_channel=True, speed_check=False,
                             latency_aware=False, min_cosine=-1.0, min_top1_agreement=0.0)
    quantize(fp32, config, tmp_path / "cnn.int8.onnx", {"input": signals})
    return tmp_path / "cnn.int8.onnx"


def x86_optimized_cnn(tmp_path):
    """A CNN saved after ONNX Runtime's full optimization on x86: its NCHWc layout operators
    (com.microsoft.nchwc) exist only in the x86 build. It packages and runs here."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(16, 10))
    plain = export(model, torch.randn(1, 3, 32, 32), tmp_path / "cnn.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "cnn.x86.onnx")
    ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])
    return tmp_path / "cnn.x86.onnx"


def depthwise_cnn(folder):
    """A tiny MobileNetV3-small (depthwise convolutions, squeeze-excite) in fp32."""
    from edgepack.zoo.architectures import mobilenet_v3_small

    torch.manual_seed(0)
    return export(mobilenet_v3_small(num_classes=10, width_mult=0.25, depth=5),
                  torch.randn(1, 3, 32, 32), folder / "mobilenet.onnx")


def bert_encoder(folder):
    """A 2-layer BERT sentence encoder (hidden 64) with token inputs, in fp32."""
    from edgepack.zoo.minilm import bert_embedder

    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (1, 16))
    return export(bert_embedder(hidden=64, layers=2, heads=4, intermediate=128, max_positions=512),
                  (ids, torch.ones_like(ids)), folder / "bert.onnx",
                  input_names=("input_ids", "attention_mask"),
                  output_names=("sentence_embedding",), dynamic_axes=(1,))


def dynamic_int8(model, out):
    """``model`` in dynamic int8 with per-channel weights (accuracy and speed checks off)."""
    from edgepack.compress.quantize import quantize, quantize_config

    unchecked = quantize_config(mode="dynamic", per_channel=True, speed_check=False,
                                latency_aware=False, min_cosine=-1.0, min_top1_agreement=0.0)
    quantize(model, unchecked, out, None)
    return out
