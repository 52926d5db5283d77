"""Structured pruning's speed-up: a ResNet-style CNN, 50% of channels, ONNX Runtime on CPU.

Target: 50% channel pruning cuts ONNX CPU latency (1 thread) by >= 1.8x. The weights are
random (latency does not depend on them); the pruned and unpruned models are exported to
ONNX and timed interleaved in one run by ``bench.bench``.

    python benchmarks/prune_resnet.py [--ratio 0.5] [--width 32] [--blocks 3] [--batch 1]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.runner import BenchConfig, bench  # noqa: E402
from edgepack.compress.prune import PruneConfig, prune  # noqa: E402
from edgepack.zoo.mnist1d_models import resnet_cnn  # noqa: E402
from edgepack.export.torch_export import ExportConfig, export_onnx  # noqa: E402

TARGET_SPEEDUP = 1.8


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-runs", type=int, default=200)
    parser.add_argument("--min-time", type=float, default=5.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    dense = resnet_cnn(width=args.width, blocks=args.blocks).eval()
    example = torch.randn(1, 3, 32, 32)
    pruned = copy.deepcopy(dense)
    record = prune(pruned, PruneConfig(method="structured", ratio=args.ratio), example,
                   progress=False).record
    config = BenchConfig(threads=args.threads, batch=args.batch, min_runs=args.min_runs,
                         min_time_s=args.min_time)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for name, model in (("unpruned", dense), ("pruned", pruned)):
            path = Path(folder) / f"{name}.onnx"
            export_onnx(model, ExportConfig(), example, path, parity_inputs=example.repeat(2, 1, 1, 1))
            paths.append(path)
        dense_result, pruned_result = bench(paths, config)

    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores)")
    print(f"runtime: {dense_result['provider']}, threads {args.threads}, batch {args.batch}, "
          f"at least {args.min_runs} runs and {args.min_time} s per model, interleaved")
    print(f"model: resnet_cnn(width={args.width}, blocks={args.blocks}), input 3x32x32, "
          f"structured ratio {args.ratio}")
    print(f"params: {record['params_before']:,} -> {record['params_after']:,} "
          f"({record['params_before'] / record['params_after']:.2f}x fewer)")
    print(f"MACs:   {record['macs_before']:,} -> {record['macs_after']:,} "
          f"({record['macs_ratio']:.2f}x fewer)")
    for label, result in (("unpruned", dense_result), ("pruned", pruned_result)):
        lat = result["latency_ms"]
        print(f"{label:9s} p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f} ms  "
              f"p99 {lat['p99']:.3f} ms  spread {lat['spread']:.0%}  ({lat['runs']} runs)")
    speedup = dense_result["latency_ms"]["p50"] / pruned_result["latency_ms"]["p50"]
    verdict = "met" if speedup >= TARGET_SPEEDUP else "NOT met"
    print(f"speed-up (p50): {speedup:.2f}x  (target >= {TARGET_SPEEDUP}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
