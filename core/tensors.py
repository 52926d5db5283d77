"""Model inputs that are one tensor or a tuple of tensors (token ids and their mask).

A classifier takes one input tensor; a transformer takes several (``input_ids``,
``attention_mask``) that share the batch axis. These helpers let the same code slice,
count, stack and feed both, so the pipeline and distillation need no special case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def as_tuple(inputs: Any) -> tuple:
    """The inputs as a tuple: one tensor becomes a 1-tuple."""
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def is_multi(inputs: Any) -> bool:
    return isinstance(inputs, (tuple, list))


def num_rows(inputs: Any) -> int:
    """Rows on the shared batch axis."""
    return int(as_tuple(inputs)[0].shape[0])


def rows(inputs: Any, start: int, stop: int | None = None) -> Any:
    """Rows ``start:stop`` of every input, keeping the structure (tensor or tuple)."""
    if is_multi(inputs):
        return tuple(t[start:stop] for t in inputs)
    return inputs[start:stop]


def select(inputs: Any, index: torch.Tensor) -> Any:
    """The rows at ``index`` of every input, keeping the structure."""
    if is_multi(inputs):
        return tuple(t[index] for t in inputs)
    return inputs[index]


def concat(parts: Sequence[Any]) -> Any:
    """Stack batches along the batch axis, input by input."""
    if is_multi(parts[0]):
        return tuple(torch.cat([as_tuple(p)[i] for p in parts]) for i in range(len(parts[0])))
    return torch.cat(list(parts))


def to_numpy(inputs: Any) -> Any:
    """numpy arrays with the same structure."""
    if is_multi(inputs):
        return tuple(t.cpu().numpy() for t in inputs)
    return inputs.cpu().numpy()


def call(model: torch.nn.Module, inputs: Any):
    """``model(*inputs)`` for a tuple, ``model(inputs)`` for one tensor."""
    return model(*as_tuple(inputs))
