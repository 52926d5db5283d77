"""torch ``nn.Module`` -> verified ONNX.

:func:`export_onnx` puts the model in eval mode, exports it (the dynamo exporter by default,
the TorchScript exporter when asked for), checks the file, and then runs the same held-out
inputs through torch (float64 and float32) and ONNX Runtime at two batch sizes (and at a
second length of every extra dynamic axis, such as a sequence: :mod:`edgepack.export.torch_parity`).
Every output gets a line with its errors; beyond the rule of :mod:`edgepack.export.parity` a
:class:`~edgepack.export.parity.ParityError` is raised (exit code 1) and the model is not put in
place, unless ``fail_on_mismatch`` is off. The parity numbers go into the record.

The export is written in a scratch folder beside the output and moved into place once it
passed; weights too large for one protobuf file go to ``<model>.onnx.data`` beside it.
An exporter failure becomes one :class:`ExportError` line naming the failing op or module
and suggesting the other exporter.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from edgepack.bench.ir_version import lower_file_to_runtime
from edgepack.core.checks import check_choice
from edgepack.core.errors import CheckFailed
from edgepack.core.files import check_output_file
from edgepack.core.output_paths import mark_onnx_file
from edgepack.core.onnx_files import (check_onnx_file, external_tensor_names, model_size_bytes,
                                      parameter_count)
from edgepack.core.stage import (StageConfig, StageInput, StageResult, StageSpec, option,
                                 register_stage)
from edgepack.export.example_check import check_model_runs
from edgepack.export.outputs import FlatOutputs, flatten_outputs
from edgepack.export.parity import PARITY_MULTIPLE, ParityError, check_parity_multiple, parity_failure
from edgepack.export.torch_parity import at_length, check_parity

EXPORTERS = ("dynamo", "torchscript")
TWO_GB = 2 * 1024**3
# A protobuf file cannot exceed 2 GB; weights above ~90 % of that go to a data file.
EXTERNAL_DATA_THRESHOLD = int(TWO_GB * 0.9)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class ExportError(CheckFailed):
    """The model could not be exported (exit code 1); the message names the cause."""

    exit_code = 1


@dataclass
class ExportConfig(StageConfig):
    """How to export: exporter, opset, dynamic axes, names and the parity tolerance.

    ``dynamic_axes`` lists extra input axes (besides the batch axis 0) whose size varies,
    e.g. ``(1,)`` for a sequence length; the same axis of every input shares one size, as
    token ids and their attention mask do. ``external_data_threshold`` is the weight size in
    bytes above which the weights are written to ``<model>.onnx.data`` beside the model.
    """

    kind = "export"
    exporter: str = option("dynamo", "torch exporter", choices=EXPORTERS)
    opset: int = option(18, "ONNX opset (with --hf: optimum's choice unless given)")
    dynamic_batch: bool = option(True, "a free batch axis (--no-dynamic-batch fixes it)")
    input_names: tuple[str, ...] = option(("input",), "ONNX input names")
    output_names: tuple[str, ...] = option(("logits",), "ONNX output names")
    parity_multiple: float = option(PARITY_MULTIPLE, "parity: ONNX Runtime's error against a "
                                    "float64 torch run may be this many times torch's own "
                                    "float32 error (edgepack.export.parity)")
    fail_on_mismatch: bool = option(True, "a parity mismatch fails the export (exit 1); "
                                          "--no-fail-on-mismatch only warns")
    dynamic_axes: tuple[int, ...] = option((), "extra input axes whose size varies, e.g. 1")
    external_data_threshold: int = option(EXTERNAL_DATA_THRESHOLD,
                                          "weights above this many bytes go to <model>.onnx.data")

    def __post_init__(self):
        check_choice("export", "exporter", self.exporter, EXPORTERS)
        if not 7 <= self.opset <= 23:
            raise ValueError(f"export.opset={self.opset} is outside the supported range 7..23")
        if self.exporter == "dynamo" and self.opset < 18:
            raise ValueError(f"export.opset={self.opset}: the dynamo exporter needs opset >= 18;"
                             " use exporter='torchscript' for older opsets")
        check_parity_multiple("export.parity_multiple", self.parity_multiple)
        if not self.input_names or not self.output_names:
            raise ValueError("export.input_names and export.output_names must not be empty")
        self.dynamic_axes = tuple(self.dynamic_axes)
        if any(axis < 1 for axis in self.dynamic_axes) or \
                len(set(self.dynamic_axes)) != len(self.dynamic_axes):
            raise ValueError(f"export.dynamic_axes={list(self.dynamic_axes)} must be distinct "
                             "axes >= 1 (axis 0 is the batch, set by dynamic_batch)")
        if self.external_data_threshold < 0:
            raise ValueError(f"export.external_data_threshold={self.external_data_threshold} "
                             "must be >= 0 bytes")


def _as_tuple(inputs) -> tuple[torch.Tensor, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _check_input_ranks(inputs: tuple[torch.Tensor, ...], config: ExportConfig) -> None:
    names = list(config.input_names)
    if len(names) != len(inputs):
        raise ValueError(f"export.input_names has {len(names)} names but the model takes "
                         f"{len(inputs)} inputs")
    for name, tensor in zip(names, inputs):
        too_high = [axis for axis in config.dynamic_axes if axis >= tensor.dim()]
        if too_high:
            raise ValueError(f"export.dynamic_axes={list(config.dynamic_axes)}: input {name!r} "
                             f"has only {tensor.dim()} dims (shape {tuple(tensor.shape)})")


def _trace_inputs(example: tuple[torch.Tensor, ...], config: ExportConfig) -> tuple:
    """Example inputs with every dynamic axis at least 2 long.

    torch.export specialises sizes 0 and 1: a batch-1 example would fix the batch axis to 1.
    """
    dynamic = ([0] if config.dynamic_batch else []) + list(config.dynamic_axes)
    out = []
    for tensor in example:
        for axis in dynamic:
            if tensor.shape[axis] < 2:
                tensor = at_length(tensor, axis, 2)
        out.append(tensor)
    return tuple(out)


@contextlib.contextmanager
def _native_output_discarded():
    """Discard what C++ code writes to file descriptors 1 and 2 (the TorchScript exporter
    logs its whole IR graph there on failure); Python-level output is handled separately."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no usable descriptors (an embedded interpreter): nothing to discard
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints and warnings (they are not ours to show;
    a failure is reported by :func:`describe_export_failure`)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "torch.fx.experimental.symbolic_shapes",
                                              "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), _native_output_discarded():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a ``raise ... from`` chain (the exporter wraps it twice)."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def _first_line(exc: BaseException) -> str:
    for line in ANSI_ESCAPE.sub("", str(exc)).splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "[torch.onnx]")):
            return line[:240]
    return ""


def _failing_code(exc: BaseException) -> tuple[str, int, str] | None:
    """(file, line, source) of the user's code the exporter blamed, when it says so."""
    text = ANSI_ESCAPE.sub("", "\n".join(str(e) for e in (exc, _root_cause(exc))))
    found = re.findall(r'File "([^"]+)", line (\d+), in \w+(?:\n[ \t]+(\S[^\n]*))?', text)
    if not found:
        return None
    filename, line, source = found[-1]
    return filename, int(line), source.strip()


def _module_at(model: nn.Module, filename: str, line: int) -> str:
    """The name of the submodule whose ``forward`` holds ``filename:line``, or ''."""
    for name, module in model.named_modules():
        code = getattr(type(module).forward, "__code__", None)
        if code is None or os.path.abspath(code.co_filename) != os.path.abspath(filename):
            continue
        lines = [ln for _, _, ln in code.co_lines() if ln is not None]
        if lines and min(lines) <= line <= max(lines):
            return f"{name or 'model'} ({type(module).__name__})"
    return ""


def describe_export_failure(model: nn.Module, exc: BaseException, exporter: str) -> str:
    """One line: what failed (the op or module and the line of code) and what to try."""
    cause = _root_cause(exc)
    reason = _first_line(cause) or _first_line(exc) or type(exc).__name__
    where = ""
    code = _failing_code(exc)
    if code is not None:
        filename, line, source = code
        module = _module_at(model, filename, line)
        where = (f" in module {module}" if module else "") + \
            f" at {os.path.basename(filename)}:{line}" + (f" `{source[:80]}`" if source else "")
    other = "torchscript" if exporter == "dynamo" else "dynamo"
    return (f"{exporter} export failed{where}: {type(cause).__name__}: {reason}; "
            f"try the {other} exporter (exporter='{other}', --exporter {other})")


def _dynamo_shapes(inputs: tuple, config: ExportConfig):
    if not config.dynamic_batch and not config.dynamic_axes:
        return None
    dims = {axis: torch.export.Dim(f"axis{axis}", min=1, max=1 << 20)
            for axis in config.dynamic_axes}
    if config.dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=1 << 16)
    # One entry: the exported module is :class:`FlatOutputs`, whose ``forward(*inputs)``
    # takes the inputs as a single variadic argument.
    return (tuple(dict(dims) for _ in inputs),)


def _torchscript_axes(config: ExportConfig):
    if not config.dynamic_batch and not config.dynamic_axes:
        return None
    input_axes = {axis: f"axis{axis}" for axis in config.dynamic_axes}
    if config.dynamic_batch:
        input_axes[0] = "batch"
    axes = {name: dict(input_axes) for name in config.input_names}
    if config.dynamic_batch:
        axes.update({name: {0: "batch"} for name in config.output_names})
    return axes


def _export_to(model: nn.Module, inputs: tuple, path: Path, config: ExportConfig) -> None:
    """Write the ONNX file at ``path`` (weights inline unless they cannot fit 2 GB)."""
    names, outputs = list(config.input_names), list(config.output_names)
    if config.exporter == "dynamo":
        program = torch.onnx.export(model, inputs, dynamo=True,
                                    dynamic_shapes=_dynamo_shapes(inputs, config),
                                    input_names=names, output_names=outputs,
                                    opset_version=config.opset, verbose=False)
        program.save(str(path), external_data=_weight_bytes(model) > EXTERNAL_DATA_THRESHOLD)
    else:
        torch.onnx.export(model, inputs, str(path), dynamo=False, input_names=names,
                          output_names=outputs, dynamic_axes=_torchscript_axes(config),
                          opset_version=config.opset)


def _weight_bytes(model: nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def move_weights_to_data_file(model_path: Path) -> Path:
    """Rewrite ``model_path`` with every weight of 1 KiB or more in one file beside it.

    The exporters may leave no data file, one, or one per tensor; afterwards there is
    exactly ``<model>.data`` in the same folder (the only other file the model refers to).
    """
    import onnx

    model = onnx.load(str(model_path))  # our own fresh export: its data paths are ours
    for item in model_path.parent.iterdir():
        item.unlink()
    data_name = f"{model_path.name}.data"
    onnx.save_model(model, str(model_path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
    return model_path.parent / data_name


def _write_onnx(model: nn.Module, inputs: tuple, tmp_model: Path, config: ExportConfig) -> None:
    """Export to ``tmp_model`` (in a scratch folder), move weights out if large, check it."""
    try:
        with _quiet_exporter(), torch.no_grad():
            _export_to(FlatOutputs(model).train(model.training), inputs, tmp_model, config)
    except Exception as exc:  # the exporters raise anything; the message says what
        raise ExportError(describe_export_failure(model, exc, config.exporter)) from exc
    lower_file_to_runtime(tmp_model)  # onnx may stamp an IR newer than onnxruntime reads
    mark_onnx_file(tmp_model, "export")
    if _weight_bytes(model) > config.external_data_threshold:
        move_weights_to_data_file(tmp_model)
    check_onnx_file(tmp_model)


def _move_into_place(tmp_dir: Path, out_path: Path) -> None:
    for item in sorted(tmp_dir.iterdir(), key=lambda p: p.name == out_path.name):
        os.replace(item, out_path.parent / item.name)  # data files first, model last


def output_names_for(model: nn.Module, example: tuple, config: ExportConfig) -> tuple[str, ...]:
    """The ONNX output names, one per output tensor (see :mod:`edgepack.export.outputs`).

    The configured names when there is one per tensor; the model's own keys when it returns
    a dict or ``ModelOutput``; for a tuple with more tensors than names, the names first
    and the flattened positions (``output_1``) for the rest. More names than tensors is an
    error.
    """
    with torch.no_grad():
        output = model(*example)
    flat = [name for name, _ in flatten_outputs(output)]
    names = list(config.output_names)
    if len(flat) == len(names):
        return tuple(names)
    if hasattr(output, "keys"):
        return tuple(flat)
    if len(names) < len(flat):
        rest = [name if name not in names else f"{name}_{i}"
                for i, name in enumerate(flat[len(names):], len(names))]
        return tuple(names + rest)
    raise ValueError(f"export.output_names has {len(names)} names ({', '.join(names)}) but "
                     f"the model returns {len(flat)} tensor(s) ({', '.join(flat)}); give one "
                     "name per output")


def export_onnx(model: nn.Module, config: ExportConfig, example_inputs, out_path,
                parity_inputs=None) -> StageResult:
    """Export ``model`` to ``out_path`` and check parity on held-out inputs.

    ``example_inputs``: a tensor or tuple of tensors fixing input ranks and dtypes.
    ``parity_inputs``: held-out inputs (same structure, several rows); the example inputs
    are used when none are given. Parity runs at batch 1 and at a larger batch when the
    batch axis is dynamic, and at a second length of each axis in ``dynamic_axes``.
    Beyond the tolerance it raises :class:`ParityError` and leaves ``out_path`` as it was,
    unless ``fail_on_mismatch`` is off: then the model is written and the record says
    ``parity.ok = False``.
    """
    out_path = check_output_file(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"output {out_path} must end in .onnx")
    example = _as_tuple(example_inputs)
    _check_input_ranks(example, config)
    check_model_runs(model, example)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()  # dropout and batch-norm statistics must not leak into the graph
    try:
        config = replace(config, output_names=output_names_for(model, example, config))
    except Exception:
        model.train(was_training)
        raise
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        tmp_model = tmp_dir / out_path.name
        _write_onnx(model, _trace_inputs(example, config), tmp_model, config)
        held_out = _as_tuple(parity_inputs) if parity_inputs is not None else example
        parity = check_parity(model, tmp_model, held_out, multiple=config.parity_multiple,
                              dynamic_batch=config.dynamic_batch,
                              dynamic_axes=config.dynamic_axes,
                              example_batch=example[0].shape[0])
        if not parity["ok"] and config.fail_on_mismatch:
            raise parity_failure(parity)
        _move_into_place(tmp_dir, out_path)
    finally:
        model.train(was_training)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    import onnx

    header = onnx.load(str(out_path), load_external_data=False)
    record = {"exporter": config.exporter, "opset": config.opset,
              "dynamic_batch": config.dynamic_batch, "dynamic_axes": list(config.dynamic_axes),
              "output_names": list(config.output_names),
              "external_data": bool(external_tensor_names(header)),
              "params": parameter_count(header),
              "size_bytes": model_size_bytes(out_path), "parity": parity}
    return StageResult(artifact=out_path, record=record)


def _run_stage(config: ExportConfig, given: StageInput) -> StageResult:
    from edgepack.core.tensors import rows

    parity = rows(given.eval_inputs, 0, 64) if given.eval_inputs is not None else None
    return export_onnx(given.artifact, config, given.example_inputs,
                       given.folder / "model.onnx", parity_inputs=parity)


register_stage(StageSpec("export", ExportConfig, consumes="torch", produces="onnx",
                         run=_run_stage, failures=(ParityError, ExportError), once=True))
