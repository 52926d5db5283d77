"""Parity of a torch export: torch in float64 and float32 against ONNX Runtime, on held-out
inputs at two batch sizes and at a second length of every extra dynamic axis, by the rule of
:mod:`edgepack.export.parity`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgepack.export.outputs import output_tensors
from edgepack.export.parity import ParityError, float64_twin, judge_output, reference_summary


def at_length(tensor: torch.Tensor, axis: int, length: int) -> torch.Tensor:
    """``tensor`` cut or tiled along ``axis`` to ``length``."""
    reps = [1] * tensor.dim()
    reps[axis] = -(-length // tensor.shape[axis])
    return tensor.repeat(*reps).narrow(axis, 0, length)


def at_batch(inputs: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """Inputs with ``batch`` rows, repeating rows when there are fewer."""
    return tuple(at_length(tensor, 0, batch) for tensor in inputs)


def parity_cases(held_out: tuple, dynamic_batch: bool, dynamic_axes: tuple[int, ...],
                 example_batch: int):
    """(label, batch, inputs) to compare: two batch sizes, and a second length per axis."""
    batches = [1, max(2, min(8, held_out[0].shape[0]))] if dynamic_batch else [example_batch]
    for batch in batches:
        yield f"batch {batch}", batch, at_batch(held_out, batch)
    batch = batches[-1]
    for axis in dynamic_axes:
        length = held_out[0].shape[axis]
        other = length - 1 if length > 2 else length + 1
        changed = tuple(at_length(t, axis, other) for t in at_batch(held_out, batch))
        yield f"batch {batch}, axis {axis} = {other}", batch, changed


def _outputs(model: nn.Module | None, inputs: tuple, dtype=None) -> list | None:
    """The model's flattened outputs as float64 numpy (inputs cast to ``dtype`` when they
    are floating point); None for no model."""
    if model is None:
        return None
    if dtype is not None:
        inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    with torch.no_grad():
        return [t.detach().cpu().double().numpy() for t in output_tensors(model(*inputs))]


def _reference_runs(model: nn.Module, inputs: tuple):
    """The float64 twin of ``model`` and why there is none (then torch float32 is the
    reference): a model whose float64 copy cannot be made or cannot run on float64 inputs."""
    twin, why = float64_twin(model)
    if twin is None:
        return None, why
    try:
        _outputs(twin, inputs, torch.float64)
    except Exception as exc:  # noqa: BLE001 - recorded; float32 becomes the reference
        return None, f"the model does not run in float64 ({type(exc).__name__}: {exc})"
    return twin, ""


def check_parity(model: nn.Module, onnx_path: Path, held_out: tuple, *, multiple: float,
                 dynamic_batch: bool = True, dynamic_axes: tuple[int, ...] = (),
                 example_batch: int = 1) -> dict:
    """Run torch (float64 and float32) and ONNX Runtime on the same inputs in each case;
    judge every output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    twin, why = _reference_runs(model, at_batch(held_out, 1))
    results = []
    for label, batch, inputs in parity_cases(held_out, dynamic_batch, dynamic_axes,
                                             example_batch):
        mine = _outputs(model, inputs)
        reference = _outputs(twin, inputs, torch.float64) if twin is not None else mine
        if len(mine) != len(output_names):
            raise ParityError(f"torch returns {len(mine)} outputs but the ONNX model has "
                              f"{len(output_names)} ({', '.join(output_names)})")
        feeds = {i.name: t.cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
        for name, ref, own, act in zip(output_names, reference, mine, session.run(None, feeds)):
            results.append(judge_output(name, ref, own if twin is not None else None, act,
                                        multiple=multiple, label=label, batch=batch))
    return reference_summary(results, multiple,
                             "torch float64" if twin is not None else f"torch float32 ({why})")


__all__ = ["at_batch", "at_length", "check_parity", "parity_cases"]
