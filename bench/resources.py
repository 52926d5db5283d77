"""Will a run fit in memory? An estimate from the model and the input shapes, checked
before any large array is made, so ``--shape x=1,2000000000`` or ``--batch 1000000000`` gets
one line instead of an out-of-memory kill.

The estimate is deliberately rough and low: the model's weights twice (the file and the
runtime's copy) plus the inputs :data:`ACTIVATION_COPIES` times (inputs, outputs and the
intermediate activations of a small network). A run refused by it could not have fitted.
"""

from __future__ import annotations

import numpy as np

from bench.inputs import ORT_TO_NUMPY, resolve_shape
from core.errors import BadInput

ACTIVATION_COPIES = 3
MB = 1024 * 1024


def available_bytes() -> int:
    """Memory this machine can still hand out (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


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


def check_fits(what: str, model_bytes: int, feed_bytes: int,
               remedy: str = "lower --batch or the sizes given with --shape") -> None:
    """Refuse a run whose estimate exceeds the memory available now (``remedy``: what the
    user can change, for the message)."""
    needed = 2 * model_bytes + ACTIVATION_COPIES * feed_bytes
    available = available_bytes()
    if needed > available:
        raise BadInput(f"{what} needs about {needed / MB:,.0f} MB (model "
                       f"{model_bytes / MB:,.1f} MB, inputs {feed_bytes / MB:,.1f} MB) but this "
                       f"machine has {available / MB:,.0f} MB available; {remedy}")
