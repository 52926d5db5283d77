"""int8 vs fp32 on real CNN architectures: ResNet-18, MobileNetV3-small, EfficientNet-B0.

Targets (issue 11), ONNX Runtime CPU execution provider, 1 thread, batch 1, 224x224, every
pair timed interleaved in one ``bench.bench`` run:

- default int8 is never slower than fp32 without exit code 1 (the speed check refuses it);
- ResNet-style networks: >= 3.0x fp32 with top-1 agreement >= 0.98 on held-out inputs;
- MobileNetV3 / EfficientNet: >= 1.2x with latency-aware mixed precision, or the per-node
  profile shows that no int8 kernel is faster there.

The networks are the project's own definitions (``edgepack.zoo.architectures``, written after
torchvision's), with random weights and BatchNorm statistics from random images; they are
exported with ``edgepack.export.torch_export.export_onnx`` and quantized with
``edgepack.compress.quantize.quantize`` and its defaults (static, ``preset auto``, latency-aware, the
output and speed checks), exactly what ``edgepack quantize --data calib.npz`` runs. A second
int8 model per network is quantized fully (``latency_aware=False, allow_slower=True``) to
show what latency-aware mixed precision changes. Calibration: 32 random images (the command
holds out its last quarter for its own check); top-1 agreement: 64 other images.

    python benchmarks/quantize_architectures.py [--only resnet18]
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
from edgepack.compress.quantize import (QuantizationCheckError, QuantizeConfig, quantize,  # noqa: E402
                               quantize_config, resolve_settings)
from edgepack.export.torch_export import ExportConfig, export_onnx  # noqa: E402

SIZE = 224
CALIBRATION_IMAGES = 32
AGREEMENT_IMAGES = 64
TARGETS = {"resnet18": 3.0, "mobilenet_v3_small": 1.2, "efficientnet_b0": 1.2}


def builders() -> dict:
    try:
        from edgepack.zoo import architectures
    except ImportError as exc:  # written on another branch; merged into main with issue 10
        raise SystemExit(f"needs edgepack/architectures.py (ResNet-18, MobileNetV3-small, "
                         f"EfficientNet-B0): {exc}") from exc
    return {name: getattr(architectures, name) for name in TARGETS}


def fp32_onnx(name: str, build, out: Path) -> Path:
    """The network with random weights and BatchNorm statistics from random images."""
    torch.manual_seed(0)
    model = build()
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, SIZE, SIZE))
    model.eval()
    example = torch.randn(1, 3, SIZE, SIZE)
    return export_onnx(model, ExportConfig(), example, out,
                       parity_inputs=torch.randn(2, 3, SIZE, SIZE)).artifact


def quantized(fp32: Path, config: QuantizeConfig, calibration: dict, out: Path):
    """(path or None, record or None, exit code, message) of one quantization."""
    try:
        result = quantize(fp32, config, out, calibration=calibration)
    except QuantizationCheckError as exc:
        return None, getattr(exc, "figures", None), exc.exit_code, str(exc)
    return result.artifact, result.record, 0, ""


def agreement(fp32: Path, int8: Path, images: np.ndarray) -> float:
    import onnxruntime as ort

    def top1(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: images[i:i + 8]})[0].argmax(1)
                               for i in range(0, len(images), 8)])
    return float((top1(fp32) == top1(int8)).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="one network name")
    parser.add_argument("--min-runs", type=int, default=30)
    parser.add_argument("--min-time", type=float, default=2.0, help="timed seconds per model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    calibration = {"input": rng.standard_normal((CALIBRATION_IMAGES, 3, SIZE, SIZE),
                                                dtype=np.float32)}
    held_out = rng.standard_normal((AGREEMENT_IMAGES, 3, SIZE, SIZE), dtype=np.float32)
    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['arch']}, flags {' '.join(cpu['flags'])}); provider "
          f"CPU, 1 thread, batch 1, {SIZE}x{SIZE}, interleaved, at least {args.min_runs} runs "
          f"and {args.min_time} s per model")
    with tempfile.TemporaryDirectory(prefix="quantize-arch.") as tmp:
        for name, build in builders().items():
            if args.only and name != args.only:
                continue
            run_one(name, build, Path(tmp), calibration, held_out, args)
    return 0


def run_one(name, build, tmp: Path, calibration, held_out, args) -> None:
    fp32 = fp32_onnx(name, build, tmp / f"{name}.onnx")
    calibration = {next(iter(_input_names(fp32))): calibration["input"]}
    variants = {"default": quantize_config(speed_min_runs=args.min_runs // 2),
                "full int8": quantize_config(latency_aware=False, allow_slower=True,
                                            speed_check=False)}
    models, notes = {"fp32": fp32}, {}
    print(f"\n{name}:")
    for label, config in variants.items():
        path, record, code, message = quantized(fp32, config, calibration,
                                                tmp / f"{name}.{label.replace(' ', '-')}.onnx")
        print(f"  quantize ({label}): exit {code}" + (f": {message}" if message else ""))
        if label == "default":
            print(f"    preset auto: {resolve_settings(config)[1]}")
        if path is not None:
            models[label] = path
            notes[label] = record
            latency = record.get("latency_aware")
            if latency:
                print(f"    latency-aware: {len(latency['kept_float'])} of "
                      f"{latency['groups_quantized']} quantized node groups kept in float "
                      f"{latency['kept_float_by_op']}; profile float "
                      f"{latency['float_total_us']:.0f} us vs int8 "
                      f"{latency['int8_total_us']:.0f} us per run")
            check = record["output_check"]["outputs"]
            print(f"    output check: {check}")
    feeds = {next(iter(_input_names(fp32))): held_out[:8]}
    results = bench(list(models.values()), BenchConfig(threads=1, batch=1,
                                                       min_runs=args.min_runs,
                                                       min_time_s=args.min_time), data=feeds)
    base = results[0]["latency_ms"]["p50"]
    for (label, path), result in zip(models.items(), results):
        p50 = result["latency_ms"]["p50"]
        agree = 1.0 if label == "fp32" else agreement(fp32, path, held_out)
        print(f"  {label:<10} p50 {p50:8.3f} ms  {base / p50:5.2f}x fp32  top-1 agreement "
              f"{agree:.3f} on {len(held_out)} held-out images")
        if label == "default":
            met = base / p50 >= TARGETS[name] and (name != "resnet18" or agree >= 0.98)
            print(f"  target >= {TARGETS[name]}x{' and top-1 >= 0.98' if name == 'resnet18' else ''}"
                  f": {'met' if met else 'NOT met'}")


def _input_names(path: Path):
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


if __name__ == "__main__":
    sys.exit(main())
