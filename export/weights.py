"""Load and save torch weights without running code.

Weights are safetensors by default. A ``.pt``/``.pth`` checkpoint is read with
``torch.load(path, weights_only=True)`` passed explicitly; there is no fallback to full
unpickling after an error. Only ``trust_pickle=True`` (the CLI's ``--trust-pickle``) allows
that, with a warning. Loaded weights are checked for NaN and Inf.

A structured-pruned model has narrower layers than the architecture its builder makes.
:func:`load_weights` resizes standard layers (Conv, Linear, norms) to the stored shapes, so
a pruned model is rebuilt from its builder plus a safetensors file, with no pickle.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from edgepack.core.files import atomic_path


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Save a module's state dict as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return Path(path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a valid safetensors file ({exc})") from exc


def _torch_load(path: Path, weights_only: bool):
    """``torch.load`` from an open file, so the content decides the format, not the name
    (given a path ending in ``.safetensors``, torch.load reads it as safetensors)."""
    with open(path, "rb") as handle:
        return torch.load(handle, map_location="cpu", weights_only=weights_only)


def _read_torch_checkpoint(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    if not zipfile.is_zipfile(path):
        # Legacy (non-zip) pickles can only be read by full unpickling.
        if not trust_pickle:
            raise ValueError(f"{path} is not a torch zip checkpoint (truncated, or another "
                             "format); expected .safetensors or a torch.save() zip file")
    if trust_pickle:
        warnings.warn(f"loading {path} with full unpickling: this runs any code it holds",
                      stacklevel=3)
        obj = _torch_load(path, weights_only=False)
    else:
        try:
            obj = _torch_load(path, weights_only=True)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise ValueError(f"{path} cannot be loaded safely (weights_only=True refused it: "
                             f"{type(exc).__name__} {reason}); convert it to safetensors, "
                             "or pass --trust-pickle if you trust its source") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return obj


def read_weights(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch checkpoint, safely, and check it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"weights file {path} is empty or not a file")
    with open(path, "rb") as handle:
        head = handle.read(9)
    # Decide by content, not by the name: a zip is a torch checkpoint and an 8-byte length
    # followed by a JSON header is safetensors, whatever the file is called.
    if head.startswith(b"PK"):
        tensors = _read_torch_checkpoint(path, trust_pickle)
    elif head[8:9] == b"{" or path.suffix not in (".pt", ".pth", ".bin"):
        tensors = _read_safetensors(path)
    else:
        tensors = _read_torch_checkpoint(path, trust_pickle)
    check_finite(tensors, str(path))
    return tensors


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or Inf, naming the first bad tensor."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"weights {source}: tensor {name!r} holds NaN or Inf")


def _resize_module(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Give a module's own parameters and buffers the shapes stored in ``tensors``."""
    for name, param in list(module.named_parameters(recurse=False)):
        stored = tensors.get(prefix + name)
        if stored is not None and stored.shape != param.shape:
            setattr(module, name, nn.Parameter(torch.empty_like(stored), param.requires_grad))
    for name, buf in list(module.named_buffers(recurse=False)):
        stored = tensors.get(prefix + name)
        if buf is not None and stored is not None and stored.shape != buf.shape:
            module.register_buffer(name, torch.empty_like(stored))
    if isinstance(module, nn.modules.conv._ConvNd):
        module.out_channels = module.weight.shape[0]
        module.in_channels = module.weight.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = module.weight.shape[0] if module.weight is not None else \
            module.running_mean.shape[0]
    elif isinstance(module, nn.LayerNorm) and module.weight is not None:
        module.normalized_shape = tuple(module.weight.shape)
    elif isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = module.weight.shape


def output_layer(model: nn.Module) -> str | None:
    """The name of the model's output layer: its last Linear or convolution."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    return names[-1] if names else None


def check_shapes(model: nn.Module, tensors: dict[str, torch.Tensor], path) -> None:
    """Resizing serves pruned layers only: a tensor of another rank, or an output layer of
    another size (3 classes loaded into a 4-class model), is refused by name."""
    state = model.state_dict()
    head = output_layer(model)
    for name, own in state.items():  # the model's order: a layer's weight before its bias
        stored = tensors[name]
        if stored.shape == own.shape:
            continue
        if stored.dim() != own.dim():
            raise ValueError(f"weights {path}: tensor {name!r} has shape {list(stored.shape)} "
                             f"but the model's has shape {list(own.shape)} (rank "
                             f"{stored.dim()} vs {own.dim()})")
        if head is not None and name.startswith(head + ".") and stored.shape[0] != own.shape[0]:
            raise ValueError(f"weights {path}: output layer tensor {name!r} has shape "
                             f"{list(stored.shape)} but the model's has shape "
                             f"{list(own.shape)}; the weights were made for a model with "
                             "another number of outputs")


def load_weights(model: nn.Module, path: str | os.PathLike,
                 trust_pickle: bool = False) -> nn.Module:
    """Load weights into ``model``, resizing layers a structured pruning narrowed."""
    tensors = read_weights(path, trust_pickle=trust_pickle)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        detail = (f"missing {sorted(missing)[:3]}" if missing else "") + \
                 (f" unexpected {sorted(unexpected)[:3]}" if unexpected else "")
        raise ValueError(f"weights {path} do not match the model: {detail.strip()}")
    check_shapes(model, tensors, path)
    for mod_name, module in model.named_modules():
        _resize_module(module, tensors, f"{mod_name}." if mod_name else "")
    model.load_state_dict(tensors)
    return model
