"""Before quantizing: ONNX Runtime's pre-processing, and an opset upgrade where needed."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import onnx

from edgepack.bench.ir_version import lower_to_runtime
from edgepack.compress.quantize.quantize_config import MIN_OPSET
from edgepack.core.files import working_directory


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
        if not lower_to_runtime(model):
            return model_path
        path = work / "lowered.onnx"  # stamped newer than onnxruntime reads; nothing else
        onnx.save(model, str(path))
        return path
    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise ValueError(f"{model_path} uses opset {opset}; quantization needs opset >= "
                         f"{MIN_OPSET} and {_op_that_failed(model, str(exc))}; re-export the "
                         f"model with opset >= {MIN_OPSET}") from exc
    path = work / "upgraded.onnx"
    lower_to_runtime(upgraded)
    onnx.save(upgraded, str(path))
    return path


def prepare(model_path: Path, work: Path) -> Path:
    """ONNX Runtime's quantization pre-processing, after upgrading an old opset."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = upgrade_opset(model_path, work).resolve()
    prepared = (work / "prepared.onnx").resolve()
    # When symbolic shape inference gives up it saves a debug model (and its external data)
    # into the current folder; run it from the scratch folder so nothing is left behind.
    with working_directory(work):
        try:
            # A failure here is expected on some graphs and handled below: its traceback,
            # which ONNX Runtime prints itself, is not the user's business.
            with contextlib.redirect_stderr(io.StringIO()):
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        except Exception:
            # Symbolic inference gives up on some graphs (transformers with dynamic axes);
            # ONNX shape inference plus ORT's optimiser is what quantization needs.
            _pre_process_without_symbolic_shapes(source, prepared, model_path)
    return prepared


def _pre_process_without_symbolic_shapes(source: Path, prepared: Path, model_path: Path) -> None:
    """The plain pre-processing; a model it cannot read is bad input, named in one line."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:  # ONNX Runtime's errors are not ValueErrors
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ValueError(f"ONNX Runtime's quantization pre-processing cannot read "
                         f"{model_path} ({type(exc).__name__}: {text})") from exc

