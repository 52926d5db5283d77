"""The quantize stage: data, graph preparation, quantizing, the checks and the record.

Every quantization, from the API, the command line or a pipeline, goes through
:func:`quantize`, and every result passes two checks before it is written:

1. the output check (:mod:`compress.quantize.output_check`) on held-out inputs; when it
   fails, ``accuracy_aware`` keeps the nodes that most improve it in float and stops at the
   first model that passes; a model that still fails is refused (exit 1);
2. the speed check (:mod:`compress.quantize.speed_check`), interleaved timing against the
   input (and, for static int8 on a transformer, against dynamic int8 too).

A refused model leaves nothing at the output path; ``keep_failed`` names where to keep it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import onnx

from bench.resources import check_fits
from core.files import atomic_path, check_not_input, check_output_file
from core.onnx_files import check_onnx_file, model_size_bytes
from core.output_paths import mark_onnx_file
from core.stage import StageInput, StageResult, StageSpec, register_stage

INT8_MODES = ("dynamic", "static")


def _rows(batches: list[dict]) -> int:
    return int(sum(next(iter(b.values())).shape[0] for b in batches))


def quantize(model_path, config: QuantizeConfig, out_path,
             calibration: Iterable | dict | None = None, *,
             evaluation: Iterable | dict | None = None,
             tolerance: float | None = None, keep_failed=None) -> StageResult:
    """Quantize the ONNX model at ``model_path`` into ``out_path``; check the result.

    ``calibration``: inputs for static calibration; a share of its rows
    (``config.held_out_fraction``) is held out for the output check. ``evaluation``: held-out
    inputs for the output check instead (with labels and ``tolerance``, the top-1 accuracy
    drop is checked too). Without either, the check runs on generated inputs.
    ``keep_failed``: where to write a model that fails a check (nothing is written
    otherwise). Raises :class:`OutputCheckFailed` or :class:`SpeedCheckFailed` (exit 1).
    """
    model_path = Path(model_path)
    check_onnx_file(model_path)
    out_path = check_output_file(out_path)
    check_not_input(out_path, [model_path], "output")
    # Pre-processing, calibration and the quantized copy each hold the model once more.
    check_fits(f"quantizing {model_path.name}", 2 * model_size_bytes(model_path), 0)
    check_quantizable(model_path)
    if keep_failed is not None:
        keep_failed = check_output_file(keep_failed)
        check_not_input(keep_failed, [model_path, out_path], "keep_failed")
    tolerance = config.tolerance if tolerance is None else tolerance
    if config.mode == "static" and calibration is None:
        raise ValueError("quantize.mode='static' needs calibration data (--data CALIB.npz)")
    data = _Data.load(model_path, config, calibration, evaluation)
    if data.calibration:
        check_input_finite(model_path, data.calibration)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=out_path.parent) as tmp:
        run = _Run(model_path, config, data, tolerance, Path(tmp))
        try:
            candidate = run.candidate()
            run.output_check(candidate)
            run.speed_check(candidate)
        except QuantizationCheckError as exc:
            if keep_failed is not None and run.last is not None and run.last.is_file():
                _keep_refused(run.last, keep_failed)
                exc.args = (f"{exc.args[0]} (the refused model is kept at {keep_failed})",)
            raise
        mark_onnx_file(candidate, f"quantize {config.mode}")
        os.replace(candidate, out_path)
    record = {**config.settings(), **run.record, "calibration_samples": _rows(data.calibration),
              "size_bytes_before": model_size_bytes(model_path),
              "size_bytes": model_size_bytes(out_path), "ops": count_ops(out_path)}
    if config.mode != "static":
        record["calibration"] = None
    return StageResult(artifact=out_path, record=record)


def _keep_refused(refused: Path, keep_failed: Path) -> None:
    """Write the refused model at ``keep_failed`` atomically, marked as edgepack's."""
    with atomic_path(keep_failed) as tmp:
        shutil.copyfile(refused, tmp)
        mark_onnx_file(tmp, "quantize (refused by its check)")


@dataclasses.dataclass
class _Data:
    """Calibration feeds, held-out feeds for the output check, and labels if any."""

    calibration: list[dict]
    held_out: list[dict]
    held_out_source: str
    labels: object = None

    @classmethod
    def load(cls, model_path: Path, config: QuantizeConfig, calibration, evaluation) -> "_Data":
        session = _cpu_session(model_path)
        fixed = _fixed_batch(session) is not None
        feeds = _feeds_only(checked_batches(model_path, calibration, config.calibration_samples,
                                            "calibration data")) if calibration is not None else []
        labels = None
        if evaluation is not None:
            eval_set = evaluation_set(model_path, evaluation, config.evaluation_samples)
            held, source, labels = eval_set.batches, "evaluation data", eval_set.labels
        elif feeds:
            feeds, held = split_held_out(feeds, config.held_out_fraction, fixed)
            source = f"last {config.held_out_fraction:.0%} of the calibration data"
        else:
            held, source = [], ""
        if not held:
            held = generated_batches(model_path, config.check_rows)
            source = "generated inputs (no held-out data)"
        return cls(feeds, held, source, labels, fixed)

    fixed: bool = False

    def timing_feeds(self) -> dict:
        """One held-out row (one batch for a fixed-batch model): batch 1 is what is timed."""
        first = self.held_out[0]
        return dict(first) if self.fixed else {k: v[:1] for k, v in first.items()}


class _Run:
    """One quantization in a scratch folder: the candidate and the checks on it."""

    def __init__(self, model_path: Path, config: QuantizeConfig, data: _Data, tolerance,
                 work: Path):
        self.model_path, self.config, self.data, self.work = model_path, config, data, work
        self.tolerance = tolerance
        self.record: dict = {"held_out": {"rows": _rows(data.held_out),
                                          "source": data.held_out_source}}
        self.last: Path | None = None
        self.exclude: list[str] = []
        self.include: list[str] | None = None
        self.transformer = False
        self.reference = None

    # ------------------------------------------------------------------ candidate

    def candidate(self) -> Path:
        """Prepare the graph, quantize, and (latency-aware) quantize again without the nodes
        that are slower in int8."""
        config, work = self.config, self.work
        self.prepared = prepare(self.model_path, work)
        model = onnx.load(str(self.prepared), load_external_data=False)
        self.transformer = is_transformer(model)
        graph: dict = {"transformer": self.transformer}
        if should_fuse(config.transformer_fusions, self.transformer, config.mode):
            self.prepared, graph["fusions"] = fuse_transformer(self.prepared, work)
            model = onnx.load(str(self.prepared), load_external_data=False)
        if config.mode == "static" and self.transformer:
            self.include, graph["static_scope"] = static_transformer_scope(model)
        self.record["graph"] = graph
        full = work / "full.onnx"
        quantize_into(self.prepared, full, config, self.data.calibration, include=self.include)
        self.last = full
        if config.latency_aware and config.mode in INT8_MODES:
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
        mixed = self.work / "mixed.onnx"
        quantize_into(self.prepared, mixed, self.config, self.data.calibration,
                      exclude=self.exclude, include=self.include)
        self.last = mixed
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
            f"quantized nodes (with the activations fused into them) were slower than in float (ONNX Runtime profiler: "
            f"{record['int8_total_us']:.0f} us per run quantized vs "
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

    def output_check(self, candidate: Path) -> None:
        """Refuse (or repair, accuracy-aware) a model whose outputs differ too much."""
        config = self.config
        if self.data.calibration:
            check_finite_outputs(candidate, self.data.calibration, self.model_path)
        passed, _, figures = self.judge(candidate)
        if not passed and config.accuracy_aware and config.mode in INT8_MODES:
            best, search = accuracy_aware_quantize(
                self.prepared, config, self.data.calibration, self.data.held_out, self.judge,
                candidate, self.work, exclude=self.exclude, include=self.include)
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
        if passed and config.mode in INT8_MODES and not has_quantized_ops(candidate):
            raise OutputCheckFailed(
                "the output check passed only with every quantized node kept in float: "
                "nothing is left in int8; "
                f"{likely_cause(config.settings(), self.transformer)}", figures)
        if not passed:
            raise OutputCheckFailed(
                f"the quantized model's outputs differ from the fp32 model's beyond the "
                f"tolerance ({'; '.join(figures['failures'])}): "
                f"{describe_outputs(figures['outputs'])}; "
                f"{likely_cause(config.settings(), self.transformer)}", figures)

    def speed_check(self, candidate: Path) -> None:
        """Time the candidate against its input; static transformers against dynamic too."""
        config = self.config
        if not config.speed_check:
            self.record["speed_check"] = {"skipped": "speed_check=False"}
            return
        extra = {}
        if config.mode == "static" and self.transformer:
            extra["dynamic"] = self.work / "dynamic.onnx"
            quantize_into(self.prepared, extra["dynamic"],
                          dataclasses.replace(config, mode="dynamic"), [])
        figures = speed_figures(self.model_path, candidate, config, self.data.timing_feeds(),
                                extra)
        self.record["speed_check"] = figures
        check_static_not_slower_than_dynamic(figures, config)
        check_speed(figures, config, speed_gate_cause(candidate))


from compress.quantize.backends import quantize_into  # noqa: E402
from compress.quantize.checks import (  # noqa: E402
    check_finite_outputs,
    check_input_finite,
    check_quantizable,
    count_ops,
    has_quantized_ops,
    speed_gate_cause,
)
from compress.quantize.config import QuantizationCheckError, QuantizeConfig  # noqa: E402
from compress.quantize.data import (  # noqa: E402
    EvaluationSet,
    _cpu_session,
    _feeds_only,
    _fixed_batch,
    checked_batches,
    evaluate,
    evaluation_set,
)
from compress.quantize.fusions import (  # noqa: E402
    fuse_transformer,
    is_transformer,
    should_fuse,
    static_transformer_scope,
)
from compress.quantize.mixed_precision import by_op_type, slower_in_int8  # noqa: E402
from compress.quantize.output_check import (  # noqa: E402
    OutputCheckFailed,
    compare_models,
    failures,
    generated_batches,
    likely_cause,
    reference_outputs,
    split_held_out,
)
from compress.quantize.output_check import describe as describe_outputs  # noqa: E402
from compress.quantize.prepare import prepare  # noqa: E402
from compress.quantize.search import accuracy_aware_quantize  # noqa: E402
from compress.quantize.speed_check import (  # noqa: E402
    SpeedCheckFailed,
    check_speed,
    check_static_not_slower_than_dynamic,
    speed_figures,
)
from compress.trainer import selection_batches  # noqa: E402


def _run_stage(config: QuantizeConfig, given: StageInput) -> StageResult:
    """The pipeline's quantize stage. The output check (and accuracy-aware repair) runs on a
    validation split, so the evaluation set that judges the stage is not the one the float
    nodes were chosen on. The stage's own speed check is off: the pipeline's speed gate times
    every candidate against its input with the recipe's bench settings."""
    inputs = onnx.load(str(given.artifact), load_external_data=False).graph.input
    # Several-input models (token ids and mask) get their batches as tuples, which the
    # quantizer cannot name: their check holds out part of the calibration data instead.
    evaluation = selection_batches(given.data) if len(inputs) == 1 else None
    return quantize(given.artifact, dataclasses.replace(config, speed_check=False),
                    given.folder / "model.onnx", calibration=given.data.get("calibration"),
                    evaluation=evaluation, tolerance=given.tolerance)


register_stage(StageSpec("quantize", QuantizeConfig, consumes="onnx", produces="onnx",
                         run=_run_stage, promises_speed=lambda config: True,
                         slow_cause=lambda config, candidate: speed_gate_cause(candidate),
                         failures=(QuantizationCheckError,)))
