"""Why the demo's student is 64 wide: at which width pruning and int8 pay off at batch 1.

For each width, an untrained demo CNN is exported to ONNX, structured-pruned by a quarter of
its channels, and the pruned model quantized to int8 exactly as the demo does (static QDQ,
uint8 activations, per-channel int8 weights); the three are timed interleaved on ONNX
Runtime's CPU provider, batch 1, one thread. Speed does not depend on trained weights.

    python benchmarks/demo_student_widths.py [--widths 16 32 48 64 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import copy
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.runner import BenchConfig, bench  # noqa: E402
from edgepack.compress.prune import PruneConfig, count_params, structured_prune  # noqa: E402
from edgepack.compress.quantize import QuantizeConfig, quantize  # noqa: E402
from edgepack.pipeline.recipe_runner import demo_recipe  # noqa: E402
from edgepack.zoo.mnist1d_models import mnist1d_cnn  # noqa: E402
from edgepack.export.torch_export import ExportConfig, export_onnx  # noqa: E402


def three_models(width: int, ratio: float, quantize_config: QuantizeConfig, folder: Path):
    """The float model, its pruned copy and the pruned copy in int8: three ONNX files."""
    torch.manual_seed(0)
    model = mnist1d_cnn(width=width).eval()
    x = torch.randn(256, 1, 40)
    pruned = copy.deepcopy(model)
    structured_prune(pruned, PruneConfig(ratio=ratio), x[:1], progress=False)
    paths = [folder / f"w{width}.onnx", folder / f"w{width}-pruned.onnx"]
    for module, path in zip((model, pruned), paths):
        export_onnx(module, ExportConfig(), x[:1], path, parity_inputs=x[:8])
    int8 = folder / f"w{width}-pruned-int8.onnx"
    quantize(paths[1], quantize_config, int8, calibration=[x[i:i + 64] for i in (0, 64)])
    return count_params(model), paths + [int8]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 48, 64, 128])
    args = parser.parse_args(argv)
    recipe = demo_recipe()
    ratio = next(s for s in recipe.stages if s.kind == "prune").ratio
    quantize_config = dataclasses.replace(next(s for s in recipe.stages if s.kind == "quantize"),
                                          speed_check=False,  # timed here, side by side
                                          min_top1_agreement=0.0,  # untrained: random logits
                                          accuracy_aware=False)
    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores); "
          f"ONNX Runtime CPU, batch 1, 1 thread; prune ratio {ratio}")
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            params, paths = three_models(width, ratio, quantize_config, Path(tmp))
            results = bench(paths, BenchConfig(threads=1, batch=1, min_runs=300,
                                               min_time_s=0.5), None)
            fp32, pruned, int8 = (r["latency_ms"]["p50"] for r in results)
            print(f"width {width:4d} ({params:,} params): p50 {fp32:.4f} ms; pruned "
                  f"{pruned:.4f} ms ({fp32 / pruned:.2f}x); pruned int8 {int8:.4f} ms "
                  f"({pruned / int8:.2f}x faster than pruned)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
