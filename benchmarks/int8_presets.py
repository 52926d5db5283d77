"""Each int8 preset's settings on the CPU at hand: what they cost in accuracy and buy in speed.

The presets (``compress/quantize/presets.py``) say what ONNX Runtime's int8 kernels want on
each ISA. Only the ISA this script runs on can be measured here, so it quantizes one model
with every x86 and ARM preset's settings *on this CPU* and prints, per preset: top-1 agreement
with fp32 and accuracy on held-out data, mean output cosine, and the speed-up over fp32 timed
interleaved in one run. On an AVX2 machine without VNNI the ``x86-vnni`` row shows the
saturation of VPMADDUBSW's 16-bit sums with full 8-bit weights (what ``reduce_range`` avoids);
on a VNNI or AMX machine the same row is the preset's real result.

The model: the demo's MNIST-1D teacher (``mnist1d_cnn(width=96)``, trained here for a few
epochs), exported to ONNX, quantized static QDQ and dynamic, calibrated on 512 training
samples; every quantization has its output and speed checks off, so every row is measured.

    python benchmarks/int8_presets.py [--epochs 8] [--min-time 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.runner import BenchConfig, bench  # noqa: E402
from edgepack.compress.distill import collect  # noqa: E402
from edgepack.compress.quantize import quantize, quantize_config  # noqa: E402
from edgepack.compress.quantize.presets import choose_preset  # noqa: E402
from edgepack.compress.trainer import TrainConfig, fit  # noqa: E402
from edgepack.zoo import mnist1d, mnist1d_cnn  # noqa: E402
from edgepack.export.torch_export import ExportConfig, export_onnx  # noqa: E402

PRESETS = ("x86-avx2", "x86-vnni", "arm64")   # x86-amx and arm64-nodot: same settings as vnni
MODES = ("static", "dynamic")


def trained_onnx(data: dict, epochs: int, out: Path) -> Path:
    torch.manual_seed(0)
    model = mnist1d_cnn(width=96)
    fit(model, data["train"], TrainConfig(epochs=epochs, lr=0.01, progress=False))
    inputs, _ = collect(data["evaluation"])
    return export_onnx(model, ExportConfig(), inputs[:1], out, parity_inputs=inputs[:16]).artifact


def outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--min-time", type=float, default=1.0, help="timed seconds per model")
    args = parser.parse_args()
    cpu = cpu_info()
    flags = sorted(f for f in cpu.get("flags", []) if "vnni" in f or "amx" in f or
                   f in ("avx2", "avx512f", "asimddp"))
    print(f"machine: {cpu['cpu']} ({cpu['arch']}); int8-relevant flags: {', '.join(flags)}; "
          f"auto picks {choose_preset()[0]}")
    data = mnist1d(samples=10_000)
    inputs, labels = collect(data["evaluation"])
    x, y = inputs.numpy(), labels.numpy()
    calibration = {"input": collect(data["calibration"])[0].numpy()}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = trained_onnx(data, args.epochs, Path(tmp) / "fp32.onnx")
        calibration = {next(iter(_input_names(fp32))): calibration["input"]}
        reference = outputs(fp32, x)
        rows, paths = [], [fp32]
        for mode in MODES:
            for preset in PRESETS:
                path = Path(tmp) / f"{mode}-{preset}.onnx"
                config = quantize_config(mode, preset=preset, speed_check=False,
                                         latency_aware=False, accuracy_aware=False,
                                         search=False, min_cosine=-1.0, max_norm_change=1e9,
                                         min_top1_agreement=0.0)
                quantize(fp32, config, path, calibration=calibration)
                got = outputs(path, x)
                cosine = float(np.mean(np.sum(got * reference, 1) / np.maximum(
                    np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1), 1e-12)))
                rows.append({"mode": mode, "preset": preset,
                             "agreement": float((got.argmax(1) == reference.argmax(1)).mean()),
                             "accuracy": float((got.argmax(1) == y).mean()), "cosine": cosine})
                paths.append(path)
        timed = bench(paths, BenchConfig(threads=1, batch=1, min_runs=200,
                                         min_time_s=args.min_time))
    base = timed[0]["latency_ms"]["p50"]
    print(f"fp32: accuracy {(reference.argmax(1) == y).mean():.4f}, p50 {base:.4f} ms "
          f"(ONNX Runtime CPU provider, 1 thread, batch 1, {len(paths)} models interleaved)")
    print("| mode | preset's settings | top-1 agreement | accuracy | mean cosine | speed-up |")
    print("|---|---|---|---|---|---|")
    for row, result in zip(rows, timed[1:]):
        speedup = base / result["latency_ms"]["p50"]
        print(f"| {row['mode']} | {row['preset']} | {row['agreement']:.4f} | "
              f"{row['accuracy']:.4f} | {row['cosine']:.5f} | {speedup:.2f}x |")
    return 0


def _input_names(path: Path):
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


if __name__ == "__main__":
    sys.exit(main())
