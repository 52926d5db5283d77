"""The ``language-model`` metric kind: for decoder LLMs with a KV cache.

The fp32 teacher's answers are computed once, in torch, on the data provider's held-out
token windows (never calibrated on) and fixed prompts: its top-1 token at every position,
its greedy continuations and its perplexity. Each artifact's **perplexity** on the same
windows is divided by the teacher's; its **teacher-forced top-1 agreement** and its **greedy
agreement** (the share of the teacher's greedy continuation reproduced before the first
different token) are measured too, and judged by one gate
(:class:`edgepack.bench.lm_quality.LMGate`, the one the decoder quantize search uses: these
settings are that gate). Generation speed is a ``prompt_tokens`` prefill then ``new_tokens``
decode steps, ``rounds`` times, interleaved with the stage's input; a stage that promises
speed is kept only when it decodes faster than its input.

The data provider returns token windows, not batches: ``evaluation`` and ``calibration``
(lists of token-id lists), ``prompts`` and ``tokenizer_dir`` (the folder holding the
model's ``tokenizer.json``). Only the stages that know a KV-cache decoder fit this kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgepack.bench.lm_quality import (LMGate, LMReference, lm_quality, log_likelihoods,
                                       perplexity_of)
from edgepack.export.decoder_parity import torch_greedy_steps
from edgepack.pipeline.decoder_report import decoder_measured, decoder_plot, decoder_table
from edgepack.pipeline.keep_rule import promises_speed
from edgepack.pipeline.measure import Artifact
from edgepack.pipeline.metric_kinds import METRIC_KINDS, MetricKind

# (low, high) of the timing budgets, stated in their error messages
BUDGETS = {"prompt_tokens": (1, 8192), "new_tokens": (1, 4096), "rounds": (1, 100)}


@dataclass(frozen=True)
class LanguageModelMetric(LMGate):
    """``[metric] kind = "language-model"``: the gate (:class:`LMGate`'s thresholds) and
    the generation timed per stage."""

    kind: ClassVar[str] = "language-model"
    prompt_tokens: int = 128             # the timed prefill's length
    new_tokens: int = 32                 # decode steps timed per round (and greedy tokens)
    rounds: int = 3                      # interleaved timing rounds

    def __post_init__(self):
        super().__post_init__()
        for name, (low, high) in BUDGETS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"[metric] {name} must be an integer in [{low}, {high}], got "
                                 f"{value!r}")


@dataclass
class LanguageModelState:
    """What every stage is measured with: the teacher's answers and the timed prompt."""

    reference: LMReference
    prompt: list[int]


def fits(stage_spec) -> bool:
    return stage_spec.for_decoders


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


def timed_prompt(windows, length: int) -> list[int]:
    """``length`` held-out tokens, the windows joined in order."""
    stream = [int(t) for w in windows for t in w]
    if len(stream) < length:
        raise ValueError(f"[metric] prompt_tokens = {length}, but the evaluation windows hold "
                         f"{len(stream)} tokens")
    return stream[:length]


def check(settings: LanguageModelMetric, data: dict) -> None:
    """What can be checked before the run folder exists."""
    check_decoder_data(data)
    timed_prompt(data["evaluation"], settings.prompt_tokens)


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


def summary(figures: dict) -> str:
    return (f"perplexity {figures['perplexity']:.3f} ({figures['perplexity_ratio']:.4f}x), "
            f"top-1 {figures['top1_agreement']:.3f}, "
            f"{figures.get('decode_tokens_per_s') or 0:.1f} tokens/s")


def prepare(run, teacher) -> tuple[dict, Artifact]:
    """The teacher's answers (torch, fp32: the quality reference; speed is measured from
    the export on) and its row."""
    settings, data = run.metric, run.data
    run.log(f"teacher: measuring the fp32 model on {len(data['evaluation'])} held-out windows "
            f"and {len(data['prompts'])} prompts (torch)")
    reference = teacher_reference(teacher.eval(), data["evaluation"], data["prompts"],
                                  settings.new_tokens)
    run.state = LanguageModelState(reference, timed_prompt(data["evaluation"],
                                                           settings.prompt_tokens))
    params = sum(p.numel() for p in {id(p): p for p in teacher.parameters()}.values())
    entry = {"name": "teacher", "params": int(params), "size_bytes": int(params) * 4,
             "dtype": "float32", "perplexity": reference.perplexity, "perplexity_ratio": 1.0,
             "top1_agreement": 1.0, "greedy_agreement": 1.0, "latency_ms": None,
             "note": "torch fp32: quality reference; speed is measured from the export on"}
    return entry, Artifact("teacher", module=teacher)


def measure(run, candidate: Artifact, source: Artifact) -> dict:
    """Quality against the teacher, and generation timed interleaved with the input."""
    from edgepack.bench.generation import load_decoder, measure_generation
    from edgepack.bench.session import SessionOptions

    settings, threads = run.metric, run.bench.threads
    options = SessionOptions(threads=threads)
    decoder = load_decoder(candidate.onnx_path, options)
    quality = lm_quality(decoder, run.data["evaluation"], run.data["prompts"],
                         run.state.reference, settings.new_tokens)
    decoders = [decoder] + ([load_decoder(source.onnx_path, options)]
                            if source.module is None else [])
    stats = measure_generation(decoders, run.state.prompt, settings.new_tokens, settings.rounds)
    mine = stats[0]
    figures = {**quality.to_dict(), "size_bytes": mine.size_bytes,
               "prefill_ms": mine.prefill_ms, "decode_tokens_per_s": mine.decode_tokens_per_s,
               "latency_ms": mine.token_ms, "peak_rss_mb": mine.peak_rss_mb,
               "provider": mine.provider, "threads": threads, "batch": 1,
               "generation": mine.to_dict()}
    if len(stats) > 1:
        theirs = stats[1]
        figures["input"] = {"decode_tokens_per_s": theirs.decode_tokens_per_s,
                            "prefill_ms": theirs.prefill_ms, "size_bytes": theirs.size_bytes}
        figures["speedup"] = mine.decode_tokens_per_s / theirs.decode_tokens_per_s
    return figures


def judge(run, config, source: Artifact, candidate: Artifact, figures: dict) -> list[str]:
    """The gate's failures, and "not faster" for a stage that promises speed."""
    reasons = run.metric.failures(figures)
    if promises_speed(config) and figures.get("speedup") is not None \
            and figures["speedup"] <= 1.0:
        reasons.append(f"not faster: decode {figures['speedup']:.2f}x its input's tokens/s")
    return reasons


def table(rows: list[dict], markdown: bool = False) -> str:
    return decoder_table(rows, markdown)


def markdown(report: dict, rows: list[dict]) -> str:
    return ""


def plot(report: dict, rows: list[dict], out_dir: Path) -> None:
    decoder_plot(report, out_dir / "tradeoff.png")


METRIC_KINDS.register(MetricKind(
    "language-model", LanguageModelMetric, prepare=prepare, measure=measure, judge=judge,
    summary=summary, table=table, markdown=markdown, plot=plot, fits=fits, check=check,
    measured=decoder_measured,
    artifact_noun="decoder", described_as="a decoder LLM", order=30))

__all__ = ["LanguageModelMetric", "LanguageModelState", "check", "check_decoder_data",
           "teacher_reference", "timed_prompt"]
