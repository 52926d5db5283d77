"""The pipeline for decoder LLMs: a recipe whose ``[metric]`` kind is ``language-model``.

The chain is the same idea as for classifiers, with a language model's measures: the fp32
teacher (a transformers causal LM in torch) is exported with its KV cache
(``export-decoder``), quantized (``quantize-decoder``: int4 weight-only and int8 candidates,
the fastest passing one kept), and every stage is judged against the teacher:

- quality: perplexity on held-out windows (the data provider's ``evaluation``, never
  calibrated on) over the teacher's perplexity, teacher-forced top-1 agreement on the same
  windows, and greedy agreement on fixed prompts (the teacher's answers are computed once,
  in torch: :func:`teacher_reference`);
- speed: prefill milliseconds on a ``prompt_tokens`` prompt, decode tokens/s and per-token
  latency, timed interleaved with the stage's input (:func:`edgepack.bench.generation.measure_generation`);
- a stage is kept when its quality is within ``[metric]``'s thresholds and, for a stage that
  promises speed, its decode is faster than its input's.

Stage folders, records, ``--resume`` and the manifest work as in the main pipeline
(:mod:`edgepack.pipeline.resume`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgepack.bench.lm_quality import LMReference, lm_quality, log_likelihoods, perplexity_of
from edgepack.core.files import atomic_write_json, sha256_file
from edgepack.core.stage import StageConfig, StageInput, spec_for
from edgepack.pipeline.outcome import failure_entry, judged_entry, run_outcome
from edgepack.pipeline.quality import MetricSpec
from edgepack.pipeline.resume import RECORD, clear_unfinished, load_done_stage
from edgepack.pipeline.run_inputs import run_inputs
from edgepack.pipeline.run_lock import releases_run_folders
from edgepack.export.decoder_parity import torch_greedy_steps

@dataclass
class DecoderRun:
    """What every stage of one decoder run is measured with."""

    out_dir: Path
    metric: MetricSpec
    data: dict
    reference: LMReference
    prompt: list[int]            # the timed prompt: ``prompt_tokens`` held-out tokens
    threads: int
    log: Callable[[str], None]
    resume: bool = False
    progress: bool = True


def check_decoder_data(data: dict) -> None:
    """The provider must give token windows, prompts and the tokenizer folder."""
    for key in ("evaluation", "calibration", "prompts"):
        value = data.get(key)
        if not isinstance(value, list) or not value or not all(
                isinstance(w, (list, tuple)) and len(w) > 0 for w in value):
            raise ValueError(f"a language-model data provider must return {key!r} as a "
                             f"non-empty list of token-id lists (got {type(value).__name__})")
    if len(min(data["evaluation"], key=len)) < 2:
        raise ValueError("the evaluation windows must hold at least 2 tokens each")


def _torch_logits(model, window) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([list(window)])).logits[0].float().numpy()


def teacher_reference(model, windows, prompts, new_tokens: int) -> LMReference:
    """The fp32 teacher's answers in torch: top-1 per position, greedy continuations,
    perplexity (the same definitions as :mod:`edgepack.bench.lm_quality`)."""
    likelihoods, top1 = [], []
    for window in windows:
        logits = _torch_logits(model, window)
        likelihoods.append(log_likelihoods(logits, list(window)))
        top1.append(np.argmax(logits, axis=1))
    greedy = [torch_greedy_steps(model, p, new_tokens)[1] for p in prompts]
    return LMReference(top1=top1, greedy=greedy, perplexity=perplexity_of(likelihoods))


def timed_prompt(windows, length: int) -> list[int]:
    """``length`` held-out tokens, the windows joined in order."""
    stream = [int(t) for w in windows for t in w]
    if len(stream) < length:
        raise ValueError(f"[metric] prompt_tokens = {length}, but the evaluation windows hold "
                         f"{len(stream)} tokens")
    return stream[:length]


def quality_reasons(metric: MetricSpec, figures: dict) -> list[str]:
    """Why a decoder falls short of the recipe's thresholds (empty: it does not)."""
    reasons = []
    if figures["perplexity_ratio"] > metric.max_perplexity_ratio:
        reasons.append(f"perplexity {figures['perplexity_ratio']:.4f}x the teacher's > "
                       f"max_perplexity_ratio {metric.max_perplexity_ratio}")
    if figures["top1_agreement"] < metric.min_top1_agreement:
        reasons.append(f"teacher-forced top-1 agreement {figures['top1_agreement']:.4f} < "
                       f"min_top1_agreement {metric.min_top1_agreement}")
    if figures["greedy_agreement"] < metric.min_greedy_agreement:
        reasons.append(f"greedy agreement {figures['greedy_agreement']:.4f} < "
                       f"min_greedy_agreement {metric.min_greedy_agreement}")
    return reasons


def measure_stage(run: DecoderRun, path: Path, input_path: Path | None) -> dict:
    """Quality against the teacher, and generation timed interleaved with the input."""
    from edgepack.bench.generation import load_decoder, measure_generation
    from edgepack.bench.session import SessionOptions

    options = SessionOptions(threads=run.threads)
    candidate = load_decoder(path, options)
    quality = lm_quality(candidate, run.data["evaluation"], run.data["prompts"], run.reference,
                         run.metric.new_tokens)
    decoders = [candidate] + ([load_decoder(input_path, options)] if input_path else [])
    stats = measure_generation(decoders, run.prompt, run.metric.new_tokens, run.metric.rounds)
    mine = stats[0]
    figures = {**quality.to_dict(), "size_bytes": mine.size_bytes,
               "prefill_ms": mine.prefill_ms, "decode_tokens_per_s": mine.decode_tokens_per_s,
               "latency_ms": mine.token_ms, "peak_rss_mb": mine.peak_rss_mb,
               "provider": mine.provider, "threads": run.threads, "batch": 1,
               "generation": mine.to_dict()}
    if input_path:
        theirs = stats[1]
        figures["input"] = {"decode_tokens_per_s": theirs.decode_tokens_per_s,
                            "prefill_ms": theirs.prefill_ms, "size_bytes": theirs.size_bytes}
        figures["speedup"] = mine.decode_tokens_per_s / theirs.decode_tokens_per_s
    return figures


def judge_stage(run: DecoderRun, config: StageConfig, figures: dict) -> list[str]:
    """Why the stage's model is not kept, one line each (empty: it is kept)."""
    reasons = quality_reasons(run.metric, figures)
    if spec_for(config).promises_speed(config) and figures.get("speedup") is not None \
            and figures["speedup"] <= 1.0:
        reasons.append(f"not faster: decode {figures['speedup']:.2f}x its input's tokens/s")
    return reasons


def run_stage(run: DecoderRun, index: int, config: StageConfig, source,
              source_path: Path | None) -> tuple[dict, Path | None]:
    """Run (or reuse) one stage; return its entry and its artifact (None: not made)."""
    name = f"{index:02d}-{config.kind}"
    folder = run.out_dir / name
    done = load_done_stage(folder, config, run) if run.resume else None
    if done is not None:
        run.log(f"[{name}] done in an earlier run; reusing {done[1].name}")
        return done
    clear_unfinished(folder, config, run.resume)
    run.log(f"[{name}] running")
    entry = {"name": name, "kind": config.kind, "config": config.to_dict(),
             "config_version": config.version}
    spec = spec_for(config)
    given = StageInput(artifact=source, folder=folder, data=run.data, resume=run.resume,
                       progress=run.progress, metric=run.metric)
    started = time.perf_counter()
    try:
        result = spec.run(config, given)
    except spec.failures as exc:  # its record (every candidate tried) stays in the report
        entry.update(kept=False, **failure_entry(exc), failed=True,
                     record=getattr(exc, "figures", None) or {})
        atomic_write_json(folder / RECORD, entry)
        return entry, None
    path = Path(result.artifact)
    ran = time.perf_counter()
    figures = measure_stage(run, path, source_path)
    reasons = judge_stage(run, config, figures)
    kept = not reasons
    entry.update(artifact=str(path.relative_to(run.out_dir)), sha256=sha256_file(path),
                 **figures, kept=kept, **judged_entry(reasons), record=result.record,
                 seconds={"run": round(ran - started, 3),
                          "measure": round(time.perf_counter() - ran, 3)})
    atomic_write_json(folder / RECORD, entry)
    run.log(f"[{name}] perplexity {figures['perplexity']:.3f} "
            f"({figures['perplexity_ratio']:.4f}x), top-1 {figures['top1_agreement']:.3f}, "
            f"{figures['decode_tokens_per_s']:.1f} tokens/s -> "
            f"{'kept' if kept else 'not kept: ' + entry['reason']}")
    return entry, path


def _skipped(index: int, config: StageConfig) -> dict:
    return {"name": f"{index:02d}-{config.kind}", "kind": config.kind,
            "config": config.to_dict(), "config_version": config.version, "kept": False,
            "reason": "skipped: no ONNX decoder (the export stage was not kept)"}


def teacher_entry(model, reference: LMReference) -> dict:
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return {"params": int(params), "size_bytes": int(params) * 4, "dtype": "float32",
            "perplexity": reference.perplexity, "perplexity_ratio": 1.0,
            "top1_agreement": 1.0, "greedy_agreement": 1.0, "latency_ms": None,
            "note": "torch fp32: quality reference; speed is measured from the export on"}


@releases_run_folders
def run_decoder_pipeline(model, stages: list[StageConfig], out_dir, data: dict,
                         metric: MetricSpec, *, threads: int = 1, resume: bool = False,
                         progress: bool = True, recipe=None,
                         log: Callable[[str], None] = print) -> dict:
    """Run the decoder ``stages`` on ``model`` into ``out_dir``; return the report."""
    from edgepack.bench.envinfo import environment
    from edgepack.pipeline.decoder_report import write_decoder_outputs
    from edgepack.pipeline.recipe import check_decoder_stages, check_stage_order, to_toml
    from edgepack.pipeline.run import _version, prepare_out_dir
    from edgepack.pipeline.stage_modules import load_stages

    load_stages()
    check_decoder_stages(stages)
    check_stage_order(stages)
    check_decoder_data(data)
    out_dir = Path(out_dir)
    prompt = timed_prompt(data["evaluation"], metric.prompt_tokens)
    prepare_out_dir(out_dir, resume, run_inputs(recipe, stages, model))
    log(f"teacher: measuring the fp32 model on {len(data['evaluation'])} held-out windows "
        f"and {len(data['prompts'])} prompts (torch)")
    reference = teacher_reference(model.eval(), data["evaluation"], data["prompts"],
                                  metric.new_tokens)
    run = DecoderRun(out_dir, metric, data, reference, prompt, threads, log, resume, progress)
    entries, current, current_path = [], model, None
    for index, config in enumerate(stages, start=1):
        if spec_for(config).consumes == "onnx" and current_path is None:
            entries.append(_skipped(index, config))
            continue
        entry, path = run_stage(run, index, config, current, current_path)
        entries.append(entry)
        if entry.get("kept") and path is not None:
            current, current_path = path, path
    report = {"edgepack_version": _version(), "name": recipe.name if recipe else "decoder",
              "env": environment(), "metric": metric.to_dict(),
              "bench": {"providers": ["cpu"], "threads": threads, "batch": 1,
                        "prompt_tokens": metric.prompt_tokens, "new_tokens": metric.new_tokens,
                        "rounds": metric.rounds},
              "teacher": teacher_entry(model, reference), "stages": entries,
              "final_artifact": str(current_path.relative_to(out_dir)) if current_path else None}
    report["outcome"] = run_outcome(stages, entries, report["final_artifact"])
    write_decoder_outputs(out_dir, report, to_toml(recipe) if recipe is not None else None)
    return report


__all__ = ["run_decoder_pipeline", "teacher_reference"]
