"""The quantize stage: data, the method's resolved settings, one attempt, and the record.

Every quantization, from the API, the command line or a pipeline, goes through
:func:`quantize`, and every result passes the same two checks before it is written
(:mod:`edgepack.compress.quantize.attempt`): the output check on held-out inputs (repaired
accuracy-aware for int8), and the speed check against the input.

A refused model leaves nothing at the output path; ``keep_failed`` names where to keep it.
The record keeps what was asked (``requested``) and what this machine ran (``resolved``:
presets and ``auto`` filled in), beside the checks' figures.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import onnx

from edgepack.bench.resources import check_fits
from edgepack.compress.quantize.attempt import Attempt
from edgepack.compress.quantize.candidate_search import search
from edgepack.compress.quantize.data import (_cpu_session, _feeds_only, _fixed_batch,
                                             checked_batches, evaluation_set)
from edgepack.compress.quantize.model_checks import (check_input_finite, check_quantizable,
                                                     count_ops, speed_gate_cause)
from edgepack.compress.quantize.output_check import generated_batches, split_held_out
from edgepack.compress.quantize.quantize_config import QuantizationCheckError, QuantizeConfig
from edgepack.compress.quantize.text_inputs import GENERATED_SOURCE, SOURCE, sentence_batches
from edgepack.compress.trainer import selection_batches
from edgepack.core.files import atomic_path, check_not_input, check_output_file
from edgepack.core.onnx_files import check_onnx_file, model_size_bytes
from edgepack.core.output_paths import mark_onnx_file
from edgepack.core.registry import settings_dict
from edgepack.core.stage import StageInput, StageResult, StageSpec, register_stage


def _rows(batches: list[dict]) -> int:
    return int(sum(next(iter(b.values())).shape[0] for b in batches))


def resolve_settings(config: QuantizeConfig) -> tuple[object, str]:
    """The settings this machine runs for ``config`` (its preset resolved), and the line
    saying what ``auto`` chose ("" when nothing was chosen)."""
    spec = config.spec
    return spec.resolve(config.settings, config.provider)


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
    if config.max_perplexity_ratio is not None:
        raise ValueError(f"quantize.max_perplexity_ratio applies to decoders with a KV cache "
                         f"(judged by perplexity on text); {model_path} is judged by its "
                         f"outputs against the input's (min_cosine, min_top1_agreement)")
    tolerance = config.tolerance if tolerance is None else tolerance
    if config.spec.reads_calibration(config.settings) and calibration is None:
        raise ValueError(f"quantize.mode={config.method!r} needs calibration data "
                         "(--data CALIB.npz)")
    settings, choice = resolve_settings(config)
    data = _Data.load(model_path, config, calibration, evaluation)
    if data.calibration:
        check_input_finite(model_path, data.calibration)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=out_path.parent) as tmp:
        try:
            attempt, candidate, searched = search(model_path, config, settings, choice, data,
                                                  tolerance, Path(tmp))
            _speed_check(attempt, candidate)
        except QuantizationCheckError as exc:
            last = getattr(getattr(exc, "last_attempt", None), "last", None)
            if keep_failed is not None and last is not None and last.is_file():
                _keep_refused(last, keep_failed)
                exc.args = (f"{exc.args[0]} (the refused model is kept at {keep_failed})",)
            raise
        mark_onnx_file(candidate, f"quantize {attempt.method}")
        os.replace(candidate, out_path)
    record = {**settings_record(config, attempt, choice), **attempt.record,
              "calibration_samples": _rows(data.calibration),
              "size_bytes_before": model_size_bytes(model_path),
              "size_bytes": model_size_bytes(out_path), "ops": count_ops(out_path)}
    if searched:
        record["candidate_search"] = searched
    return StageResult(artifact=out_path, record=record)


def _speed_check(attempt: Attempt, candidate: Path) -> None:
    """The chosen candidate against its input (and its method's rival)."""
    try:
        attempt.speed_check(candidate)
    except QuantizationCheckError as exc:
        exc.last_attempt = attempt
        raise


def settings_record(config: QuantizeConfig, attempt: Attempt, choice: str) -> dict:
    """The record's settings: the method that ran and its resolved settings flat (as
    before), the request and the resolution side by side, what ``auto`` chose, the checks."""
    resolved = settings_dict(attempt.settings)
    checks = {k: v for k, v in config.to_dict().items()
              if k not in ("kind", "mode") and k not in resolved}
    describe = attempt.spec.describe(attempt.settings) if attempt.settings is not None else ""
    return {"mode": attempt.method, "method": attempt.method, **resolved, **checks,
            "requested": {"mode": config.method, **settings_dict(config.settings)},
            "resolved": resolved, "auto_choice": choice, "describe": describe}


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
    fixed: bool = False

    @classmethod
    def load(cls, model_path: Path, config: QuantizeConfig, calibration, evaluation) -> "_Data":
        fixed = _fixed_batch(_cpu_session(model_path)) is not None
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
            held = sentence_batches(model_path, _cpu_session(model_path), config.check_rows)
            source = f"{SOURCE} (no held-out data)"
        if not held:
            held = generated_batches(model_path, config.check_rows)
            source = GENERATED_SOURCE
        return cls(feeds, held, source, labels, fixed)

    def timing_feeds(self) -> dict:
        """One held-out row (one batch for a fixed-batch model): batch 1 is what is timed."""
        first = self.held_out[0]
        return dict(first) if self.fixed else {k: v[:1] for k, v in first.items()}


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
                         run=_run_stage,
                         promises_speed=lambda config: not config.allow_slower,
                         slow_cause=lambda config, candidate: speed_gate_cause(candidate),
                         failures=(QuantizationCheckError,)))
