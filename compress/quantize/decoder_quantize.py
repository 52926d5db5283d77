"""The quantize stage for decoder LLMs: every candidate made, judged and recorded; the
fastest that keeps the quality kept.

int4 on a CPU is not always a win: MatMulNBits can be slower than fp32 (onnxruntime#23004),
and accuracy level 4 (int8 activations) is often the fastest but changes greedy tokens
silently (onnxruntime#29849). So nothing is assumed; on this machine, for the model at hand:

1. the fp32 input's answers are computed once (:func:`edgepack.bench.lm_quality.lm_reference`:
   teacher-forced top-1 and perplexity on held-out token windows, greedy continuations of
   fixed prompts);
2. each candidate (:mod:`.decoder_candidates`) is quantized, candidates differing only in
   accuracy level sharing one quantization, timed on a short first probe beside the input
   (one far slower than the input, below :data:`PROBE_MIN_SPEEDUP`, can never be chosen:
   it is recorded and not judged further), and judged against that reference by the gate
   (:class:`LMGate`: perplexity ratio, top-1 agreement, greedy agreement recorded;
   :mod:`.decoder_judge`);
3. those that pass are timed together with the input, interleaved
   (:func:`edgepack.bench.generation.measure_generation`, decode tokens/s at batch 1);
4. the fastest passing candidate that is faster than its input is written to ``out_path``.

Steps 2-4 are the search every quantize path runs (:mod:`.selection`), with the probe and the
first look on a quarter of the windows switched on.

The record lists every candidate with its figures and why it lost; the stage refuses
(:class:`QuantizationCheckError`, exit 1) when none passes, naming the best figure reached.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import onnx

from edgepack.bench.decoder import Decoder
from edgepack.bench.lm_quality import LMGate, lm_reference
from edgepack.bench.session import SessionOptions
from edgepack.compress.quantize.decoder_candidates import (DecoderCandidate,
                                                           default_decoder_candidates,
                                                           quantization_key)
from edgepack.compress.quantize.decoder_judge import LMJudge, screen_windows
from edgepack.compress.quantize.methods import quantize_into
from edgepack.compress.quantize.methods._weight_only import decoder_feeds, set_accuracy_level
from edgepack.compress.quantize.quantize_config import QuantizationCheckError
from edgepack.compress.quantize.selection import (Made, Outcome, Probe, SearchOptions, Timing,
                                                  Tried, select)
from edgepack.core.files import atomic_path, check_not_input, check_output_file
from edgepack.core.onnx_files import check_onnx_file, model_size_bytes
from edgepack.core.output_paths import mark_onnx_file
from edgepack.core.registry import settings_dict
from edgepack.core.stage import StageResult

# A first probe (2 rounds of 8 decode steps) slower than this share of the input's speed
# rules a candidate out before its quality is judged: it cannot win (the final choice needs
# > 1.0x) and the margin leaves room for a probe's noise. Level-0 MatMulNBits and float zero
# points run at 0.1x-0.3x on AVX2 (docs/llm.md): judging them cost most of the stage's time.
PROBE_MIN_SPEEDUP = 0.8
PROBE_TOKENS, PROBE_ROUNDS = 8, 2


def _generation_stats(decoders: list[Decoder], prompt: list[int], new_tokens: int,
                      rounds: int) -> list:
    """Decode figures of ``decoders``, timed interleaved (one place, so tests can fake it)."""
    from edgepack.bench.generation import measure_generation

    return measure_generation(decoders, prompt, new_tokens=new_tokens, rounds=rounds)


def _check_inputs(model_path: Path, out_path, keep_failed, eval_windows, prompts,
                  candidates) -> tuple[Path, Path | None]:
    check_onnx_file(model_path)
    out_path = check_output_file(out_path)
    check_not_input(out_path, [model_path], "output")
    if keep_failed is not None:
        keep_failed = check_output_file(keep_failed)
        check_not_input(keep_failed, [model_path, out_path], "keep_failed")
    if not eval_windows:
        raise ValueError("quantize_decoder needs eval_windows: held-out token windows the "
                         "quality gate measures perplexity and top-1 agreement on")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("quantize_decoder needs prompts (non-empty token lists) for the "
                         "greedy agreement and the timing")
    if not candidates:
        raise ValueError("quantize_decoder: no candidates to try")
    return out_path, keep_failed


def _entry(candidate: DecoderCandidate) -> dict:
    return {"label": candidate.label, "method": candidate.method,
            "settings": settings_dict(candidate.settings)}


def _by_quantization(candidates: list[DecoderCandidate]) -> list[DecoderCandidate]:
    """The candidates in their order, those sharing one quantization side by side."""
    groups: dict[tuple, list[DecoderCandidate]] = {}
    for candidate in candidates:
        groups.setdefault(quantization_key(candidate), []).append(candidate)
    return [candidate for group in groups.values() for candidate in group]


class _Maker:
    """Makes the candidates' files in one scratch folder (one quantization per key, the
    others of a key with their own accuracy level), and times them against the input."""

    def __init__(self, model_path: Path, work: Path, feeds, timing: SessionOptions,
                 prompt: list[int]):
        self.model_path, self.work, self.feeds = model_path, work, feeds
        self.timing, self.prompt = timing, prompt
        self.made: dict[tuple, tuple[Path | str, int]] = {}   # key: (file or why not, uses)
        self._input_decoder: Decoder | None = None   # the probes' reference, made once

    def make(self, index: int, candidate: DecoderCandidate) -> Made | str:
        key = quantization_key(candidate)
        if key not in self.made:
            base = self.work / f"q{len(self.made)}.onnx"
            self.made[key] = (self._quantize(candidate, base) or base, 0)
        base, uses = self.made[key]
        self.made[key] = (base, uses + 1)
        if isinstance(base, str):
            return base
        path = base if uses == 0 else self._with_level(base, candidate, uses)
        return Made(path, figures={"size_bytes": model_size_bytes(path)})

    def _quantize(self, candidate: DecoderCandidate, target: Path) -> str:
        """Make the candidate's file; returns why it could not be made ("" when it was)."""
        if candidate.needs_calibration and not self.feeds:
            return "it reads calibration windows and none were given (calibration_windows=...)"
        try:
            quantize_into(self.model_path, target, candidate.method, candidate.settings,
                          feeds=self.feeds if candidate.needs_calibration else ())
        except ValueError as exc:   # settings this model cannot take (e.g. GPTQ's blocks)
            return str(exc).splitlines()[0]
        return ""

    def _with_level(self, base: Path, candidate: DecoderCandidate, position: int) -> Path:
        """The base quantization with this candidate's accuracy level."""
        model = onnx.load(str(base))
        set_accuracy_level(model, candidate.settings.accuracy_level)
        path = base.with_name(f"{base.stem}-{position}.onnx")
        onnx.save(model, str(path))
        return path

    def probe(self, made: Made) -> float:
        """The candidate's decode speed over the input's on a short interleaved probe."""
        if self._input_decoder is None:
            self._input_decoder = Decoder(self.model_path, self.timing)
        stats = _generation_stats([self._input_decoder, Decoder(made.path, self.timing)],
                                  self.prompt, PROBE_TOKENS, PROBE_ROUNDS)
        return stats[1].decode_tokens_per_s / stats[0].decode_tokens_per_s

    def timer(self, new_tokens: int, rounds: int):
        """Times the passing candidates with the input, interleaved."""
        def time(passing: list[Tried]) -> Timing:
            decoders = [Decoder(self.model_path, self.timing)]
            decoders += [Decoder(t.made.path, self.timing) for t in passing]
            stats = _generation_stats(decoders, self.prompt, new_tokens, rounds)
            base = stats[0].decode_tokens_per_s
            figures = [{"decode_tokens_per_s": s.decode_tokens_per_s,
                        "prefill_ms_p50": s.prefill_ms["p50"],
                        "speedup": s.decode_tokens_per_s / base} for s in stats[1:]]
            return Timing({"decode_tokens_per_s": base,
                           "prefill_ms_p50": stats[0].prefill_ms["p50"]},
                          figures, [f["speedup"] for f in figures], what="decode tokens/s")
        return time


def sentence_windows(model_path, length: int = 48, prompts: int = 2
                     ) -> tuple[list[list[int]], list[list[int]]]:
    """Held-out windows and prompts without data: the built-in English sentences
    (:data:`edgepack.compress.quantize.text_inputs.SENTENCES`) tokenized with the tokenizer.json beside
    the model, cut into windows of ``length`` tokens; the last ``prompts`` windows give the
    prompts (their first quarter)."""
    from edgepack.compress.quantize.text_inputs import SENTENCES, tokenizer_beside

    model_path = Path(model_path)
    tokenizer = tokenizer_beside(model_path)
    if tokenizer is None:
        raise ValueError(f"quantizing the decoder {model_path} without data needs the "
                         f"tokenizer.json beside it (and the tokenizers package) to turn the "
                         f"built-in sentences into tokens; none was found")
    tokenizer.no_padding()
    ids = [t for e in tokenizer.encode_batch(list(SENTENCES)) for t in e.ids]
    count = len(ids) // length
    if count < prompts + 2:
        raise ValueError(f"the built-in sentences make {count} windows of {length} tokens "
                         f"with {model_path.parent / 'tokenizer.json'}; {prompts + 2} needed")
    windows = [ids[i * length:(i + 1) * length] for i in range(count)]
    return windows[:-prompts], [w[:max(1, length // 4)] for w in windows[-prompts:]]


def _figures(entry: dict) -> str:
    return (f"perplexity ratio {entry['perplexity_ratio']:.4f}, top-1 agreement "
            f"{entry['top1_agreement']:.4f}, greedy agreement {entry['greedy_agreement']:.4f}")


def _refuse(outcome: Outcome, gate: LMGate, record: dict, keep_failed: Path | None):
    """No candidate kept: name the best figure reached; keep the best refused one if asked."""
    entries, passing = outcome.entries, outcome.passing
    if passing:
        best = outcome.fastest()
        message = (f"{len(passing)} of {len(entries)} candidates passed the quality "
                   f"gate but none is faster than the input (best {best.entry['label']}: "
                   f"{best.speedup:.2f}x its decode tokens/s)")
    else:
        best = outcome.best_failing()
        if best is None:
            made = any(e["verdict"] != "not made" for e in entries)
            head = ("no candidate was judged: each one made was far slower than the input on "
                    "a first probe" if made else "no candidate could be made")
            raise QuantizationCheckError(head + ": " + "; ".join(
                f"{e['label']}: {e['why']}" for e in entries))
        message = (f"no candidate passed the quality gate (perplexity ratio <= "
                   f"{gate.max_perplexity_ratio}, top-1 agreement >= "
                   f"{gate.min_top1_agreement}, greedy agreement >= "
                   f"{gate.min_greedy_agreement}; {len(entries)} tried); the best was "
                   f"{best.entry['label']}: {_figures(best.entry)}")
    if keep_failed is not None:
        _write(best.made.path, keep_failed, "quantize (refused by its check)")
        message += f" (the refused model is kept at {keep_failed})"
    error = QuantizationCheckError(message)
    error.figures = record
    raise error


def _write(source: Path, target: Path, what: str) -> None:
    """Copy ``source`` to ``target`` atomically, marked as edgepack's."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
        mark_onnx_file(tmp, what)


def _why(chosen: dict, entries: list[dict]) -> str:
    lost = [f"{e['label']}: {e['verdict']}" + (f" ({e['why']})" if e.get("why") else "")
            for e in entries if e is not chosen]
    speed = (f"is the fastest passing one, {chosen['speedup']:.2f}x its input's decode "
             f"tokens/s" if "speedup" in chosen else "is the first passing one (not timed: "
             "speed check off)")
    return (f"{chosen['label']} passed the quality gate ({_figures(chosen)}) and "
            + speed + ("; " if lost else "") + "; ".join(lost))


def quantize_decoder(model_path, out_path, *, eval_windows: list[list[int]],
                     prompts: list[list[int]], calibration_windows: list[list[int]] | None = None,
                     candidates: list[DecoderCandidate] | None = None,
                     gate: LMGate = LMGate(), threads: int = 1, new_tokens: int = 16,
                     rounds: int = 3, keep_failed=None, work_dir=None,
                     judge_threads: int | None = None, speed_check: bool = True,
                     allow_slower: bool = False) -> StageResult:
    """Quantize the decoder at ``model_path`` by every candidate (default:
    :func:`default_decoder_candidates`), keep the fastest that passes ``gate`` on
    ``eval_windows`` and ``prompts`` and is faster than the input, and write it to
    ``out_path``. ``calibration_windows``: token windows for GPTQ (run with an empty KV
    cache). ``threads``: intra-op threads for the timing; ``judge_threads``: for judging
    quality (None: every core; the figures do not depend on it); ``new_tokens``: greedy
    tokens per prompt, judged and timed; ``rounds``: interleaved timing rounds;
    ``keep_failed``: where to write the best refused candidate; ``work_dir``: scratch
    folder (default: a temporary one beside ``out_path``); ``speed_check`` off: nothing is
    timed and the first passing candidate is kept; ``allow_slower``: the fastest passing one
    is kept even when it is not faster than the input. Raises
    :class:`QuantizationCheckError` (exit 1) when no candidate is kept."""
    model_path = Path(model_path)
    candidates = default_decoder_candidates() if candidates is None else list(candidates)
    out_path, keep_failed = _check_inputs(model_path, out_path, keep_failed, eval_windows,
                                          prompts, candidates)
    options = SessionOptions(threads=judge_threads or os.cpu_count() or 1)
    reference = lm_reference(Decoder(model_path, options), eval_windows, prompts, new_tokens)
    feeds = decoder_feeds(onnx.load(str(model_path), load_external_data=False),
                          calibration_windows) if calibration_windows else []
    out_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(work_dir) if work_dir is not None else out_path.parent
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-decoder.", dir=scratch) as tmp:
        maker = _Maker(model_path, Path(tmp), feeds, SessionOptions(threads=threads), prompts[0])
        judge = LMJudge(gate, reference, eval_windows, prompts, new_tokens, options,
                        screen_windows(model_path, options, eval_windows, prompts, new_tokens))
        probe = Probe(maker.probe, PROBE_MIN_SPEEDUP, f"decode tokens/s over {PROBE_ROUNDS} x "
                                                      f"{PROBE_TOKENS} tokens")
        search = SearchOptions(probe=probe if speed_check else None,
                               screen=judge.screen if judge.screen_windows else None,
                               timed=speed_check, must_be_faster=not allow_slower)
        outcome = select(_by_quantization(candidates), maker.make, judge,
                         maker.timer(new_tokens, rounds), search, _entry)
        record = _record(model_path, reference, gate, outcome, options, eval_windows, prompts,
                         calibration_windows, threads, new_tokens, rounds)
        record["input"].update(outcome.input_timing)
        chosen = outcome.chosen
        if chosen is None:
            _refuse(outcome, gate, record, keep_failed)
        _write(chosen.made.path, out_path, f"quantize {chosen.entry['label']}")
    record.update(chosen=chosen.entry["label"], why=_why(chosen.entry, outcome.entries),
                  mode=chosen.entry["method"], size_bytes=model_size_bytes(out_path),
                  size_bytes_before=model_size_bytes(model_path))
    return StageResult(artifact=out_path, record=record)


def _record(model_path, reference, gate, outcome, options, eval_windows, prompts,
            calibration_windows, threads, new_tokens, rounds) -> dict:
    return {"kind": "quantize-decoder", "gate": dataclasses.asdict(gate),
            "input": {"path": str(model_path), "size_bytes": model_size_bytes(model_path),
                      "perplexity": reference.perplexity},
            "evaluation": {"windows": len(eval_windows),
                           "tokens": sum(len(w) for w in eval_windows),
                           "prompts": len(prompts), "new_tokens": new_tokens,
                           "calibration_windows": len(calibration_windows or [])},
            "timing": {"threads": threads, "judge_threads": options.threads,
                       "rounds": rounds, "new_tokens": new_tokens,
                       "prompt_tokens": len(prompts[0]), "batch": 1},
            "candidates": outcome.entries}


__all__ = ["DecoderCandidate", "LMGate", "default_decoder_candidates",
           "quantize_decoder", "sentence_windows"]
