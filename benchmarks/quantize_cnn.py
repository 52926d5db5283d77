"""int8 vs fp32 on the demo CNNs (MNIST-1D): accuracy and latency, side by side.

Target: static int8 is >= 1.8x faster than fp32 on ONNX Runtime's CPU execution provider with
one thread, with an accuracy drop of at most 1 point.

The demo teacher (``mnist1d_cnn(width=64)``, 31k parameters) and student (``width=16``) are
trained here for a few epochs, exported with ``edgepack.export.torch_export.export_onnx`` and
quantized with ``edgepack.compress.quantize.quantize`` (static QDQ, the default ``auto`` preset,
calibrated on 512 training samples, of which the last quarter is held out for its output
check). A model the quantizer's own checks refuse (exit code 1: outputs too far from fp32, or
not faster) is reported as refused, with the reason, and timed anyway with ``allow_slower``. Each fp32/int8 pair is timed interleaved in one
``bench.bench`` run at batch 1 and batch 64; accuracy is on the 2,000 held-out samples.

    python benchmarks/quantize_cnn.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.runner import BenchConfig, bench  # noqa: E402
from edgepack.compress.distill import collect  # noqa: E402
from edgepack.compress.quantize import (QuantizationCheckError, quantize, quantize_config,  # noqa: E402
                               resolve_settings, speed_gate_cause)
from edgepack.compress.trainer import TrainConfig, fit  # noqa: E402
from edgepack.zoo.mnist1d_models import mnist1d, mnist1d_cnn  # noqa: E402
from edgepack.export.torch_export import ExportConfig, export_onnx  # noqa: E402

WIDTHS = (64, 16)
BATCHES = (1, 64)


def trained_onnx(width: int, data: dict, epochs: int, out: Path) -> Path:
    torch.manual_seed(0)
    model = mnist1d_cnn(width=width)
    fit(model, data["train"], TrainConfig(epochs=epochs, lr=0.01, progress=False))
    inputs, _ = collect(data["evaluation"])
    return export_onnx(model, ExportConfig(), inputs[:1], out, parity_inputs=inputs[:16]).artifact


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--min-runs", type=int, default=200)
    parser.add_argument("--min-time", type=float, default=1.0, help="timed seconds per model")
    args = parser.parse_args()

    data = mnist1d(samples=10_000)
    inputs, labels = collect(data["evaluation"])
    eval_data = {"input": inputs.numpy(), "labels": labels.numpy()}
    config = quantize_config(mode="static", calibration="minmax")
    print(f"preset auto: {resolve_settings(config)[1]}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="quantize-cnn.") as tmp:
        for width in WIDTHS:
            fp32 = trained_onnx(width, data, args.epochs, Path(tmp) / f"w{width}.onnx")
            int8 = Path(tmp) / f"w{width}.int8.onnx"
            try:
                quantize(fp32, config, int8, calibration=data["calibration"])
            except QuantizationCheckError as exc:
                print(f"width {width}: refused (exit {exc.exit_code}): {exc}")
                kept = quantize_config(mode="static", calibration="minmax", allow_slower=True)
                quantize(fp32, kept, int8, calibration=data["calibration"])
            for batch in BATCHES:
                bench_config = BenchConfig(threads=1, batch=batch, min_runs=args.min_runs,
                                           min_time_s=args.min_time)
                fp, q = bench([fp32, int8], bench_config, eval_data)
                rows.append((width, batch, fp, q, speed_gate_cause(int8)))
    report(rows, args)
    return 0


def report(rows, args) -> None:
    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores, "
          f"flags {' '.join(cpu['flags'])})")
    print(f"provider {rows[0][2]['provider']}, threads 1, int8 = static QDQ (auto preset, "
          f"MinMax, 512 calibration samples); {args.epochs} training epochs; interleaved, at "
          f"least {args.min_runs} runs and {args.min_time} s per model; accuracy on 2,000 "
          "held-out samples")
    print(f"{'width':>5}{'batch':>6}{'fp32 p50 ms':>13}{'int8 p50 ms':>13}{'speedup':>9}"
          f"{'fp32 acc':>10}{'int8 acc':>10}{'drop pts':>10}  target")
    for width, batch, fp, q, cause in rows:
        speedup = fp["latency_ms"]["p50"] / q["latency_ms"]["p50"]
        drop = (fp["accuracy"] - q["accuracy"]) * 100
        met = speedup >= 1.8 and drop <= 1.0
        print(f"{width:>5}{batch:>6}{fp['latency_ms']['p50']:>13.4f}"
              f"{q['latency_ms']['p50']:>13.4f}{speedup:>8.2f}x{fp['accuracy']:>10.4f}"
              f"{q['accuracy']:>10.4f}{drop:>10.2f}  {'met' if met else 'NOT met'}")
        if speedup < 1.8:
            print(f"      {cause}")


if __name__ == "__main__":
    sys.exit(main())
