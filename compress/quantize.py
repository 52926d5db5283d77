"""ONNX Runtime post-training quantization, with the checks users forget.

Modes: ``dynamic`` (int8 weights, activations quantized at run time; the usual choice for
transformers on CPU), ``static`` (int8 weights and activations calibrated on user data with
MinMax, Entropy or Percentile; QDQ or QOperator format), ``fp16`` (overflow-prone ops kept in
float32) and ``int4`` (weight-only, MatMul -> MatMulNBits, for transformers).

Before quantizing, the model goes through ONNX Runtime's quantization pre-processing (shape
inference and graph optimisation), and an opset older than 13 is upgraded (or refused, naming
the op that cannot be upgraded). Calibration and evaluation data are checked against the
model's inputs (name, rank, dtype) before anything runs.

After quantizing, the quantized model runs on the calibration data and must give finite
outputs: a model that "quantized fine" but returns NaN is refused here, not discovered on a
device. With ``accuracy_aware=True`` and evaluation data, a model whose accuracy drop exceeds
the tolerance is repaired step by step: nodes are ranked by the quantization error they add
(fp32 vs quantized activations, via ``onnxruntime.quantization.qdq_loss_debug``) and the worst
are kept in float until the drop is within tolerance; if no step gets there, the best step is
returned and the record says so.

Whether the quantized model is *faster* is decided by the pipeline, which times it against its
input; :func:`speed_gate_cause` explains a model that is not (Q/DQ pairs left unfused, compute
ops left in float).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, fields
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
ACTIVATION_TYPES = ("int8", "uint8")
MIN_OPSET = 13  # per-channel QDQ and most quantized kernels need opset >= 13
RANKING_ROWS = 64  # rows used to rank nodes by activation error (every activation is held)

# Target presets: the settings ONNX Runtime's quantization guide recommends for each target.
# A field set explicitly in the config wins over its preset.
PRESETS: dict[str, dict] = {
    # VNNI (AVX512-VNNI / AVX-VNNI) multiplies int8 without the 16-bit saturation of
    # VPMADDUBSW, so 8-bit weights are safe: S8S8 QDQ, ORT's default and first choice on CPU.
    # Per-channel weights keep accuracy on layers with uneven channel ranges.
    "x86-vnni": {"format": "qdq", "activation_type": "int8", "per_channel": True,
                 "reduce_range": False, "symmetric": False},
    # AVX2 / AVX512 without VNNI: U8S8 runs on VPMADDUBSW, whose 16-bit intermediate sums can
    # saturate; 7-bit weights (reduce_range) avoid it, and ORT's guide says per-channel
    # "generally" needs reduce_range on these machines.
    "x86-avx2": {"format": "qdq", "activation_type": "uint8", "per_channel": True,
                 "reduce_range": True, "symmetric": False},
    # ARM64 with dot-product instructions (SDOT/UDOT) has no saturation issue: S8S8 QDQ with
    # full 8-bit per-channel weights.
    "arm64": {"format": "qdq", "activation_type": "int8", "per_channel": True,
              "reduce_range": False, "symmetric": False},
    # TensorRT (explicit quantization) reads QDQ graphs and needs int8 with zero points of 0:
    # symmetric activations and weights, per-channel weights; ORT on GPU supports only S8S8.
    "gpu-tensorrt": {"format": "qdq", "activation_type": "int8", "per_channel": True,
                     "reduce_range": False, "symmetric": True},
}
PRESET_FALLBACKS = {"format": "qdq", "per_channel": False, "reduce_range": False,
                    "symmetric": False}

# fp16: ops whose float16 results overflow (> 65504) or lose too much precision on ordinary
# inputs are kept in float32, on top of onnxruntime's own block list.
FP16_FLOAT32_OPS = ("Exp", "Pow", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
                    "ReduceProd", "CumSum", "Softplus", "LayerNormalization")

# Compute ops, as they appear after ONNX Runtime's graph optimisation: float or quantized.
FLOAT_COMPUTE_OPS = ("Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm",
                     "FusedGemm", "Attention", "MultiHeadAttention", "LSTM", "GRU")
INT_COMPUTE_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger",
                   "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QAttention",
                   "DynamicQuantizeLSTM", "MatMulNBits", "NhwcQLinearConv")


class QuantizationCheckError(RuntimeError):
    """The quantized model failed its own check (NaN/Inf outputs): exit code 1."""

    exit_code = 1


@dataclass
class QuantizeConfig(StageConfig):
    """How to quantize. Static mode needs calibration data; accuracy-aware needs evaluation data.

    ``preset`` (``x86-vnni``, ``x86-avx2``, ``arm64``, ``gpu-tensorrt``) fills ``format``,
    ``activation_type``, ``per_channel``, ``reduce_range`` and ``symmetric`` where they are
    left unset (``None``); see :data:`PRESETS` for why each target gets what it gets.
    """

    kind = "quantize"
    mode: str = "static"
    preset: str = ""
    calibration: str = "minmax"
    format: str | None = None           # qdq unless a preset says otherwise
    activation_type: str | None = None  # int8 (S8S8, ORT's CPU default) or uint8 (U8S8)
    per_channel: bool | None = None
    reduce_range: bool | None = None
    symmetric: bool | None = None
    calibration_samples: int = 512
    block_size: int = 128            # int4: weights per quantization block
    keep_io_fp32: bool = True        # fp16: keep float32 inputs and outputs
    tolerance: float | None = None   # overrides the recipe's tolerance for this stage
    accuracy_aware: bool = False     # keep the worst nodes in float until within tolerance
    max_float_nodes: int = 8         # accuracy-aware: most nodes kept in float
    evaluation_samples: int = 2000   # accuracy-aware: evaluation rows used per step

    def __post_init__(self):
        check_choice("quantize", "mode", self.mode, MODES)
        check_choice("quantize", "preset", self.preset, ("",) + tuple(PRESETS))
        self._resolve_preset()
        check_choice("quantize", "calibration", self.calibration, CALIBRATIONS)
        check_choice("quantize", "format", self.format, FORMATS)
        check_choice("quantize", "activation_type", self.activation_type, ACTIVATION_TYPES)
        for name in ("calibration_samples", "max_float_nodes", "evaluation_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"quantize.{name} must be >= 1, got {getattr(self, name)}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"quantize.block_size must be a power of two >= 16, got "
                             f"{self.block_size}")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"quantize.tolerance must be >= 0, got {self.tolerance}")
        if self.preset == "gpu-tensorrt" and self.mode not in ("static", "fp16"):
            raise ValueError(f"quantize.preset='gpu-tensorrt' needs mode 'static' or 'fp16'; "
                             f"TensorRT has no {self.mode!r} quantization")

    def _resolve_preset(self) -> None:
        """Fill unset fields from the preset, then from the plain defaults."""
        preset = PRESETS.get(self.preset, {})
        for name in ("format", "per_channel", "reduce_range", "symmetric", "activation_type"):
            if getattr(self, name) is None:
                fallback = PRESET_FALLBACKS.get(name)
                setattr(self, name, preset.get(name, fallback))
        if self.activation_type is None:
            # S8S8 with QOperator is slow on x86-64 (ORT's guide): QOperator gets U8S8.
            self.activation_type = "uint8" if self.format == "qoperator" else "int8"

    def settings(self) -> dict:
        """The resolved quantization settings, for the stage record."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------- data


def _cpu_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _fixed_batch(session) -> int | None:
    """The batch size the model's inputs fix, or None when the batch axis is symbolic."""
    dims = [i.shape[0] for i in session.get_inputs() if i.shape]
    fixed = [d for d in dims if isinstance(d, int) and d > 0]
    return fixed[0] if fixed else None


def _as_array(value) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def _batch_to_arrays(batch, names: list[str], source: str) -> dict[str, np.ndarray]:
    """One batch as ``{name: array}``: a dict, or ``(inputs, labels)``, or bare inputs."""
    if isinstance(batch, dict):
        return {k: _as_array(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        inputs, labels = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        inputs, labels = batch, None
    if len(names) != 1:
        raise ValueError(f"{source}: batches must be dicts keyed by input name for a model "
                         f"with several inputs ({', '.join(names)})")
    arrays = {names[0]: _as_array(inputs)}
    if labels is not None:
        arrays["labels"] = _as_array(labels)
    return arrays


def checked_batches(model_path: Path, data, limit: int, source: str) -> list[dict[str, np.ndarray]]:
    """Turn user data into checked batches (feeds, plus ``labels`` when given), ``limit`` rows.

    ``data``: an iterable of feed dicts (``{input_name: array}``), of ``(inputs, labels)``
    batches (torch tensors or arrays, single-input models), or one dict of arrays. Each batch
    is checked against the model inputs (name, rank, dtype), naming the input and the expected
    shape and type; a partial last batch is fine; an empty set is refused.
    """
    from bench.inputs import check_feeds

    session = _cpu_session(model_path)
    names = [i.name for i in session.get_inputs()]
    batches: list[dict[str, np.ndarray]] = []
    rows = 0
    for batch in [data] if isinstance(data, dict) else data:
        arrays = _batch_to_arrays(batch, names, source)
        feeds = check_feeds(session, arrays, source)
        take = min(limit - rows, next(iter(feeds.values())).shape[0])
        chunk = {k: v[:take] for k, v in feeds.items()}
        if "labels" in arrays:
            chunk["labels"] = arrays["labels"][:take]
        batches.append(chunk)
        rows += take
        if rows >= limit:
            break
    if not batches:
        raise ValueError(f"{source} is empty (0 samples); quantization needs representative "
                         "inputs")
    return _rebatch(batches, _fixed_batch(session), source)


def _rebatch(batches: list[dict], fixed: int | None, source: str) -> list[dict]:
    """Split batches into the model's fixed batch size, when it has one."""
    if fixed is None:
        return batches
    out = []
    for batch in batches:
        rows = next(iter(batch.values())).shape[0]
        out += [{k: v[s:s + fixed] for k, v in batch.items()}
                for s in range(0, rows - fixed + 1, fixed)]
    if not out:
        raise ValueError(f"{source} has fewer rows than the model's fixed batch size {fixed}")
    return out


def _feeds_only(batches: list[dict]) -> list[dict]:
    return [{k: v for k, v in b.items() if k != "labels"} for b in batches]


@dataclass
class EvaluationSet:
    """Evaluation batches and the metric they support: top-1 accuracy with labels, else
    the mean cosine similarity of the first output to the fp32 model's."""

    batches: list[dict]
    labels: np.ndarray | None
    reference: list[np.ndarray] | None = None   # fp32 first outputs, for the cosine metric

    @property
    def metric(self) -> str:
        return "top1" if self.labels is not None else "cosine"


def evaluation_set(model_path: Path, data, limit: int) -> EvaluationSet:
    batches = checked_batches(model_path, data, limit, "evaluation data")
    with_labels = ["labels" in b for b in batches]
    if any(with_labels) and not all(with_labels):
        raise ValueError("evaluation data: some batches have labels and some do not")
    labels = np.concatenate([b["labels"] for b in batches]) if all(with_labels) else None
    return EvaluationSet(_feeds_only(batches), labels)


def evaluate(model_path: Path, evaluation: EvaluationSet) -> float:
    """Top-1 accuracy (with labels) or mean cosine similarity to the fp32 outputs."""
    session = _cpu_session(model_path)
    outputs = [session.run(None, feed)[0] for feed in evaluation.batches]
    if evaluation.labels is not None:
        predicted = np.concatenate([o.reshape(o.shape[0], -1).argmax(1) for o in outputs])
        return float((predicted == evaluation.labels).mean())
    if evaluation.reference is None:
        evaluation.reference = outputs
        return 1.0
    actual = np.concatenate([o.reshape(o.shape[0], -1) for o in outputs]).astype(np.float64)
    ref = np.concatenate([o.reshape(o.shape[0], -1) for o in evaluation.reference]).astype(
        np.float64)
    cosine = (actual * ref).sum(1) / np.maximum(
        np.linalg.norm(actual, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    return float(np.nan_to_num(cosine, nan=-1.0).mean())


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

    def __iter__(self):
        self.rewind()
        return iter(self.feeds)


# --------------------------------------------------------------------------- preparation


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _op_that_failed(model: onnx.ModelProto, message: str) -> str:
    """The graph op a version-converter error is about (the converter names it mangled)."""
    ops = sorted({n.op_type for n in model.graph.node}, key=len, reverse=True)
    named = next((op for op in ops if op in message), None)
    if named is None:
        return f"upgrading failed ({message.strip().splitlines()[0][:200]})"
    node = next(n for n in model.graph.node if n.op_type == named)
    return f"op {named!r} (node {node.name or node.output[0]!r}) cannot be upgraded"


def upgrade_opset(model_path: Path, work: Path) -> Path:
    """Upgrade a model older than opset 13 (per-channel QDQ needs it), or refuse by op."""
    from onnx import version_converter

    model = onnx.load(str(model_path))
    opset = _opset(model)
    if opset >= MIN_OPSET:
        return model_path
    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise ValueError(f"{model_path} uses opset {opset}; quantization needs opset >= "
                         f"{MIN_OPSET} and {_op_that_failed(model, str(exc))}; re-export the "
                         f"model with opset >= {MIN_OPSET}") from exc
    path = work / "upgraded.onnx"
    onnx.save(upgraded, str(path))
    return path


def prepare(model_path: Path, work: Path) -> Path:
    """ONNX Runtime's quantization pre-processing, after upgrading an old opset."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = upgrade_opset(model_path, work).resolve()
    prepared = (work / "prepared.onnx").resolve()
    # When symbolic shape inference gives up it saves a debug model (and its external data)
    # into the current folder; run it from the scratch folder so nothing is left behind.
    with _working_directory(work):
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        except Exception:
            # Symbolic inference gives up on some graphs (transformers with dynamic axes);
            # ONNX shape inference plus ORT's optimiser is what quantization needs.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    return prepared


@contextlib.contextmanager
def _working_directory(folder: Path):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


# --------------------------------------------------------------------------- quantizing


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "int8" else QuantType.QUInt8


def _quantize_static(prepared: Path, target: Path, config: QuantizeConfig, feeds,
                     exclude: list[str]) -> None:
    from onnxruntime import quantization as q

    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    fmt = q.QuantFormat.QDQ if config.format == "qdq" else q.QuantFormat.QOperator
    q.quantize_static(str(prepared), str(target), _FeedReader(feeds), quant_format=fmt,
                      per_channel=config.per_channel, reduce_range=config.reduce_range,
                      activation_type=_qtype(config.activation_type),
                      weight_type=q.QuantType.QInt8, nodes_to_exclude=list(exclude),
                      calibrate_method=methods[config.calibration],
                      extra_options={"ActivationSymmetric": config.symmetric,
                                     "WeightSymmetric": True})


def _quantize_fp16(prepared: Path, target: Path, config: QuantizeConfig,
                   exclude: list[str]) -> None:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(
        onnx.load(str(prepared)), keep_io_types=config.keep_io_fp32,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP16_FLOAT32_OPS),
        node_block_list=list(exclude) or None)
    # keep_io_types appends its Cast nodes at the end; the ONNX checker wants sorted nodes.
    sorted_model = OnnxModel(model)
    sorted_model.topological_sort()
    onnx.save(sorted_model.model, str(target))


def _quantize_int4(prepared: Path, target: Path, config: QuantizeConfig,
                   exclude: list[str]) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(prepared)), bits=4,
                                     block_size=config.block_size,
                                     is_symmetric=bool(config.symmetric),
                                     nodes_to_exclude=list(exclude))
    quantizer.process()
    if not any(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node):
        raise ValueError("quantize.mode='int4' found no MatMul with a constant 2-D weight to "
                         "quantize; int4 weight-only quantization is for transformer MatMuls "
                         "(use mode 'dynamic' or 'static' for this model)")
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def quantize_into(prepared: Path, target: Path, config: QuantizeConfig, feeds,
                  exclude: Iterable[str] = ()) -> None:
    """Quantize the prepared model into ``target``; ``exclude``: node names kept in float."""
    from onnxruntime import quantization as q

    exclude = list(exclude)
    if config.mode == "dynamic":
        q.quantize_dynamic(str(prepared), str(target), per_channel=config.per_channel,
                           reduce_range=config.reduce_range, weight_type=q.QuantType.QInt8,
                           nodes_to_exclude=exclude, extra_options={"WeightSymmetric": True})
    elif config.mode == "static":
        _quantize_static(prepared, target, config, feeds, exclude)
    elif config.mode == "fp16":
        _quantize_fp16(prepared, target, config, exclude)
    else:
        _quantize_int4(prepared, target, config, exclude)


# --------------------------------------------------------------------------- checks


def _non_finite_output(model_path: Path, feeds) -> str | None:
    """The name of the first float output holding NaN or Inf on ``feeds``, if any."""
    session = _cpu_session(model_path)
    for feed in feeds:
        for out, value in zip(session.get_outputs(), session.run(None, feed)):
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                return out.name
    return None


def check_input_finite(model_path: Path, feeds) -> None:
    """Refuse a float model that already gives NaN/Inf: quantization is not to blame."""
    name = _non_finite_output(model_path, feeds)
    if name is not None:
        raise ValueError(f"the float model {model_path.name} already gives NaN or Inf in "
                         f"output {name!r} on the calibration data; fix the model or the data "
                         "before quantizing")


def check_finite_outputs(model_path: Path, feeds) -> None:
    """Run the quantized model on the calibration feeds; refuse NaN or Inf outputs."""
    name = _non_finite_output(model_path, feeds)
    if name is not None:
        raise QuantizationCheckError(f"quantized model {model_path.name} gives NaN or Inf in "
                                     f"output {name!r} on calibration data")


def count_ops(model_path: Path) -> dict[str, int]:
    """How many nodes of each op type the graph holds (QuantizeLinear, MatMulNBits, ...)."""
    counts: dict[str, int] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


# --------------------------------------------------------------------------- accuracy-aware


def _relative_errors(float_acts: dict, quant_acts: dict) -> dict[str, float]:
    """``||fp32 - quantized|| / ||fp32||`` for every activation both models hold."""
    errors = {}
    for name, float_values in float_acts.items():
        if name not in quant_acts:
            continue
        ref = np.concatenate([v.ravel() for v in float_values]).astype(np.float64)
        got = np.concatenate([v.ravel() for v in quant_acts[name]]).astype(np.float64)
        if ref.shape == got.shape:
            noise = np.linalg.norm(np.nan_to_num(ref - got, nan=1e30, posinf=1e30))
            errors[name] = float(noise / max(np.linalg.norm(ref), 1e-12))
    return errors


def _collect(model_path: Path, feeds, work: Path) -> dict:
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations,
                                                         modify_model_output_intermediate_tensors)

    augmented = work / f"{model_path.stem}.activations.onnx"
    modify_model_output_intermediate_tensors(str(model_path), str(augmented))
    return collect_activations(str(augmented), _FeedReader(feeds))


def _first_rows(feeds: list[dict], rows: int) -> list[dict]:
    out, taken = [], 0
    for feed in feeds:
        if taken >= rows:
            break
        out.append(feed)
        taken += next(iter(feed.values())).shape[0]
    return out


def rank_nodes_by_error(float_path: Path, quant_path: Path, feeds, work: Path) -> list[dict]:
    """Nodes ranked by the quantization error each adds, worst first.

    A node's error is the relative error of its output (fp32 model vs quantized model, same
    inputs) minus the largest relative error among its inputs: what the node itself adds, so
    a layer late in the graph is not blamed for the error it inherits. In QDQ graphs a
    tensor's Q/DQ pair belongs to the node that produces it, so keeping a node in float may
    take its producer too; the search adds one node per step and records every step.
    """
    feeds = _first_rows(feeds, RANKING_ROWS)
    errors = _relative_errors(_collect(float_path, feeds, work), _collect(quant_path, feeds, work))
    ranking = []
    for node in onnx.load(str(float_path)).graph.node:
        if not node.name or not node.output or node.output[0] not in errors:
            continue
        inherited = max((errors.get(i, 0.0) for i in node.input), default=0.0)
        out_error = errors[node.output[0]]
        ranking.append({"node": node.name, "op": node.op_type,
                        "output_error": round(out_error, 6),
                        "added_error": round(max(0.0, out_error - inherited), 6)})
    ranking.sort(key=lambda r: r["added_error"], reverse=True)
    return [r for r in ranking if r["added_error"] > 0]


def _step(path: Path, float_nodes: list[str], evaluation: EvaluationSet,
          reference: float) -> dict:
    score = evaluate(path, evaluation)
    return {"float_nodes": list(float_nodes), "accuracy": round(score, 6),
            "drop": round(reference - score, 6), "path": path}


def accuracy_aware_quantize(prepared: Path, config: QuantizeConfig, feeds,
                            evaluation: EvaluationSet, tolerance: float,
                            work: Path) -> tuple[Path, dict]:
    """Quantize; while the drop exceeds ``tolerance``, keep the next-worst node in float.

    Returns the first step within tolerance, or the best step when none is, with a record
    of every step (nodes kept in float, accuracy, drop).
    """
    reference = evaluate(prepared, evaluation)
    first = work / "step00.onnx"
    quantize_into(prepared, first, config, feeds)
    steps = [_step(first, [], evaluation, reference)]
    ranking: list[dict] = []
    if steps[0]["drop"] > tolerance:
        ranking = rank_nodes_by_error(prepared, first, evaluation.batches, work)
    float_nodes: list[str] = []
    for candidate in ranking[:config.max_float_nodes]:
        if steps[-1]["drop"] <= tolerance:
            break
        float_nodes.append(candidate["node"])
        path = work / f"step{len(steps):02d}.onnx"
        quantize_into(prepared, path, config, feeds, exclude=float_nodes)
        steps.append(_step(path, float_nodes, evaluation, reference))
    within = [s for s in steps if s["drop"] <= tolerance]
    best = within[0] if within else max(steps, key=lambda s: (s["accuracy"],
                                                               -len(s["float_nodes"])))
    record = {"metric": evaluation.metric, "float_accuracy": round(reference, 6),
              "tolerance": tolerance, "met_tolerance": bool(within),
              "kept_in_float": best["float_nodes"], "accuracy": best["accuracy"],
              "steps": [{k: v for k, v in s.items() if k != "path"} for s in steps],
              "ranking": ranking[:max(config.max_float_nodes, 10)],
              "evaluation_rows": int(sum(next(iter(b.values())).shape[0]
                                         for b in evaluation.batches))}
    if not within:
        record["note"] = (f"no step met the tolerance {tolerance} (best drop "
                          f"{best['drop']:.4f} with {len(best['float_nodes'])} nodes in float, "
                          f"{len(ranking)} candidates, max_float_nodes="
                          f"{config.max_float_nodes}); returning the best step")
    return best["path"], record


# --------------------------------------------------------------------------- speed gate


def optimized_op_counts(model_path: Path) -> tuple[dict[str, int], int]:
    """Op counts of the graph ONNX Runtime actually runs on the CPU (after fusion), and the
    number of Q/DQ nodes at the graph's inputs and outputs (needed by any int8 graph)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])
        graph = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    boundary = sum(1 for n in graph.node
                   if (n.op_type == "QuantizeLinear" and n.input[0] in inputs)
                   or (n.op_type == "DequantizeLinear" and n.output[0] in outputs))
    return counts, boundary


def speed_gate_cause(candidate_path) -> str:
    """Why a quantized model is likely not faster than its fp32 input, read from the graph
    ONNX Runtime runs: Q/DQ nodes left unfused, compute ops left in float, fp16 casts."""
    counts, boundary = optimized_op_counts(Path(candidate_path))
    qdq = counts.get("QuantizeLinear", 0) + counts.get("DequantizeLinear", 0)
    inner = qdq - boundary
    left_float = {op: counts[op] for op in FLOAT_COMPUTE_OPS if counts.get(op)}
    int_ops = sum(counts.get(op, 0) for op in INT_COMPUTE_OPS)
    causes = []
    if inner > 0:
        causes.append(f"{inner} QuantizeLinear/DequantizeLinear nodes left unfused inside the "
                      "graph after ONNX Runtime's optimisation (each converts a whole tensor)")
    if left_float:
        listed = ", ".join(f"{n} {op}" for op, n in left_float.items())
        causes.append(f"compute ops left in float ({listed}) next to {int_ops} int8 ones")
    if counts.get("Cast", 0) and not int_ops:
        causes.append(f"{counts['Cast']} Cast nodes converting between float16 and float32 "
                      "(the CPU provider has few float16 kernels)")
    if not causes:
        causes.append(f"all {int_ops} compute ops run in int8; the model is likely too small "
                      "for faster int8 kernels to outweigh ONNX Runtime's fixed per-call "
                      f"overhead and the {boundary} Q/DQ conversions at its inputs/outputs")
    return "likely cause: " + "; ".join(causes)


# --------------------------------------------------------------------------- the stage


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
