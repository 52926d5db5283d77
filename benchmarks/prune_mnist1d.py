"""The demo's prune stage on MNIST-1D: accuracy and latency, pruned against unpruned.

Target: the pruned and fine-tuned demo model stays within 1 point of its unpruned accuracy.
The unpruned model is the demo's distilled width-16 student (distilled here with the demo
recipe's own settings, from the cached demo teacher). Each prune setting starts from a copy
of it; all models are exported to ONNX and timed interleaved in one ``bench.bench`` run
(ONNX Runtime, CPU, 1 thread, batch 1), accuracy on the 2,000 held-out samples.

    python benchmarks/prune_mnist1d.py
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.runner import BenchConfig, bench  # noqa: E402
from edgepack.compress.distill import collect, distill  # noqa: E402
from edgepack.compress.prune import PruneConfig, prune  # noqa: E402
from edgepack.compress.trainer import accuracy  # noqa: E402
from edgepack.pipeline.recipe_runner import demo_teacher  # noqa: E402
from edgepack.pipeline.teacher import build_model  # noqa: E402
from edgepack.export.torch_export import ExportConfig, export_onnx  # noqa: E402

SETTINGS = {
    "old defaults (0.5, 5 ep, KD a=0.5)": PruneConfig(ratio=0.5, finetune_epochs=5, kd_alpha=0.5,
                                                      lr=3e-3),
    "0.5, 12 ep, KD a=1, +20k transfer": PruneConfig(
        ratio=0.5, finetune_epochs=12, kd_alpha=1.0, lr=0.02, finetune_transfer_samples=20_000),
    "0.25, 10 ep, KD a=0.9": PruneConfig(ratio=0.25, finetune_epochs=10, kd_alpha=0.9, lr=0.01),
}
DEMO = "demo recipe (0.25, 10 ep, +20k transfer)"


def distilled_student(recipe, data, teacher):
    """The demo's distill stage, run with the recipe's settings."""
    config = recipe.stages[0]
    torch.manual_seed(config.seed)
    student = build_model(config.student["build"], dict(config.student["args"]), None)
    distill(teacher, student, config, data, progress=False)
    return student.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recipe, data, teacher = demo_teacher()
    start = time.perf_counter()
    student = distilled_student(recipe, data, teacher)
    distill_s = time.perf_counter() - start
    inputs, labels = collect(data["evaluation"])
    example = inputs[:1]

    models = {"unpruned": (student, None, 0.0)}
    settings = {**SETTINGS, DEMO: recipe.stages[1]}  # the prune stage `edgepack demo` runs
    for name, config in settings.items():
        model = copy.deepcopy(student)
        start = time.perf_counter()
        record = prune(model, config, example, data=data, teacher=teacher,
                       progress=False).record
        models[name] = (model, record, time.perf_counter() - start)

    bench_config = BenchConfig(threads=1, batch=1, min_runs=200, min_time_s=args.min_time)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, (model, _, _) in enumerate(models.values()):
            paths.append(Path(folder) / f"model{index}.onnx")
            export_onnx(model, ExportConfig(), example, paths[-1], parity_inputs=inputs[:8])
        results = bench(paths, bench_config, {"input": inputs.numpy(), "labels": labels.numpy()})

    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores)")
    print(f"runtime: {results[0]['provider']}, threads 1, batch 1, at least "
          f"{bench_config.min_runs} runs and {args.min_time} s per model, interleaved; "
          f"accuracy on {len(labels)} held-out samples")
    print(f"teacher accuracy {accuracy(teacher, data['evaluation']):.4f}; student distilled "
          f"in {distill_s:.1f} s (recipe settings)")
    reference = accuracy(student, data["evaluation"])
    reference_p50 = results[0]["latency_ms"]["p50"]
    print(f"{'model':40s} {'params':>7s} {'acc':>7s} {'drop':>7s} {'p50 ms':>8s} "
          f"{'speed-up':>8s} {'prune s':>8s}  within 1 point")
    for (name, (model, record, seconds)), result in zip(models.items(), results):
        acc = accuracy(model, data["evaluation"])
        p50 = result["latency_ms"]["p50"]
        params = sum(p.numel() for p in model.parameters())
        within = "-" if record is None else ("yes" if reference - acc <= 0.01 else "NO")
        print(f"{name:40s} {params:7d} {acc:7.4f} {reference - acc:+7.4f} {p50:8.4f} "
              f"{reference_p50 / p50:7.2f}x {seconds:8.1f}  {within}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
