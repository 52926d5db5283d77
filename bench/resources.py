"""Will a run fit in memory? An estimate from the model and the input shapes, checked
before any large array is made, so ``--shape x=1,2000000000`` or ``--batch 1000000000`` gets
one line instead of an out-of-memory kill.

The estimate is deliberately rough and low: the model's weights twice (the file and the
runtime's copy) plus the inputs :data:`ACTIVATION_COPIES` times (inputs, outputs and the
intermediate activations of a small network). A run refused by it could not have fitted.
"""

from __future__ import annotations

import numpy as np

from edgepack.bench.inputs import ORT_TO_NUMPY, resolve_shape
from edgepack.core.memory_budget import ACTIVATION_COPIES, MB, available_bytes, check_fits

__all__ = ["ACTIVATION_COPIES", "MB", "available_bytes", "check_fits", "data_feed_bytes",
           "generated_feed_bytes"]


def generated_feed_bytes(session, batch: int, overrides: dict) -> int:
    """Bytes of the inputs that would be generated for ``session`` at ``batch``."""
    total = 0
    for inp in session.get_inputs():
        dtype = ORT_TO_NUMPY.get(inp.type)
        itemsize = np.dtype(dtype).itemsize if dtype is not None else 8
        total += int(np.prod(resolve_shape(inp, batch, overrides), dtype=np.float64)) * itemsize
    return total


def data_feed_bytes(feeds: dict[str, np.ndarray], batch: int) -> int:
    """Bytes of ``batch`` rows of real data (repeated when it has fewer rows)."""
    return int(sum(v[:1].nbytes * batch for v in feeds.values()))
