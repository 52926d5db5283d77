"""Every stage on real architectures: prune -> export -> quantize -> package -> bench.

For ResNet-18, MobileNetV3-small, EfficientNet-B0, ConvNeXt-atto, ViT-tiny (224x224) and a
4-layer BERT classifier (sequence 128), all defined in ``edgepack.zoo.architectures`` with random
weights: structured pruning at 0.5 (whole attention heads where there are heads), export of
the original and the pruned model with a parity check (dynamo exporter), static int8
quantization of the pruned model with the default settings, packaging to ``.ort``, and the
three ONNX models timed interleaved in one run (1 thread, batch 1). Targets: no stage
refuses; pruning gives >= 1.8x on every CNN and >= 1.5x on the ViT and BERT.

    python benchmarks/sweep_architectures.py [--only resnet18,vit_tiny] [--min-time 3] [--json out.json]

Speed-ups are ratios of median latencies measured side by side; int8 agreement compares the
int8 model with the pruned fp32 model it came from (cosine of the outputs, top-1 agreement)
on random inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.pipeline.architecture_sweep import (SweepSettings, real_architectures,  # noqa: E402
                                         run_one)

CNN_TARGET, TRANSFORMER_TARGET = 1.8, 1.5
TRANSFORMERS = ("vit_tiny", "bert_classifier")


def _speedup(latency: dict, slow: str, fast: str):
    if slow in latency and fast in latency:
        return latency[slow]["p50_ms"] / latency[fast]["p50_ms"]
    return None


def table_row(arch, row: dict) -> dict:
    """The figures docs/architectures.md's table shows, and whether the pruning target was met."""
    latency = row.get("latency", {})
    prune = row.get("prune", {})
    pruned_speedup = _speedup(latency, "fp32", "pruned")
    target = TRANSFORMER_TARGET if arch.builder in TRANSFORMERS else CNN_TARGET
    agreement = row.get("int8_agreement", {})
    return {"name": arch.name, "params_before": prune.get("params_before"),
            "params_after": prune.get("params_after"),
            "heads": (prune.get("attention_heads_before", [None])[0],
                      prune.get("attention_heads_after", [None])[0]),
            "fp32_ms": latency.get("fp32", {}).get("p50_ms"),
            "pruned_speedup": pruned_speedup, "target": target,
            "met": pruned_speedup is not None and pruned_speedup >= target,
            "int8_speedup": _speedup(latency, "pruned", "int8"),
            "cosine": agreement.get("cosine"), "top1": agreement.get("top1_agreement"),
            "runs": min((v["runs"] for v in latency.values()), default=0),
            "refused": [f"{r['stage']} (exit {r['exit_code']}): {r['reason']}"
                        for r in row["refused"]]}


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def markdown(rows: list[dict]) -> str:
    lines = ["| architecture | params before -> after | heads | fp32 p50 ms | pruned speed-up "
             "(target) | int8 speed-up vs pruned | int8 cosine / top-1 | runs | refused |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        heads = "-" if r["heads"][0] is None else f"{r['heads'][0]} -> {r['heads'][1]}"
        params = (f"{r['params_before'] / 1e6:.2f}M -> {r['params_after'] / 1e6:.2f}M"
                  if r["params_before"] else "-")
        mark = "" if r["pruned_speedup"] is None else (" ✓" if r["met"] else " ✗")
        lines.append(
            f"| {r['name']} | {params} | {heads} | {_fmt(r['fp32_ms'], '.1f')} | "
            f"{_fmt(r['pruned_speedup'], '.2f', 'x')} (>= {r['target']}x){mark} | "
            f"{_fmt(r['int8_speedup'], '.2f', 'x')} | {_fmt(r['cosine'], '.4f')} / "
            f"{_fmt(r['top1'], '.2f')} | {r['runs']} | {'; '.join(r['refused']) or 'none'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated builder names")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--min-runs", type=int, default=20)
    parser.add_argument("--min-time", type=float, default=3.0, help="timed seconds per model")
    parser.add_argument("--json", default=None, help="write every record here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = SweepSettings(ratio=args.ratio, threads=1, min_runs=args.min_runs,
                             min_time_s=args.min_time)
    only = [n for n in args.only.split(",") if n]
    archs = [a for a in real_architectures() if not only or a.builder in only]
    env = cpu_info()
    import onnxruntime

    print(f"# {env['cpu']} ({env['logical_cores']} logical cores), onnxruntime "
          f"{onnxruntime.__version__}, CPUExecutionProvider, 1 intra-op thread, batch 1, "
          f"fp32 / pruned / int8 timed interleaved, >= {args.min_runs} runs and "
          f"{args.min_time} s each; pruning: structured {args.ratio}, heads {args.ratio}",
          flush=True)
    rows, records = [], []
    for arch in archs:
        with tempfile.TemporaryDirectory() as work:
            record = run_one(arch, Path(work), settings)
        records.append(record)
        rows.append(table_row(arch, record))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1, default=str))
    failed = [r["name"] for r in rows if r["refused"] or not r["met"]]
    if failed:
        print(f"\ntargets missed or stages refused: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
