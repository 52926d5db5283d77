"""The teacher's outputs on a training set, kept on disk for the next run with the same
teacher and inputs.

Distilling an embedding student on tens of thousands of sentences starts with a teacher
pass over all of them (minutes on a CPU); a second run of the recipe, or a ``--resume``
after a kill, would pay it again for the same numbers. With ``cache_targets = true`` the
outputs are saved as safetensors (no pickle) under ``$XDG_CACHE_HOME/edgepack/targets``,
named by a SHA-256 of everything they depend on: the teacher's architecture (its module
tree), every weight and buffer (names, dtypes, shapes, bytes), the input rows, and
torch's version. A file that is damaged or does not match the rows is computed again.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgepack.compress.kd import teacher_outputs
from edgepack.compress.parallel import Distributed
from edgepack.compress.token_batches import outputs_by_length
from edgepack.core.files import atomic_path, cache_dir
from edgepack.core.tensors import as_tuple, num_rows

FOLDER = "targets"


def _update(digest, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}{list(tensor.shape)}".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def targets_key(teacher: nn.Module, inputs) -> str:
    """What the teacher's outputs on ``inputs`` depend on, as a hex digest."""
    digest = hashlib.sha256()
    digest.update(f"torch {torch.__version__}\n{teacher!r}\n".encode())
    for name, tensor in teacher.state_dict().items():
        digest.update(name.encode())
        _update(digest, tensor)
    for tensor in as_tuple(inputs):
        _update(digest, tensor)
    return digest.hexdigest()[:32]


def _read(path: Path, rows: int) -> torch.Tensor | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        found = load_file(str(path)).get("targets")
    except (OSError, SafetensorError, ValueError):
        return None   # a damaged entry is computed again
    return found if found is not None and len(found) == rows else None


def cached_targets(teacher: nn.Module, inputs, compute: Callable[[], torch.Tensor],
                   enabled: bool = True) -> tuple[torch.Tensor, str]:
    """``compute()``'s result, read from the cache when an earlier run saved it; and where it
    came from (``"computed"``, ``"cache"``, or ``"computed (cache not written: ...)"``)."""
    if not enabled:
        return compute(), "computed"
    path = cache_dir() / FOLDER / f"{targets_key(teacher, inputs)}.safetensors"
    if path.is_file():
        found = _read(path, num_rows(inputs))
        if found is not None:
            return found, "cache"
    targets = compute()
    from safetensors.torch import save_file

    try:
        with atomic_path(path) as tmp:
            save_file({"targets": targets.detach().cpu().contiguous()}, str(tmp))
    except (OSError, ValueError) as exc:   # a read-only cache costs time, never the run
        return targets, f"computed (cache not written: {exc})"
    return targets, "computed"


def teacher_targets(teacher: nn.Module, inputs, precomputed: bool, length_grouped: bool,
                    cache: bool) -> tuple[torch.Tensor, str]:
    """Distillation's targets for every training row and a line saying where they came from:
    the teacher's outputs computed once (length-sorted for token inputs), or read from the
    cache of an earlier run (``cache``; not under torchrun); zeros when each step runs the
    teacher itself (``precomputed`` false)."""
    if not precomputed:
        return torch.zeros(num_rows(inputs)), "each step"
    compute = (lambda: outputs_by_length(teacher, inputs)) if length_grouped else \
        (lambda: teacher_outputs(teacher, inputs))
    started = time.perf_counter()
    targets, source = cached_targets(teacher, inputs, compute,
                                     enabled=cache and not Distributed().active)
    return targets, f"{source} in {time.perf_counter() - started:.1f} s"
