"""The quantize stage: checks, quantizing and the record."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from compress.quantize.backends import quantize_into
from compress.quantize.checks import (check_finite_outputs, check_input_finite, count_ops,
                                      speed_gate_cause)
from compress.quantize.config import QuantizationCheckError, QuantizeConfig
from compress.quantize.data import _feeds_only, checked_batches, evaluation_set
from compress.quantize.prepare import prepare
from compress.quantize.search import accuracy_aware_quantize
from compress.trainer import selection_batches
from bench.resources import check_fits
from core.files import check_output_file
from core.onnx_files import check_onnx_file, model_size_bytes
from core.stage import StageInput, StageResult, StageSpec, register_stage


def _rows(batches: list[dict]) -> int:
    return int(sum(next(iter(b.values())).shape[0] for b in batches))


def quantize(model_path, config: QuantizeConfig, out_path,
             calibration: Iterable | dict | None = None, *,
             evaluation: Iterable | dict | None = None,
             tolerance: float | None = None) -> StageResult:
    """Quantize the ONNX model at ``model_path`` into ``out_path``; check the result.

    ``calibration``: inputs for static calibration and the NaN/Inf check. ``evaluation`` and
    ``tolerance`` (``config.tolerance`` when not given): for ``config.accuracy_aware``, labelled
    data (top-1 accuracy) or unlabelled data (cosine similarity to the fp32 outputs).
    """
    model_path = Path(model_path)
    check_onnx_file(model_path)
    out_path = check_output_file(out_path)
    # Pre-processing, calibration and the quantized copy each hold the model once more.
    check_fits(f"quantizing {model_path.name}", 2 * model_size_bytes(model_path), 0)
    tolerance = config.tolerance if tolerance is None else tolerance
    _check_needs(config, calibration, evaluation, tolerance)
    feeds = _feeds_only(checked_batches(model_path, calibration, config.calibration_samples,
                                        "calibration data")) if calibration is not None else []
    eval_set = evaluation_set(model_path, evaluation, config.evaluation_samples) \
        if config.accuracy_aware else None
    if feeds:
        check_input_finite(model_path, feeds)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    search = None
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=out_path.parent) as tmp:
        work = Path(tmp)
        prepared = prepare(model_path, work)
        if eval_set is not None:
            target, search = accuracy_aware_quantize(prepared, config, feeds, eval_set,
                                                     float(tolerance), work)
        else:
            target = work / out_path.name
            quantize_into(prepared, target, config, feeds)
        check_onnx_file(target)
        if feeds:
            check_finite_outputs(target, feeds)
        os.replace(target, out_path)
    record = {**config.settings(), "calibration_samples": _rows(feeds),
              "size_bytes_before": model_size_bytes(model_path),
              "size_bytes": model_size_bytes(out_path), "ops": count_ops(out_path)}
    if config.mode != "static":
        record["calibration"] = None
    if search is not None:
        record["accuracy_search"] = search
    return StageResult(artifact=out_path, record=record)


def _check_needs(config: QuantizeConfig, calibration, evaluation, tolerance) -> None:
    if config.mode == "static" and calibration is None:
        raise ValueError("quantize.mode='static' needs calibration data (--data CALIB.npz)")
    if config.accuracy_aware and evaluation is None:
        raise ValueError("quantize.accuracy_aware needs evaluation data (--eval-data EVAL.npz, "
                         "with labels for top-1 accuracy)")
    if config.accuracy_aware and tolerance is None:
        raise ValueError("quantize.accuracy_aware needs a tolerance (quantize.tolerance or "
                         "--tolerance)")


def _run_stage(config: QuantizeConfig, given: StageInput) -> StageResult:
    search = {}
    if config.accuracy_aware:
        # A validation split chooses the float nodes, so the evaluation set that judges the
        # stage is not the one they were chosen on.
        search = {"evaluation": selection_batches(given.data), "tolerance": given.tolerance}
    return quantize(given.artifact, config, given.folder / "model.onnx",
                    calibration=given.data.get("calibration"), **search)


register_stage(StageSpec("quantize", QuantizeConfig, consumes="onnx", produces="onnx",
                         run=_run_stage, promises_speed=lambda config: True,
                         slow_cause=lambda config, candidate: speed_gate_cause(candidate),
                         failures=(QuantizationCheckError,)))
