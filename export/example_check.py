"""Before exporting: the model must run in torch on the example inputs it is given.

An exporter that meets inputs the model cannot take (a second input it was not given,
float values where it wants integer token ids, another shape) fails deep inside tracing,
and its message blames the exporter. Running the model once first puts the blame where it
belongs: on the inputs, as bad input (exit 2), with what to pass instead.
"""

from __future__ import annotations

import torch
from torch import nn

from edgepack.core.errors import BadInput


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:240] if text else ""


def check_model_runs(model: nn.Module, example: tuple) -> None:
    """Run the model once in torch: inputs it cannot take (a second input, integer token
    ids, another shape) are the caller's mistake, not the exporter's."""
    given = ", ".join(f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}" for t in example)
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(*example)
    except Exception as exc:  # whatever the model raises on inputs it cannot take
        raise BadInput(f"the model does not run on the example input ({given}): "
                       f"{type(exc).__name__}: {_first_line(exc) or 'no message'}; give "
                       "inputs that match its forward() (the command line passes one float32 "
                       "tensor of --input-shape; for several or integer inputs call "
                       "export.export_onnx from Python with example tensors, or use --hf)") \
            from exc
    finally:
        model.train(was_training)
