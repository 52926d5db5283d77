"""Will it fit in memory? The one check every large allocation passes first.

The estimate is deliberately rough and low: the model's weights twice (the file and the
runtime's copy) plus the inputs :data:`ACTIVATION_COPIES` times (inputs, outputs and the
intermediate activations of a small network). A run refused by it could not have fitted.
"""

from __future__ import annotations

from edgepack.core.errors import BadInput

ACTIVATION_COPIES = 3
MB = 1024 * 1024


def available_bytes() -> int:
    """Memory this machine can still hand out (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(what: str, model_bytes: int, feed_bytes: int,
               remedy: str = "lower --batch or the sizes given with --shape") -> None:
    """Refuse a run whose estimate exceeds the memory available now (``remedy``: what the
    user can change, for the message)."""
    check_needed(what, 2 * model_bytes + ACTIVATION_COPIES * feed_bytes,
                 f"model {model_bytes / MB:,.1f} MB, inputs {feed_bytes / MB:,.1f} MB", remedy)


def check_needed(what: str, needed: float, detail: str, remedy: str) -> None:
    """Refuse work whose estimate ``needed`` (bytes; ``detail`` says what it is made of)
    exceeds the memory available now."""
    available = available_bytes()
    if needed > available:
        raise BadInput(f"{what} needs about {needed / MB:,.0f} MB ({detail}) but this "
                       f"machine has {available / MB:,.0f} MB available; {remedy}")
