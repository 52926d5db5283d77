"""A model's outputs as one flat, named list of tensors.

Models return a tensor, a tuple or list (possibly nested), a dict, or a Hugging Face
``ModelOutput`` (an ordered dict whose unset fields are None). Export, parity and pruning all
need the same flat order and the same names: :func:`flatten_outputs` walks the structure
depth first, in the order the model returns it, skips None, and names each tensor by its
path of keys and positions (``logits``, ``hidden_states.0``; ``output_0`` for a bare tuple).
:class:`FlatOutputs` wraps a model so that both ONNX exporters see a plain tuple in that
order, and the ONNX outputs line up with the torch ones by construction.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def flatten_outputs(output, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """``[(name, tensor), ...]`` for every tensor in ``output``, depth first."""
    if output is None:
        return []
    if isinstance(output, torch.Tensor):
        return [(prefix or "output", output)]
    if isinstance(output, Mapping):  # dicts and transformers' ModelOutput
        keys = [str(key) for key in output]
        values = list(output.values())
    elif isinstance(output, (tuple, list)):
        values = list(output)
        keys = [str(i) if prefix else f"output_{i}" for i in range(len(values))]
        if not prefix and len(values) == 1:
            keys = ["output"]
    else:
        raise ValueError(f"the model returns a {type(output).__name__} at "
                         f"{prefix or 'its output'}; export handles tensors, tuples, lists, "
                         "dicts and Hugging Face ModelOutput")
    flat = []
    for key, value in zip(keys, values):
        flat.extend(flatten_outputs(value, f"{prefix}.{key}" if prefix else key))
    return flat


def output_tensors(output) -> tuple[torch.Tensor, ...]:
    """The tensors of ``output`` in :func:`flatten_outputs` order."""
    return tuple(tensor for _, tensor in flatten_outputs(output))


def first_tensor(output) -> torch.Tensor:
    """The main output: the first tensor (``logits`` of a ``ModelOutput``)."""
    tensors = output_tensors(output)
    if not tensors:
        raise ValueError("the model returned no tensor (only None)")
    return tensors[0]


class FlatOutputs(nn.Module):
    """``model`` with its outputs flattened to a tuple (see :func:`flatten_outputs`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        return output_tensors(self.model(*inputs))
