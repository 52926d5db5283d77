"""The pipeline runner: stages in order, each measured, kept only if it earns its place.

A pipeline is data: a list of stage configs. Each stage takes the last *kept* artifact and
makes a candidate, through the adapter its module registered (:mod:`edgepack.core.stage`). The
candidate and its input are benchmarked side by side (:mod:`edgepack.pipeline.measure`) and the
candidate is kept only if it passes the keep rule (:mod:`edgepack.pipeline.keep_rule`). A stage that is not
kept is still reported, with its numbers and the reason; the next stage starts from the last
kept artifact. ``--resume`` reuses finished stages (:mod:`edgepack.pipeline.resume`).

Under torchrun every rank calls :func:`run_pipeline`: rank 0 runs it as above and writes the
run; the others train each torch stage with it and adopt what it keeps
(:mod:`edgepack.pipeline.distributed`).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from torch import nn

from edgepack.bench.robustness import RobustnessConfig
from edgepack.bench.runner import BenchConfig
from edgepack.core.files import atomic_write_json, sha256_file
from edgepack.core.stage import StageConfig, StageInput, spec_for
from edgepack.core.tensors import rows
from edgepack.pipeline import distributed
from edgepack.pipeline.keep_rule import keep_reasons, stage_tolerance
from edgepack.pipeline.outcome import failure_entry, judged_entry, run_outcome
from edgepack.pipeline.measure import (Artifact, PipelineContext, check_providers, eval_arrays,
                                       export_for_bench, measure_candidate, measure_teacher,
                                       stderr_log)
from edgepack.pipeline.quality import MetricSpec, quality_summary, teacher_embeddings
from edgepack.pipeline.run_report import write_outputs
from edgepack.pipeline.run_folder import open_run_folder
from edgepack.pipeline.run_inputs import run_inputs
from edgepack.pipeline.run_lock import releases_run_folders
from edgepack.pipeline.resume import (CHECKPOINT, RECORD, clear_unfinished, load_done_stage,
                                      reuse_stage)
from edgepack.pipeline.stage_modules import load_stages
from edgepack.export.torch_export import ExportConfig
from edgepack.export.weights import save_weights


def stage_input(ctx: PipelineContext, config: StageConfig, source: Artifact,
                folder: Path) -> StageInput:
    """What the stage's adapter gets: its input artifact and the run around it."""
    consumes_torch = spec_for(config).consumes == "torch"
    return StageInput(artifact=source.module if consumes_torch else source.onnx_path,
                      folder=folder, data=ctx.data, example_inputs=ctx.example_inputs,
                      eval_inputs=ctx.eval_arrays["inputs_torch"],
                      teacher=ctx.teacher if source.name != "teacher" else None,
                      tolerance=stage_tolerance(ctx.tolerance, config), resume=ctx.resume,
                      progress=ctx.progress, build=ctx.build, checkpoint=folder / CHECKPOINT)


def _save_artifact(produced, folder: Path) -> Path:
    if isinstance(produced, nn.Module):
        from edgepack.compress.prune import count_params

        path = folder / "model.safetensors"
        save_weights(produced, path, metadata={"params": count_params(produced)})
        return path
    return Path(produced)


def _finish(folder: Path, entry: dict) -> None:
    """The record, written last: the stage is finished once it exists."""
    (folder / CHECKPOINT).unlink(missing_ok=True)
    atomic_write_json(folder / RECORD, entry)


def run_stage(ctx: PipelineContext, index: int, config: StageConfig,
              source: Artifact) -> tuple[dict, Artifact]:
    """Run (or resume) one stage; return its report entry and the candidate artifact."""
    spec = spec_for(config)
    name = f"{index:02d}-{config.kind}"
    folder = ctx.out_dir / name
    given = stage_input(ctx, config, source, folder)
    done = load_done_stage(folder, config, ctx) if ctx.resume else None
    if done is not None:
        return reuse_stage(ctx, name, config, given, source, *done)
    clear_unfinished(folder, config, ctx.resume)
    seed_stage(index, config)
    ctx.log(f"[{name}] running")
    entry = {"name": name, "kind": config.kind, "config": config.to_dict(),
             "config_version": config.version}
    started = time.perf_counter()
    try:
        with ctx.crew.training(index, config):
            result = spec.run(config, given)
    except spec.failures as exc:
        entry.update(kept=False, **failure_entry(exc), failed=True)
        atomic_write_json(folder / RECORD, entry)
        return entry, source
    path = _save_artifact(result.artifact, folder)
    ran = time.perf_counter()
    entry.update(artifact=str(path.relative_to(ctx.out_dir)), sha256=sha256_file(path),
                 seconds={"run": round(ran - started, 3)})
    if spec.produces == "package":  # an end product: checked by its stage, not timed
        entry.update(kept=True, reason="", record=result.record)
        _finish(folder, entry)
        ctx.log(f"[{name}] wrote {path.name}")
        return entry, source
    module = result.artifact if isinstance(result.artifact, nn.Module) else None
    onnx_path = export_for_bench(ctx, module, name) if module is not None else path
    metrics, ref = measure_candidate(ctx, module, path, onnx_path, source)
    ref_latency = ref["latency_ms"] if ref else None
    reasons = keep_reasons(ctx, config, source, metrics, ref_latency, onnx_path)
    kept = not reasons
    entry["seconds"]["measure"] = round(time.perf_counter() - ran, 3)  # bench, attacks, judge
    entry.update(**metrics, kept=kept, **judged_entry(reasons),
                 input={"name": source.name, "accuracy": source.metrics.get("accuracy"),
                        "latency_ms": ref_latency},
                 speedup=ref_latency["p50"] / metrics["latency_ms"]["p50"] if ref else None,
                 record=result.record)
    _finish(folder, entry)
    verdict = "kept" if kept else f"not kept: {entry['reason']}"
    ctx.log(f"[{name}] {quality_summary(metrics)}, p50 "
            f"{metrics['latency_ms']['p50']:.4f} ms -> {verdict}")
    grad_source = module if module is not None else source.source_module
    return entry, Artifact(name, module, onnx_path, path, metrics, grad_source)


def seed_stage(index: int, config: StageConfig | None = None) -> None:
    """Seed every RNG from the stage's place and seed, so a stage draws the same numbers
    whether the stages before it ran in this process or were reused by ``--resume``."""
    import random

    import numpy as np
    import torch

    seed = int(getattr(config, "seed", 0) or 0) * 1000 + index
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _skipped(index: int, config: StageConfig) -> dict:
    return {"name": f"{index:02d}-{config.kind}", "kind": config.kind,
            "config": config.to_dict(), "config_version": config.version, "kept": False,
            "reason": "skipped: no ONNX model (the stage that makes one was not kept)"}


def check_stages_against_data(stages: list[StageConfig], data: dict, resolve) -> None:
    """Catch what would fail mid-run (a missing transfer set, a student builder that does not
    import) before the run folder is created."""
    for index, config in enumerate(stages, start=1):
        preflight = spec_for(config).preflight
        if preflight is None:
            continue
        try:
            preflight(config, data, resolve)
        except ValueError as exc:
            raise ValueError(f"stage {index} ({exc})" if str(exc).startswith(config.kind)
                             else f"stage {index} ({config.kind}): {exc}") from exc


def prepare_out_dir(out_dir: Path, resume: bool, inputs: dict) -> None:
    """The run folder: new, empty, or (``--resume``) an edgepack run made from the same
    ``inputs``, locked for this run (:func:`open_run_folder`); a killed run's stale scratch
    folders are removed."""
    open_run_folder(out_dir, resume, inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".scratch.*"):
        shutil.rmtree(stale, ignore_errors=True)


@distributed.leads
@releases_run_folders
def run_pipeline(model: nn.Module, stages: list[StageConfig], out_dir, data: dict, *,
                 tolerance: float = 0.01, bench_config: BenchConfig | None = None,
                 providers: tuple = ("cpu",), robustness: RobustnessConfig | None = None,
                 resume: bool = False, progress: bool = True, recipe=None,
                 base_dir: Path | None = None, log: Callable[[str], None] = stderr_log,
                 metric: MetricSpec | None = None, privacy=None) -> dict:
    """Run ``stages`` on ``model``, measuring each; write the run folder; return the report.

    Under torchrun call it on every rank: rank 0 writes the run, every rank returns its report.

    ``data``: ``{"train", "calibration", "evaluation"[, "transfer", "validation"]}``, each an
    iterable of ``(inputs, labels)`` batches (``transfer``: input batches); inputs are one
    tensor, or a tuple of tensors for several-input models. ``metric`` (default: accuracy)
    says how quality is measured and judged (:mod:`edgepack.pipeline.quality`): ``"embedding"``
    compares every artifact's outputs with the teacher's on the evaluation set.
    ``robustness``: the attacks and attribution-drift check run on every row
    (:mod:`edgepack.pipeline.robustness_probe`). ``privacy``: a
    :class:`edgepack.pipeline.privacy_probe.PrivacySetup`: membership inference on every row
    (the provider gives ``non_members``) and which DP guarantee holds for which artifact.
    """
    from edgepack.bench.envinfo import environment
    from edgepack.pipeline.recipe import check_stage_order, to_toml
    from edgepack.pipeline.user_code import resolver
    from edgepack.pipeline.teacher import build_model

    load_stages()
    crew = distributed.join()
    if not crew.is_main:
        return _follow(crew, model, stages, data, tolerance, resume, base_dir, log)
    bench_config = bench_config or BenchConfig()
    check_stage_order(stages)
    check_providers(providers)
    resolve = resolver(base_dir, what="student builder")
    check_stages_against_data(stages, data, resolve)
    if privacy is not None:
        from edgepack.pipeline.privacy_probe import check_privacy_data

        check_privacy_data(privacy.config, data)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, resume, run_inputs(recipe, stages, model))
    crew.share_teacher(model)
    arrays = eval_arrays(data)
    metric = metric or MetricSpec()
    with tempfile.TemporaryDirectory(prefix=".scratch.", dir=out_dir) as scratch:
        # Scratch exports (to time torch stages) use the export stage's own settings, so
        # every model in one comparison has the same input names and exporter.
        export_config = next((s for s in stages if isinstance(s, ExportConfig)), ExportConfig())
        ctx = PipelineContext(
            out_dir=out_dir, data=data, example_inputs=rows(arrays["inputs_torch"], 0, 1),
            eval_arrays=arrays, tolerance=tolerance, bench=bench_config, teacher=model.eval(),
            scratch=Path(scratch), providers=tuple(providers),
            robustness=robustness or RobustnessConfig(),
            bench_export=dataclasses.replace(export_config, fail_on_mismatch=True),
            resume=resume, progress=progress, base_dir=base_dir,
            build=lambda spec, args: build_model(spec, args, base_dir), log=log, crew=crew,
            metric=metric, reference=teacher_embeddings(model, arrays["inputs_torch"])
            if metric.embedding else None, privacy=privacy)
        seed_stage(0)
        teacher_entry, current = measure_teacher(ctx, model)
        entries = []
        for index, config in enumerate(stages, start=1):
            if spec_for(config).consumes == "onnx" and current.module is not None:
                entries.append(_skipped(index, config))
                continue
            entry, candidate = run_stage(ctx, index, config, current)
            entries.append(entry)
            if entry.get("kept"):
                current = candidate
                crew.share_kept(index, current)
    report = {"edgepack_version": _version(), "name": recipe.name if recipe else "pipeline",
              "env": environment(), "tolerance": tolerance, "metric": metric.to_dict(),
              "bench": {**bench_config.to_dict(), "providers": list(providers)},
              "robustness": ctx.robustness.to_dict(),
              "teacher": teacher_entry, "stages": entries,
              **privacy_report(privacy, entries),
              "final_artifact": str(current.file.relative_to(out_dir)) if current.file else None}
    report["outcome"] = run_outcome(stages, entries, report["final_artifact"],
                                    teacher_entry.get("artifact"))
    write_outputs(out_dir, report, to_toml(recipe) if recipe is not None else None)
    crew.finish(report)
    return report


def privacy_report(privacy, entries: list[dict]) -> dict:
    """The report's ``privacy`` key: the settings and each artifact's guarantee ({} when the
    run has neither membership attacks nor a DP teacher)."""
    if privacy is None or not privacy.reported:
        return {}
    from edgepack.pipeline.private_recipe import guarantees

    return {"privacy": {**privacy.config.to_dict(), "dp": privacy.dp_record,
                        "public_data": list(privacy.public),
                        "guarantees": guarantees(privacy.dp_record, {"name": "teacher"},
                                                 entries, privacy.public)}}


def _follow(crew, model, stages, data, tolerance, resume, base_dir, log) -> dict:
    """A rank other than 0: train each torch stage with rank 0, adopt what it keeps, write
    nothing; return rank 0's report."""
    from edgepack.pipeline.teacher import build_model

    arrays = eval_arrays(data)
    ctx = PipelineContext(
        out_dir=Path(tempfile.gettempdir()), data=data,
        example_inputs=rows(arrays["inputs_torch"], 0, 1),
        eval_arrays=arrays, tolerance=tolerance, bench=BenchConfig(), teacher=model.eval(),
        scratch=Path(tempfile.gettempdir()), resume=resume, progress=False, base_dir=base_dir,
        build=lambda spec, args: build_model(spec, args, base_dir), log=log, crew=crew)
    return crew.follow(model, stages, lambda config, module, name, folder: stage_input(
        ctx, config, Artifact(name, module), folder), log)


def _version() -> str:
    from edgepack import __version__

    return __version__
