"""One quantization attempt in a scratch folder: the candidate, then its output and speed
checks.

The method (:mod:`edgepack.compress.quantize.methods`) makes the candidate from the prepared graph;
everything after is the same for every method:

1. for a repairable (int8) method: transformer fusions first, and, latency-aware, the nodes
   ONNX Runtime's profiler shows slower in int8 are quantized again in float
   (:mod:`edgepack.compress.quantize.mixed_precision`);
2. the output check on held-out inputs (:mod:`edgepack.compress.quantize.output_check`); a failed
   check is repaired accuracy-aware, node by node (:mod:`edgepack.compress.quantize.search`);
3. the speed check against the input, and against the method's rival when it has one
   (:mod:`edgepack.compress.quantize.speed_check`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edgepack.compress.quantize.data import EvaluationSet, evaluate
from edgepack.compress.quantize.fusions import fuse_transformer, is_transformer, should_fuse
from edgepack.compress.quantize.methods import METHODS, quantize_into
from edgepack.compress.quantize.mixed_precision import by_op_type, slower_in_int8
from edgepack.compress.quantize.model_checks import (check_finite_outputs, has_quantized_ops,
                                                     speed_gate_cause)
from edgepack.compress.quantize.output_check import (OutputCheckFailed, compare_models, failures,
                                                     likely_cause, reference_outputs)
from edgepack.compress.quantize.output_check import describe as describe_outputs
from edgepack.compress.quantize.prepare import prepare
from edgepack.compress.quantize.quantize_config import QuantizeConfig
from edgepack.compress.quantize.search import accuracy_aware_quantize
from edgepack.compress.quantize.speed_check import (SpeedCheckFailed, check_beats_rival,
                                                    check_speed, speed_figures)
from edgepack.compress.quantize.text_inputs import random_ids_cause


def _rows(batches: list[dict]) -> int:
    return int(sum(next(iter(b.values())).shape[0] for b in batches))


@dataclass
class Candidate:
    """One way to quantize: a method, its resolved settings, and whether a failed output
    check is repaired by keeping the sensitive nodes in float (accuracy-aware)."""

    label: str
    method: str
    settings: Any
    accuracy_aware: bool = False


class Attempt:
    """One candidate on one model, and the checks on the result."""

    def __init__(self, model_path: Path, config: QuantizeConfig, candidate: Candidate, data,
                 tolerance, work: Path):
        self.model_path, self.config, self.data, self.work = model_path, config, data, work
        self.candidate_spec = candidate
        self.method, self.settings = candidate.method, candidate.settings
        self.spec = METHODS.get(candidate.method)
        self.tolerance = tolerance
        self.record: dict = {"held_out": {"rows": _rows(data.held_out),
                                          "source": data.held_out_source}}
        self.last: Path | None = None
        self.exclude: list[str] = []
        self.include: list[str] | None = None
        self.transformer = False
        self.reference = None

    @property
    def repairable(self) -> bool:
        return self.spec.repairable

    def quantize(self, target: Path, exclude=(), include=None) -> Path:
        quantize_into(self.prepared, target, self.method, self.settings,
                      self.data.calibration, exclude=exclude, include=include)
        return target

    # ------------------------------------------------------------------ candidate

    def candidate(self) -> Path:
        """Prepare the graph, quantize, and (latency-aware) quantize again without the nodes
        that are slower in int8."""
        self.prepared = prepare(self.model_path, self.work)
        model = onnx.load(str(self.prepared), load_external_data=False)
        self.transformer = is_transformer(model)
        graph: dict = {"transformer": self.transformer}
        if self.repairable and should_fuse(self.settings.transformer_fusions, self.transformer):
            self.prepared, graph["fusions"] = fuse_transformer(self.prepared, self.work)
            model = onnx.load(str(self.prepared), load_external_data=False)
        if self.spec.scope is not None:
            self.include, scope = self.spec.scope(model, self.transformer)
            if scope:
                graph[f"{self.method}_scope"] = scope
        self.record["graph"] = graph
        self.last = full = self.quantize(self.work / "full.onnx", include=self.include)
        if self.repairable and self.settings.latency_aware:
            return self._latency_aware(full)
        return full

    def _latency_aware(self, full: Path) -> Path:
        slower, summary = slower_in_int8(self.prepared, full, self.config,
                                         self.data.timing_feeds())
        record = {**summary, "kept_float": slower, "kept_float_by_op": by_op_type(slower)}
        self.record["latency_aware"] = record
        if not slower:
            return full
        if len(slower) >= summary["groups_quantized"]:
            return self._nothing_faster(full, record)
        self.exclude = [name for row in slower for name in row["nodes"]]
        self.last = mixed = self.quantize(self.work / "mixed.onnx", exclude=self.exclude,
                                          include=self.include)
        return mixed

    def _nothing_faster(self, full: Path, record: dict) -> Path:
        """Every quantized node is slower in int8 here: refuse, or keep the full int8 model
        with ``allow_slower`` (or when the speed check is off: whoever turned it off, such as
        a pipeline with its own speed gate, judges the speed)."""
        if self.config.allow_slower or not self.config.speed_check:
            record["note"] = ("every quantized node was slower in int8; the fully quantized "
                              "model is kept for " + ("allow_slower" if self.config.allow_slower
                                                      else "the caller's own speed judgement"))
            return full
        raise SpeedCheckFailed(
            f"no node runs faster in int8 on this machine: all {record['groups_quantized']} "
            "quantized nodes (with the activations fused into them) were slower than in float "
            f"(ONNX Runtime profiler: {record['int8_total_us']:.0f} us per run quantized vs "
            f"{record['float_total_us']:.0f} us in float); int8 would only lose accuracy "
            "here; pass --allow-slower to keep the int8 model anyway", record)

    # ------------------------------------------------------------------ checks

    def judge(self, path: Path) -> tuple[bool, float, dict]:
        """The output check on ``path``: (passed, score, figures)."""
        config = self.config
        if self.reference is None:
            self.reference = reference_outputs(self.model_path, self.data.held_out)
        figures = compare_models(self.model_path, path, self.data.held_out, self.reference)
        found = failures(figures, config.min_cosine, config.min_top1_agreement,
                         config.min_centred_cosine, config.max_norm_change)
        score = min((f["mean_cosine"] for f in figures.values()), default=1.0)
        result = {"outputs": figures, "failures": found}
        if self.data.labels is not None:
            eval_set = EvaluationSet(self.data.held_out, self.data.labels)
            before, after = evaluate(self.model_path, eval_set), evaluate(path, eval_set)
            result["top1_accuracy"] = {"float": round(before, 6), "quantized": round(after, 6),
                                       "drop": round(before - after, 6)}
            if self.tolerance is not None and before - after > self.tolerance:
                found.append(f"top-1 accuracy drop {before - after:.4f} > tolerance "
                             f"{self.tolerance}")
            score = min(score, after)
        return not found, score, result

    def _cause(self) -> str:
        """The likeliest reason for a failed check: random token ids first, when the check
        of a text model ran on them (the method's own causes then come second)."""
        cause = likely_cause(self.method, self.settings, self.transformer)
        random_ids = random_ids_cause(self.model_path, self.data.held_out,
                                      self.data.held_out_source)
        if not random_ids:
            return cause
        return (f"likely cause: {random_ids}; if it fails on real text too, "
                f"{cause.removeprefix('likely cause: ')}")

    def output_check(self, candidate: Path) -> None:
        """Refuse (or repair, accuracy-aware) a model whose outputs differ too much."""
        config = self.config
        if self.data.calibration:
            check_finite_outputs(candidate, self.data.calibration, self.model_path)
        passed, _, figures = self.judge(candidate)
        if not passed and self.repairable and self.candidate_spec.accuracy_aware:
            best, search = accuracy_aware_quantize(
                self.prepared, self.method, self.settings, self.data.calibration,
                self.data.held_out, self.judge, candidate, self.work, exclude=self.exclude,
                include=self.include)
            figures = search.pop("figures")
            self.record["accuracy_search"] = search
            passed = search["met_tolerance"]
            if best != candidate:
                os.replace(best, candidate)
        self.record["output_check"] = {**figures, "passed": passed,
                                       "min_cosine": config.min_cosine,
                                       "min_top1_agreement": config.min_top1_agreement,
                                       "min_centred_cosine": config.min_centred_cosine,
                                       "max_norm_change": config.max_norm_change}
        self.last = candidate
        if passed and self.repairable and not has_quantized_ops(candidate):
            raise OutputCheckFailed(
                "the output check passed only with every quantized node kept in float: "
                f"nothing is left in int8; {self._cause()}", figures)
        if not passed:
            raise OutputCheckFailed(
                f"the quantized model's outputs differ from the fp32 model's beyond the "
                f"tolerance ({'; '.join(figures['failures'])}): "
                f"{describe_outputs(figures['outputs'])}; {self._cause()}", figures)

    def speed_check(self, candidate: Path) -> None:
        """Time the candidate against its input, and against the method's rival if any."""
        config = self.config
        if not config.speed_check:
            self.record["speed_check"] = {"skipped": "speed_check=False"}
            return
        extra, rival = {}, None
        found = self.spec.rival(self.settings, self.transformer) if self.spec.rival else None
        if found is not None:
            rival, settings = found
            extra[rival] = self.work / f"{rival}.onnx"
            quantize_into(self.prepared, extra[rival], rival, settings, [])
        figures = speed_figures(self.model_path, candidate, config, self.data.timing_feeds(),
                                extra)
        self.record["speed_check"] = figures
        check_beats_rival(figures, config, self.method, rival)
        check_speed(figures, config, speed_gate_cause(candidate))
