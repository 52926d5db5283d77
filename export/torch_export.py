"""torch ``nn.Module`` -> verified ONNX.

:func:`export_onnx` puts the model in eval mode, exports it (the dynamo exporter by default,
the TorchScript exporter when asked for), checks the file, and then runs the same held-out
inputs through torch and ONNX Runtime at two batch sizes. Every output gets a line with its
errors; beyond the tolerance a :class:`~export.parity.ParityError` is raised (exit code 1)
unless ``fail_on_mismatch`` is off. The parity numbers go into the stage record.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from compress.stage import StageConfig, StageResult, check_choice
from export.files import check_output_file
from export.onnx_checks import check_onnx_file, model_size_bytes, parameter_count
from export.parity import ParityError, compare_outputs, parity_summary

EXPORTERS = ("dynamo", "torchscript")
TWO_GB = 2 * 1024**3


class ExportError(RuntimeError):
    """The model could not be exported (exit code 1); the message names the cause."""

    exit_code = 1


@dataclass
class ExportConfig(StageConfig):
    """How to export: exporter, opset, dynamic batch, names and the parity tolerance."""

    kind = "export"
    exporter: str = "dynamo"
    opset: int = 18
    dynamic_batch: bool = True
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("logits",)
    atol: float = 1e-4
    rtol: float = 1e-3
    fail_on_mismatch: bool = True

    def __post_init__(self):
        check_choice("export", "exporter", self.exporter, EXPORTERS)
        if not 7 <= self.opset <= 23:
            raise ValueError(f"export.opset={self.opset} is outside the supported range 7..23")
        if self.exporter == "dynamo" and self.opset < 18:
            raise ValueError(f"export.opset={self.opset}: the dynamo exporter needs opset >= 18;"
                             " use exporter='torchscript' for older opsets")
        if self.atol < 0 or self.rtol < 0:
            raise ValueError("export.atol and export.rtol must be >= 0")
        if not self.input_names or not self.output_names:
            raise ValueError("export.input_names and export.output_names must not be empty")


def _as_tuple(inputs) -> tuple[torch.Tensor, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _at_batch(inputs: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """Inputs with ``batch`` rows, repeating rows when there are fewer."""
    out = []
    for tensor in inputs:
        reps = -(-batch // tensor.shape[0])
        out.append(tensor.repeat(reps, *([1] * (tensor.dim() - 1)))[:batch])
    return tuple(out)


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress prints and warnings (they are not ours to show)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _failing_part(exc: BaseException) -> str:
    """The first informative line of an exporter error (names the op or module)."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "[torch.onnx]")):
            return line[:300]
    return type(exc).__name__


def _export_to(model: nn.Module, inputs: tuple, path: Path, config: ExportConfig,
               large: bool) -> None:
    """Write the ONNX file (and external data when ``large``) at ``path``."""
    names = list(config.input_names)
    if len(names) != len(inputs):
        raise ValueError(f"export.input_names has {len(names)} names but the model takes "
                         f"{len(inputs)} inputs")
    if config.exporter == "dynamo":
        dynamic = None
        if config.dynamic_batch:
            batch = torch.export.Dim("batch", min=1, max=65536)
            dynamic = tuple({0: batch} for _ in inputs)
        program = torch.onnx.export(model, inputs, dynamo=True, dynamic_shapes=dynamic,
                                    input_names=names, output_names=list(config.output_names),
                                    opset_version=config.opset, verbose=False)
        program.save(str(path), external_data=large)
    else:
        axes = {n: {0: "batch"} for n in names + list(config.output_names)} \
            if config.dynamic_batch else None
        torch.onnx.export(model, inputs, str(path), dynamo=False, input_names=names,
                          output_names=list(config.output_names), dynamic_axes=axes,
                          opset_version=config.opset)


def _write_onnx(model: nn.Module, inputs: tuple, out_path: Path, config: ExportConfig) -> None:
    """Export into a temporary folder beside ``out_path``, then move files into place."""
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > TWO_GB * 0.9
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        tmp_model = tmp_dir / out_path.name
        try:
            with _quiet_exporter(), torch.no_grad():
                _export_to(model, inputs, tmp_model, config, large)
        except ValueError:
            raise
        except Exception as exc:
            other = "torchscript" if config.exporter == "dynamo" else "dynamo"
            raise ExportError(f"{config.exporter} export failed: {_failing_part(exc)}; "
                              f"try the {other} exporter (exporter='{other}', "
                              f"--exporter {other})") from exc
        check_onnx_file(tmp_model)
        for item in sorted(tmp_dir.iterdir(), key=lambda p: p.name == out_path.name):
            os.replace(item, out_path.parent / item.name)  # data files first, model last
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def check_parity(model: nn.Module, onnx_path: Path, inputs: tuple, config: ExportConfig,
                 batches: Sequence[int]) -> dict:
    """Run torch and ONNX Runtime on the same inputs at each batch size; compare outputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    results = []
    for batch in batches:
        batch_inputs = _at_batch(inputs, batch)
        with torch.no_grad():
            expected = model(*batch_inputs)
        expected = [t.detach().cpu().numpy() for t in _as_tuple(expected)]
        feeds = {i.name: t.cpu().numpy() for i, t in zip(session.get_inputs(), batch_inputs)}
        actual = session.run(None, feeds)
        for name, exp, act in zip(config.output_names, expected, actual):
            results.append(compare_outputs(name, batch, exp, act, config.atol, config.rtol))
    summary = parity_summary(results, config.atol, config.rtol)
    summary["lines"] = [r.line() for r in results]
    return summary


def export_onnx(model: nn.Module, config: ExportConfig, example_inputs, out_path,
                parity_inputs=None) -> StageResult:
    """Export ``model`` to ``out_path`` and check parity on held-out inputs.

    ``example_inputs``: a tensor or tuple of tensors fixing input ranks and dtypes.
    ``parity_inputs``: held-out inputs (same structure, several rows); the example inputs
    are used when none are given. Parity runs at batch 1 and at a larger batch when the
    batch axis is dynamic.
    """
    out_path = check_output_file(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"output {out_path} must end in .onnx")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()  # dropout and batch-norm statistics must not leak into the graph
    try:
        example = _as_tuple(example_inputs)
        # torch.export specialises sizes 0 and 1, so trace a dynamic batch with 2 rows.
        trace_inputs = _at_batch(example, 2) if config.dynamic_batch else example
        _write_onnx(model, trace_inputs, out_path, config)
        held_out = _as_tuple(parity_inputs) if parity_inputs is not None else example
        batches = [1, max(2, min(8, held_out[0].shape[0]))] if config.dynamic_batch \
            else [example[0].shape[0]]
        parity = check_parity(model, out_path, held_out, config, batches)
    finally:
        model.train(was_training)
    import onnx

    record = {"exporter": config.exporter, "opset": config.opset,
              "dynamic_batch": config.dynamic_batch,
              "params": parameter_count(onnx.load(str(out_path), load_external_data=False)),
              "size_bytes": model_size_bytes(out_path), "parity": parity}
    if not parity["ok"] and config.fail_on_mismatch:
        raise ParityError(f"ONNX outputs differ from torch beyond atol={config.atol}, "
                          f"rtol={config.rtol}:\n" + "\n".join(parity["lines"]))
    return StageResult(artifact=out_path, record=record)
