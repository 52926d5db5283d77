"""ONNX Runtime post-training quantization, with the checks users forget.

Modes: ``dynamic`` (int8 weights, activations quantized at run time), ``static`` (int8
weights and activations, calibrated on user data; QDQ or QOperator format), ``fp16`` and
``int4`` (weight-only, MatMul -> MatMulNBits, for transformers).

Before quantizing, the model goes through ONNX Runtime's quantization pre-processing (shape
inference and graph optimisation), and an opset older than 13 is upgraded. After, the
quantized model runs on the calibration data and must give finite outputs: a model that
"quantized fine" but returns NaN is refused here, not discovered on a device.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from compress.stage import StageConfig, StageResult, check_choice
from export.files import check_output_file
from export.onnx_checks import check_onnx_file, model_size_bytes

MODES = ("dynamic", "static", "fp16", "int4")
CALIBRATIONS = ("minmax", "entropy", "percentile")
FORMATS = ("qdq", "qoperator")
MIN_OPSET = 13  # per-channel QDQ and most quantized kernels need opset >= 13


class QuantizationCheckError(RuntimeError):
    """The quantized model failed its own check (NaN/Inf outputs): exit code 1."""

    exit_code = 1


@dataclass
class QuantizeConfig(StageConfig):
    """How to quantize. Static mode needs calibration data."""

    kind = "quantize"
    mode: str = "static"
    calibration: str = "minmax"
    format: str = "qdq"
    per_channel: bool = False
    reduce_range: bool = False
    symmetric: bool = False
    calibration_samples: int = 512
    block_size: int = 128            # int4: weights per quantization block
    keep_io_fp32: bool = True        # fp16: keep float32 inputs and outputs
    tolerance: float | None = None   # overrides the recipe's tolerance for this stage

    def __post_init__(self):
        check_choice("quantize", "mode", self.mode, MODES)
        check_choice("quantize", "calibration", self.calibration, CALIBRATIONS)
        check_choice("quantize", "format", self.format, FORMATS)
        if self.calibration_samples < 1:
            raise ValueError(f"quantize.calibration_samples must be >= 1, got "
                             f"{self.calibration_samples}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"quantize.block_size must be a power of two >= 16, got "
                             f"{self.block_size}")


def _cpu_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def calibration_feeds(model_path: Path, data, limit: int) -> list[dict[str, np.ndarray]]:
    """Turn calibration data into checked feed dicts, at most ``limit`` samples in all.

    ``data``: an iterable of feed dicts (``{input_name: array}``), of ``(inputs, labels)``
    batches (torch tensors or arrays, for single-input models), or one dict of arrays.
    """
    from bench.inputs import check_feeds

    session = _cpu_session(model_path)
    names = [i.name for i in session.get_inputs()]
    if isinstance(data, dict):
        data = [data]
    feeds: list[dict[str, np.ndarray]] = []
    rows = 0
    for batch in data:
        if not isinstance(batch, dict):
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            if len(names) != 1:
                raise ValueError(f"calibration batches must be dicts keyed by input name for "
                                 f"a model with several inputs ({', '.join(names)})")
            batch = {names[0]: inputs}
        arrays = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
                  for k, v in batch.items()}
        arrays = check_feeds(session, arrays, "calibration data")
        take = min(limit - rows, next(iter(arrays.values())).shape[0])
        feeds.append({k: v[:take] for k, v in arrays.items()})
        rows += take
        if rows >= limit:
            break
    if not feeds:
        raise ValueError("calibration data is empty (0 samples); static quantization needs "
                         "representative inputs")
    return feeds


class _FeedReader:
    """An onnxruntime ``CalibrationDataReader`` over a list of feed dicts."""

    def __init__(self, feeds):
        self.feeds = feeds
        self.index = 0

    def get_next(self):
        if self.index >= len(self.feeds):
            return None
        self.index += 1
        return self.feeds[self.index - 1]

    def rewind(self):
        self.index = 0


def prepare(model_path: Path, work: Path) -> Path:
    """ONNX Runtime's quantization pre-processing; upgrade old opsets first."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(model_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    source = model_path
    if opset < MIN_OPSET:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, MIN_OPSET)
        except Exception as exc:
            raise ValueError(f"{model_path} uses opset {opset}; quantization needs opset >= "
                             f"{MIN_OPSET} and upgrading failed: {str(exc).splitlines()[0]}"
                             ) from exc
        source = work / "upgraded.onnx"
        onnx.save(model, str(source))
    prepared = work / "prepared.onnx"
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
    except Exception:
        # Symbolic shape inference fails on some graphs; plain ONNX shape inference is enough.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    return prepared


def _quantize_into(prepared: Path, target: Path, config: QuantizeConfig, feeds) -> None:
    from onnxruntime import quantization as q

    extra = {"ActivationSymmetric": config.symmetric, "WeightSymmetric": True}
    if config.mode == "dynamic":
        q.quantize_dynamic(str(prepared), str(target), per_channel=config.per_channel,
                           reduce_range=config.reduce_range, weight_type=q.QuantType.QInt8,
                           extra_options={"WeightSymmetric": True})
    elif config.mode == "static":
        methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                   "percentile": q.CalibrationMethod.Percentile}
        q.quantize_static(str(prepared), str(target), _FeedReader(feeds),
                          quant_format=q.QuantFormat.QDQ if config.format == "qdq"
                          else q.QuantFormat.QOperator,
                          per_channel=config.per_channel, reduce_range=config.reduce_range,
                          activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=methods[config.calibration], extra_options=extra)
    elif config.mode == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(prepared)),
                                         keep_io_types=config.keep_io_fp32)
        onnx.save(model, str(target))
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(str(prepared)), bits=4,
                                         block_size=config.block_size,
                                         is_symmetric=config.symmetric)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def check_finite_outputs(model_path: Path, feeds) -> None:
    """Run the quantized model on the calibration feeds; refuse NaN or Inf outputs."""
    session = _cpu_session(model_path)
    for feed in feeds:
        for out, value in zip(session.get_outputs(), session.run(None, feed)):
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                raise QuantizationCheckError(f"quantized model {model_path.name} gives NaN or "
                                             f"Inf in output {out.name!r} on calibration data")


def count_ops(model_path: Path) -> dict[str, int]:
    """How many nodes of each op type the graph holds (QuantizeLinear, MatMulNBits, ...)."""
    counts: dict[str, int] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantize(model_path, config: QuantizeConfig, out_path,
             calibration: Iterable | dict | None = None) -> StageResult:
    """Quantize the ONNX model at ``model_path`` into ``out_path``; check the result."""
    model_path = Path(model_path)
    check_onnx_file(model_path)
    out_path = check_output_file(out_path)
    if config.mode == "static" and calibration is None:
        raise ValueError("quantize.mode='static' needs calibration data (--data CALIB.npz)")
    feeds = calibration_feeds(model_path, calibration, config.calibration_samples) \
        if calibration is not None else []
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=out_path.parent) as tmp:
        work = Path(tmp)
        prepared = prepare(model_path, work)
        target = work / out_path.name
        _quantize_into(prepared, target, config, feeds)
        check_onnx_file(target)
        if feeds:
            check_finite_outputs(target, feeds)
        os.replace(target, out_path)
    record = {"mode": config.mode, "calibration": config.calibration if config.mode == "static"
              else None, "format": config.format, "per_channel": config.per_channel,
              "calibration_samples": int(sum(next(iter(f.values())).shape[0] for f in feeds)),
              "size_bytes_before": model_size_bytes(model_path),
              "size_bytes": model_size_bytes(out_path), "ops": count_ops(out_path)}
    return StageResult(artifact=out_path, record=record)
