"""The pipeline runner, one for every metric kind: stages in order, each measured, kept only
if it earns its place.

A pipeline is data: a list of stage configs. Each stage takes the last *kept* artifact and
makes a candidate, through the adapter its module registered (:mod:`edgepack.core.stage`).
The recipe's metric kind (:mod:`edgepack.pipeline.metric_kinds`: accuracy, embedding,
language model) computes its reference once, measures the candidate beside its input and
judges it; a stage that is not kept is still reported, with its numbers and every reason,
and the next stage starts from the last kept artifact. ``--resume`` reuses finished stages
(:mod:`edgepack.pipeline.resume`); a run that keeps nothing deployable says so
(:mod:`edgepack.pipeline.outcome`).

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
from edgepack.pipeline import distributed
from edgepack.pipeline.keep_rule import stage_tolerance
from edgepack.pipeline.outcome import failure_entry, judged_entry, run_outcome
from edgepack.pipeline.measure import (Artifact, PipelineContext, check_providers,
                                       export_for_bench, stderr_log, use_batches)
from edgepack.pipeline.metric_kinds import check_stages_fit, kind_of, metric_to_dict
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
                      eval_inputs=(ctx.eval_arrays or {}).get("inputs_torch"),
                      teacher=ctx.teacher if source.name != "teacher" else None,
                      tolerance=stage_tolerance(ctx.tolerance, config), resume=ctx.resume,
                      progress=ctx.progress, build=ctx.build, checkpoint=folder / CHECKPOINT,
                      metric=ctx.metric)


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
    except spec.failures as exc:   # its record (every candidate tried) stays in the report
        entry.update(kept=False, **failure_entry(exc), failed=True,
                     record=getattr(exc, "figures", None) or {})
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
    grad_source = module if module is not None else source.source_module
    candidate = Artifact(name, module, onnx_path, path, {}, grad_source)
    kind = kind_of(ctx.metric)
    figures = kind.measure(ctx, candidate, source)
    reasons = kind.judge(ctx, config, source, candidate, figures)
    kept = not reasons
    entry["seconds"]["measure"] = round(time.perf_counter() - ran, 3)  # bench, attacks, judge
    entry.update(**figures, kept=kept, **judged_entry(reasons), record=result.record)
    _finish(folder, entry)
    verdict = "kept" if kept else f"not kept: {entry['reason']}"
    ctx.log(f"[{name}] {kind.summary(figures)}{_p50(figures)} -> {verdict}")
    candidate.metrics = {k: v for k, v in figures.items() if k not in ("input", "speedup")}
    return entry, candidate


def _p50(figures: dict) -> str:
    latency = figures.get("latency_ms") or {}
    return f", p50 {latency['p50']:.4f} ms" if latency.get("p50") is not None else ""


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


def _skipped(index: int, config: StageConfig, noun: str) -> dict:
    return {"name": f"{index:02d}-{config.kind}", "kind": config.kind,
            "config": config.to_dict(), "config_version": config.version, "kept": False,
            "reason": f"skipped: no ONNX {noun} (the stage that makes one was not kept)"}


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
                 metric=None, privacy=None) -> dict:
    """Run ``stages`` on ``model``, measuring each; write the run folder; return the report.

    Under torchrun call it on every rank: rank 0 writes the run, every rank returns its report.

    ``metric``: the ``[metric]`` settings (:func:`edgepack.pipeline.metric_kinds.
    metric_settings`; default: accuracy), which say what ``data`` holds and how every
    artifact is measured and judged. Accuracy and embedding: ``{"train", "calibration",
    "evaluation"[, "transfer", "validation"]}``, each an iterable of ``(inputs, labels)``
    batches (``transfer``: input batches); inputs are one tensor, or a tuple of tensors for
    several-input models. Language model: token windows, prompts and the tokenizer folder.
    ``robustness``: the attacks and attribution-drift check run on every row of an accuracy
    run (:mod:`edgepack.pipeline.robustness_probe`). ``privacy``: a
    :class:`edgepack.pipeline.privacy_probe.PrivacySetup`: membership inference on every row
    (the provider gives ``non_members``) and which DP guarantee holds for which artifact.
    """
    from edgepack.bench.envinfo import environment
    from edgepack.pipeline.recipe import to_toml

    load_stages()
    crew = distributed.join()
    if not crew.is_main:
        return _follow(crew, model, stages, data, tolerance, resume, base_dir, log)
    kind = kind_of(metric)
    bench_config = bench_config or BenchConfig()
    _check_before_writing(stages, data, metric, providers, privacy, base_dir)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, resume, run_inputs(recipe, stages, model))
    crew.share_teacher(model)
    with tempfile.TemporaryDirectory(prefix=".scratch.", dir=out_dir) as scratch:
        ctx = _context(model, stages, out_dir, data, Path(scratch), metric, tolerance,
                       bench_config, providers, robustness, resume, progress, base_dir, log,
                       crew, privacy)
        seed_stage(0)
        teacher_entry, current = kind.prepare(ctx, model.eval())
        entries = []
        for index, config in enumerate(stages, start=1):
            if spec_for(config).consumes == "onnx" and current.module is not None:
                entries.append(_skipped(index, config, kind.artifact_noun))
                continue
            entry, candidate = run_stage(ctx, index, config, current)
            entries.append(entry)
            if entry.get("kept"):
                current = candidate
                crew.share_kept(index, current)
    report = {"edgepack_version": _version(), "name": recipe.name if recipe else "pipeline",
              "env": environment(), "tolerance": tolerance, "metric": metric_to_dict(ctx.metric),
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


def _check_before_writing(stages, data, metric, providers, privacy, base_dir) -> None:
    """Everything that can be known wrong before the run folder exists."""
    from edgepack.pipeline.recipe import check_stage_order
    from edgepack.pipeline.user_code import resolver

    check_stage_order(stages)
    check_stages_fit(stages, metric)
    kind_of(metric).check(metric, data)
    check_providers(providers)
    check_stages_against_data(stages, data, resolver(base_dir, what="student builder"))
    if privacy is not None:
        from edgepack.pipeline.privacy_probe import check_privacy_data

        check_privacy_data(privacy.config, data)


def _context(model, stages, out_dir, data, scratch, metric, tolerance, bench_config,
             providers, robustness, resume, progress, base_dir, log, crew,
             privacy) -> PipelineContext:
    """The run's context: its settings, data and folders (the metric kind adds its own)."""
    from edgepack.pipeline.metric_kinds import metric_settings
    from edgepack.pipeline.teacher import build_model

    # Scratch exports (to time torch stages) use the export stage's own settings, so every
    # model in one comparison has the same input names and exporter.
    export_config = next((s for s in stages if isinstance(s, ExportConfig)), ExportConfig())
    return PipelineContext(
        out_dir=out_dir, data=data, tolerance=tolerance, bench=bench_config,
        teacher=model.eval(), scratch=scratch,
        metric=metric if metric is not None else metric_settings(),
        providers=tuple(providers), robustness=robustness or RobustnessConfig(),
        bench_export=dataclasses.replace(export_config, fail_on_mismatch=True),
        resume=resume, progress=progress, base_dir=base_dir,
        build=lambda spec, args: build_model(spec, args, base_dir), log=log, crew=crew,
        privacy=privacy)


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

    ctx = PipelineContext(
        out_dir=Path(tempfile.gettempdir()), data=data, tolerance=tolerance,
        bench=BenchConfig(), teacher=model.eval(), scratch=Path(tempfile.gettempdir()),
        metric=None, resume=resume, progress=False, base_dir=base_dir,
        build=lambda spec, args: build_model(spec, args, base_dir), log=log, crew=crew)
    use_batches(ctx)   # ranks other than 0 train torch stages: batch-shaped data
    return crew.follow(model, stages, lambda config, module, name, folder: stage_input(
        ctx, config, Artifact(name, module), folder), log)


def _version() -> str:
    from edgepack import __version__

    return __version__
