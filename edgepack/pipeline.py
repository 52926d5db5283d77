"""The pipeline runner: stages in order, each measured, kept only if it earns its place.

A pipeline is data: a list of stage configs. Each stage takes the last *kept* artifact and
makes a candidate. The candidate and its input are then benchmarked side by side
(interleaved, on ONNX Runtime, the same data) and the candidate is kept only if

- its accuracy drop against its input is within the tolerance (the stage's own, or the
  recipe's), and
- for stages that promise speed (structured pruning, quantization) it is faster.

A stage that is not kept is still reported, with its numbers and the reason; the next stage
starts from the last kept artifact. torch artifacts are benchmarked through a temporary
ONNX export so every row of the report is measured on the same runtime.

Each stage folder gets its artifact, then ``record.json`` (with the artifact's sha256) last;
``--resume`` reuses a stage whose record and artifact agree and redoes any other.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx
import torch
from torch import nn

from bench.report import results_table, tradeoff_plot
from bench.runner import BenchConfig, bench
from bench.session import ProviderError, provider_name
from compress.distill import DistillConfig, collect, distill
from compress.prune import PruneConfig, count_params, prune
from compress.quantize import (QuantizationCheckError, QuantizeConfig, quantize,
                               speed_gate_cause)
from core.stage import StageConfig
from compress.trainer import selection_batches
from edgepack.recipe import BenchSpec, Recipe, check_stage_order, to_toml
from core.files import (atomic_write_json, atomic_write_text, check_output_dir,
                          sha256_file)
from export.parity import ParityError
from export.torch_export import ExportConfig, export_onnx
from export.weights import load_weights, save_weights

RECORD = "record.json"
CHECKPOINT = "checkpoint.pt"   # a training stage's per-epoch checkpoint, for --resume
STAGE_CONFIG = "config.json"   # the config a stage was started with


@dataclass
class Artifact:
    """What flows between stages: a torch module or an ONNX file, with its measurements."""

    name: str
    module: nn.Module | None = None
    onnx_path: Path | None = None        # the ONNX file (for torch artifacts: a bench export)
    file: Path | None = None             # the artifact file in the run folder
    metrics: dict = field(default_factory=dict)
    source_module: nn.Module | None = None   # the torch model it is (or came from): gradients

    def __post_init__(self):
        if self.source_module is None:
            self.source_module = self.module


@dataclass
class PipelineContext:
    """Everything the stages share: data, output folder, settings, scratch space."""

    out_dir: Path
    data: dict
    example_inputs: torch.Tensor
    eval_arrays: dict
    tolerance: float
    bench: BenchSpec
    teacher: nn.Module
    scratch: Path
    bench_export: ExportConfig = field(default_factory=ExportConfig)   # for scratch exports
    resume: bool = False
    progress: bool = True
    base_dir: Path | None = None
    log: Callable[[str], None] = print


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_providers(providers) -> None:
    """Every requested provider must exist here, before anything runs."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    for name in providers:
        full = provider_name(name)
        if full not in available:
            raise ProviderError(f"[bench] providers: {full} is not available here (available: "
                                f"{', '.join(available)}); install onnxruntime-gpu for CUDA, "
                                "or remove it from the recipe")


def _bench_config(spec: BenchSpec, provider: str) -> BenchConfig:
    return BenchConfig(provider=provider, threads=spec.threads,
                       inter_op_threads=spec.inter_op_threads, spin_wait=spec.spin_wait,
                       graph_optimization=spec.graph_optimization, batch=spec.batch,
                       warmup=spec.warmup, min_runs=spec.min_runs, min_time_s=spec.min_time_s)


def _onnx_input_name(path: Path) -> str:
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


def _eval_data_for(path: Path, arrays: dict) -> dict:
    return {_onnx_input_name(path): arrays["inputs"], "labels": arrays["labels"]}


def measure_pair(ctx: PipelineContext, reference: Path | None, candidate: Path) -> tuple[dict, dict | None]:
    """Benchmark the candidate (and its reference, interleaved) on every provider."""
    by_provider: dict[str, dict] = {}
    ref_result = None
    for provider in ctx.bench.providers:
        config = _bench_config(ctx.bench, provider)
        paths = [candidate] + ([reference] if reference is not None else [])
        data = _eval_data_for(candidate, ctx.eval_arrays)
        results = bench(paths, config, data)
        by_provider[results[0]["provider"]] = results[0]
        if ref_result is None and len(results) > 1:
            ref_result = results[1]
    first = dict(next(iter(by_provider.values())))  # the first provider is the one judged
    if len(by_provider) > 1:
        first["by_provider"] = {k: {"latency_ms": v["latency_ms"], "accuracy": v.get("accuracy")}
                                for k, v in by_provider.items()}
    return first, ref_result


METRIC_KEYS = ("params", "size_bytes", "accuracy", "latency_ms", "provider", "providers",
               "nodes_per_provider", "threads", "batch", "memory_mb", "by_provider",
               "robustness")


def _metrics_from(result: dict, size_bytes: int, params: int) -> dict:
    return {"params": params, "size_bytes": size_bytes, "accuracy": result.get("accuracy"),
            "latency_ms": result["latency_ms"], "provider": result["provider"],
            "providers": result["providers"], "nodes_per_provider": result["nodes_per_provider"],
            "threads": result["threads"], "batch": result["batch"],
            "memory_mb": result["memory_mb"], **({"by_provider": result["by_provider"]}
                                                  if "by_provider" in result else {})}


def export_for_bench(ctx: PipelineContext, module: nn.Module, name: str) -> Path:
    """A scratch ONNX export of a torch artifact, so it is timed on the same runtime."""
    path = ctx.scratch / f"{name}.onnx"
    export_onnx(module, ctx.bench_export, ctx.example_inputs, path,
                parity_inputs=ctx.eval_arrays["inputs_torch"][:8])
    return path


def measure_robustness(ctx: PipelineContext, source: nn.Module, onnx_path: Path) -> dict:
    """FGSM/PGD accuracy of the ONNX model, attacked through its torch source."""
    from edgepack.robustness import robustness

    return robustness(source, onnx_path, ctx.eval_arrays["inputs_torch"],
                      torch.from_numpy(ctx.eval_arrays["labels"]),
                      eps_values=ctx.bench.robustness_eps,
                      samples=ctx.bench.robustness_samples)


# --------------------------------------------------------------------------- stages


def run_distill(ctx: PipelineContext, config: DistillConfig, source: Artifact, folder: Path):
    from compress.distill import make_student
    from edgepack.teacher import build_model

    built = None
    if config.student_init == "scratch":  # the builder was checked before the run started
        torch.manual_seed(config.seed)
        built = build_model(config.student["build"], dict(config.student.get("args", {})),
                            ctx.base_dir)
    student = make_student(source.module, config, ctx.example_inputs, built)
    result = distill(source.module, student, config, ctx.data,
                     checkpoint=folder / CHECKPOINT, resume=ctx.resume,
                     progress=ctx.progress)
    return result.artifact, result.record


def run_prune(ctx: PipelineContext, config: PruneConfig, source: Artifact, folder: Path):
    model = copy.deepcopy(source.module)
    result = prune(model, config, ctx.example_inputs, data=ctx.data,
                   teacher=ctx.teacher if source.name != "teacher" else None,
                   progress=ctx.progress)
    return result.artifact, result.record


def run_export(ctx: PipelineContext, config: ExportConfig, source: Artifact, folder: Path):
    result = export_onnx(source.module, config, ctx.example_inputs, folder / "model.onnx",
                         parity_inputs=ctx.eval_arrays["inputs_torch"][:64])
    return result.artifact, result.record


def run_quantize(ctx: PipelineContext, config: QuantizeConfig, source: Artifact, folder: Path):
    search = {}
    if config.accuracy_aware:
        # Prefer a validation split for choosing float nodes, so the evaluation set that
        # judges the stage is not the one the nodes were chosen on.
        search = {"evaluation": selection_batches(ctx.data),
                  "tolerance": _stage_tolerance(ctx, config)}
    result = quantize(source.onnx_path, config, folder / "model.onnx",
                      calibration=ctx.data.get("calibration"), **search)
    return result.artifact, result.record


STAGE_RUNNERS = {DistillConfig: run_distill, PruneConfig: run_prune,
                 ExportConfig: run_export, QuantizeConfig: run_quantize}


def _stage_tolerance(ctx: PipelineContext, config: StageConfig) -> float:
    own = getattr(config, "tolerance", None)
    return ctx.tolerance if own is None else float(own)


def _expects_speedup(config: StageConfig) -> bool:
    if isinstance(config, PruneConfig):
        return config.expects_speedup
    return isinstance(config, QuantizeConfig)


def _slow_cause(config: StageConfig, candidate: Path) -> str:
    """The likely reason a compressed model is not faster."""
    if isinstance(config, QuantizeConfig):
        return speed_gate_cause(candidate)
    return "likely cause: the model is too small for fewer channels to matter, or the " \
           "runtime's fixed per-call overhead dominates"


def judge(ctx: PipelineContext, config: StageConfig, source: Artifact, metrics: dict,
          reference_latency: dict | None, candidate: Path) -> tuple[bool, str]:
    """Keep the candidate only if accurate enough and, where promised, faster."""
    tolerance = _stage_tolerance(ctx, config)
    reasons = []
    ref_acc, acc = source.metrics.get("accuracy"), metrics.get("accuracy")
    if ref_acc is not None and acc is not None and ref_acc - acc > tolerance + 1e-12:
        reasons.append(f"accuracy drop {ref_acc - acc:.4f} > tolerance {tolerance:.4f}")
    if _expects_speedup(config) and reference_latency is not None:
        ref_p50, p50 = reference_latency["p50"], metrics["latency_ms"]["p50"]
        if p50 >= ref_p50:
            reasons.append(f"not faster (p50 {p50:.4f} ms vs {ref_p50:.4f} ms for its input; "
                           f"{_slow_cause(config, candidate)})")
    return not reasons, "; ".join(reasons)


def _save_artifact(module: nn.Module | None, produced, folder: Path) -> Path:
    if module is not None:
        path = folder / "model.safetensors"
        save_weights(module, path, metadata={"params": count_params(module)})
        return path
    return Path(produced)


def _load_done_stage(folder: Path, config: StageConfig, source: Artifact, ctx: PipelineContext):
    """A finished stage from an earlier run: its record, if it and its artifact agree."""
    record = _read_json(folder / RECORD)
    if not isinstance(record, dict):
        return None
    artifact = ctx.out_dir / record.get("artifact", "")
    if record.get("config") != config.to_dict() or not artifact.is_file() or \
            sha256_file(artifact) != record.get("sha256"):
        return None
    return record, artifact


def _rebuild(config: StageConfig, source: Artifact, artifact: Path, ctx: PipelineContext):
    """The torch module a finished stage produced, from its safetensors file."""
    from edgepack.teacher import build_model

    if isinstance(config, DistillConfig) and config.student_init == "scratch":
        module = build_model(config.student["build"], dict(config.student.get("args", {})),
                             ctx.base_dir)
    elif isinstance(config, DistillConfig):
        from compress.distill import make_student

        module = make_student(source.module, config, ctx.example_inputs)
    else:
        # A reduced copy of the stage's input: load_weights resizes the narrowed layers.
        module = copy.deepcopy(source.module)
    return load_weights(module, artifact).eval()


def _clear_unfinished(folder: Path, config: StageConfig, resume: bool) -> None:
    """Remove what an unfinished earlier attempt left.

    On ``--resume`` a training checkpoint is kept when it was made with the same stage config
    (``config.json``, written when the stage starts), so training continues where it stopped.
    """
    folder.mkdir(parents=True, exist_ok=True)
    started_with = folder / STAGE_CONFIG
    same_config = started_with.is_file() and _read_json(started_with) == config.to_dict()
    for item in folder.iterdir():
        if resume and same_config and item.name in (CHECKPOINT, STAGE_CONFIG):
            continue
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    atomic_write_json(started_with, config.to_dict())


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _reuse_stage(ctx: PipelineContext, name: str, config: StageConfig, source: Artifact,
                 record: dict, path: Path) -> tuple[dict, Artifact]:
    """A stage finished by an earlier run: its entry, and its artifact rebuilt from disk."""
    ctx.log(f"[{name}] done in an earlier run; reusing {path.name}")
    module = _rebuild(config, source, path, ctx) if path.suffix == ".safetensors" else None
    onnx_path = path if module is None else export_for_bench(ctx, module, name)
    metrics = {k: record[k] for k in METRIC_KEYS if k in record}
    return record, Artifact(name, module, onnx_path, path, metrics,
                            source.source_module if module is None else None)


def _measure_candidate(ctx: PipelineContext, module: nn.Module | None, path: Path,
                       onnx_path: Path, source: Artifact) -> tuple[dict, dict | None]:
    """The candidate's metrics (timed interleaved with its input) and its input's result."""
    result, ref = measure_pair(ctx, source.onnx_path, onnx_path)
    if module is not None:
        metrics = _metrics_from(result, path.stat().st_size, count_params(module))
    else:
        metrics = _metrics_from(result, result["size_bytes"], result["params"])
    grad_source = module if module is not None else source.source_module
    metrics["robustness"] = measure_robustness(ctx, grad_source, onnx_path)
    return metrics, ref


def run_stage(ctx: PipelineContext, index: int, config: StageConfig, source: Artifact) -> tuple[dict, Artifact]:
    """Run (or resume) one stage; return its report entry and the candidate artifact."""
    name = f"{index:02d}-{config.kind}"
    folder = ctx.out_dir / name
    done = _load_done_stage(folder, config, source, ctx) if ctx.resume else None
    if done is not None:
        return _reuse_stage(ctx, name, config, source, *done)
    _clear_unfinished(folder, config, ctx.resume)
    ctx.log(f"[{name}] running")
    entry = {"name": name, "kind": config.kind, "config": config.to_dict()}
    try:
        produced, stage_record = STAGE_RUNNERS[type(config)](ctx, config, source, folder)
    except (ParityError, QuantizationCheckError) as exc:
        entry.update(kept=False, reason=str(exc).splitlines()[0], failed=True)
        atomic_write_json(folder / RECORD, entry)
        return entry, source
    module = produced if isinstance(produced, nn.Module) else None
    path = _save_artifact(module, produced, folder)
    onnx_path = export_for_bench(ctx, module, name) if module is not None else path
    metrics, ref = _measure_candidate(ctx, module, path, onnx_path, source)
    ref_latency = ref["latency_ms"] if ref else None
    kept, reason = judge(ctx, config, source, metrics, ref_latency, onnx_path)
    entry.update(artifact=str(path.relative_to(ctx.out_dir)), sha256=sha256_file(path),
                 **metrics, kept=kept, reason=reason,
                 input={"name": source.name, "accuracy": source.metrics.get("accuracy"),
                        "latency_ms": ref_latency},
                 speedup=ref_latency["p50"] / metrics["latency_ms"]["p50"] if ref else None,
                 record=stage_record)
    (folder / CHECKPOINT).unlink(missing_ok=True)
    atomic_write_json(folder / RECORD, entry)  # last: the stage is finished once this exists
    verdict = "kept" if kept else f"not kept: {reason}"
    ctx.log(f"[{name}] accuracy {metrics['accuracy']:.4f}, p50 "
            f"{metrics['latency_ms']['p50']:.4f} ms -> {verdict}")
    grad_source = module if module is not None else source.source_module
    return entry, Artifact(name, module, onnx_path, path, metrics, grad_source)


# --------------------------------------------------------------------------- the run


def _eval_arrays(data: dict) -> dict:
    inputs, labels = collect(data["evaluation"])
    if inputs is None or len(inputs) == 0:
        raise ValueError("the data provider's evaluation set is empty (0 samples)")
    return {"inputs": inputs.numpy(), "labels": labels.numpy(), "inputs_torch": inputs}


def check_stages_against_data(stages: list[StageConfig], data: dict,
                              base_dir: Path | None) -> None:
    """Catch what would fail mid-run (a missing transfer set, a student builder that does not
    import) before the run folder is created."""
    from edgepack.recipe import import_object

    for index, config in enumerate(stages, start=1):
        if not isinstance(config, DistillConfig):
            continue
        if config.transfer_samples and data.get("transfer") is None:
            raise ValueError(f"stage {index} (distill): transfer_samples = "
                             f"{config.transfer_samples} but the data provider gives no "
                             "'transfer' set")
        if config.student_init == "scratch":
            if not config.student.get("build"):
                raise ValueError(f"stage {index} (distill): student must name a builder: "
                                 "{ build = 'module:function', args = { ... } }")
            import_object(config.student["build"], base_dir, what="student builder")


def _prepare_out_dir(out_dir: Path, resume: bool) -> None:
    check_output_dir(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not resume:
        raise ValueError(f"output folder {out_dir} exists and is not empty; pass --resume to "
                         "continue that run, or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)


def measure_teacher(ctx: PipelineContext, teacher: nn.Module) -> tuple[dict, Artifact]:
    folder = ctx.out_dir / "00-teacher"
    folder.mkdir(exist_ok=True)
    path = save_weights(teacher, folder / "model.safetensors")
    onnx_path = export_for_bench(ctx, teacher, "teacher")
    result, _ = measure_pair(ctx, None, onnx_path)
    metrics = _metrics_from(result, path.stat().st_size, count_params(teacher))
    metrics["robustness"] = measure_robustness(ctx, teacher, onnx_path)
    entry = {"name": "teacher", "artifact": str(path.relative_to(ctx.out_dir)), **metrics}
    ctx.log(f"[teacher] accuracy {metrics['accuracy']:.4f}, p50 "
            f"{metrics['latency_ms']['p50']:.4f} ms, {metrics['params']:,} params")
    return entry, Artifact("teacher", teacher, onnx_path, path, metrics)


def robustness_table(rows: list[dict]) -> str:
    """Markdown: accuracy under FGSM/PGD per stage (empty when robustness was off)."""
    keys = sorted({(attack, eps) for r in rows for attack, by_eps in
                   (r.get("robustness") or {}).items() for eps in by_eps})
    if not keys:
        return ""
    header = "| stage | " + " | ".join(f"{a.upper()} eps={e}" for a, e in keys) + " |"
    lines = ["", "Accuracy under attack (perturbations crafted on the torch model each "
             "artifact is or came from; eps in input standard deviations):", "", header,
             "|" + "---|" * (len(keys) + 1)]
    for r in rows:
        rob = r.get("robustness") or {}
        cells = [f"{rob[a][e]:.4f}" if e in rob.get(a, {}) else "-" for a, e in keys]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(out_dir: Path, report: dict, recipe: Recipe | None) -> None:
    """report.json, report.md, tradeoff.png, recipe.toml, then manifest.json last."""
    atomic_write_json(out_dir / "report.json", report)
    rows = [{"name": "teacher", **report["teacher"]}] + [
        s for s in report["stages"] if "latency_ms" in s or not s.get("kept", True)]
    table = results_table(rows, markdown=True)
    env = report["env"]
    markdown = (f"# edgepack report: {report.get('name', 'run')}\n\n{table}\n\n"
                f"Measured on {env['cpu']} ({env['arch']}, {env['logical_cores']} logical "
                f"cores), ONNX Runtime {env['onnxruntime']}, threads "
                f"{report['bench']['threads']}, batch {report['bench']['batch']}, "
                f"at least {report['bench']['min_runs']} runs and "
                f"{report['bench']['min_time_s']} s per model, timed interleaved with each "
                "stage's input.\n\nFinal artifact: "
                f"{report.get('final_artifact') or '(none kept)'}\n")
    markdown += robustness_table(rows)
    atomic_write_text(out_dir / "report.md", markdown)
    tradeoff_plot(rows, out_dir / "tradeoff.png", title=f"{report.get('name', '')}: accuracy "
                  "vs latency (x: not kept)")
    if recipe is not None:
        atomic_write_text(out_dir / "recipe.toml", to_toml(recipe))
    files = sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name != "manifest.json"
                   and not p.name.startswith("."))
    manifest = {"files": {str(p.relative_to(out_dir)): sha256_file(p) for p in files}}
    atomic_write_json(out_dir / "manifest.json", manifest)


def run_pipeline(model: nn.Module, stages: list[StageConfig], out_dir, data: dict, *,
                 tolerance: float = 0.01, bench_spec: BenchSpec | None = None,
                 resume: bool = False, progress: bool = True, recipe: Recipe | None = None,
                 base_dir: Path | None = None, log: Callable[[str], None] = _stderr) -> dict:
    """Run ``stages`` on ``model``, measuring each; write the run folder; return the report.

    ``data``: ``{"train", "calibration", "evaluation"[, "transfer", "validation"]}``, each an
    iterable of ``(inputs, labels)`` batches (``transfer``: input batches). The pipeline runs
    single-input classifiers; for models with several inputs (transformers) call the stage
    functions (``export_hf``, ``quantize``, ``bench``) directly.
    """
    from bench.envinfo import environment

    bench_spec = bench_spec or BenchSpec()
    check_stage_order(stages)
    check_providers(bench_spec.providers)
    check_stages_against_data(stages, data, base_dir)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, resume)
    arrays = _eval_arrays(data)
    with tempfile.TemporaryDirectory(prefix=".scratch.", dir=out_dir) as scratch:
        # Scratch exports (to time torch stages) use the export stage's own settings, so
        # every model in one comparison has the same input names and exporter.
        export_config = next((s for s in stages if isinstance(s, ExportConfig)), ExportConfig())
        ctx = PipelineContext(out_dir=out_dir, data=data, example_inputs=arrays["inputs_torch"][:1],
                              eval_arrays=arrays, tolerance=tolerance, bench=bench_spec,
                              teacher=model.eval(), scratch=Path(scratch),
                              bench_export=dataclasses.replace(export_config, fail_on_mismatch=True),
                              resume=resume, progress=progress, base_dir=base_dir, log=log)
        teacher_entry, current = measure_teacher(ctx, model)
        entries = []
        for index, config in enumerate(stages, start=1):
            if config.kind == "quantize" and current.module is not None:
                entry = {"name": f"{index:02d}-quantize", "kind": "quantize",
                         "config": config.to_dict(), "kept": False,
                         "reason": "skipped: no ONNX model (the export stage was not kept)"}
                entries.append(entry)
                continue
            entry, candidate = run_stage(ctx, index, config, current)
            entries.append(entry)
            if entry.get("kept"):
                current = candidate
    report = {"edgepack_version": _version(), "name": recipe.name if recipe else "pipeline",
              "env": environment(), "tolerance": tolerance,
              "bench": bench_spec.to_dict(),
              "teacher": teacher_entry, "stages": entries,
              "final_artifact": str(current.file.relative_to(out_dir)) if current.file else None}
    write_outputs(out_dir, report, recipe)
    return report


def _version() -> str:
    from edgepack import __version__

    return __version__
