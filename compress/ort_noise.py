"""ONNX Runtime quantizer messages that say nothing a user can act on, dropped at the source.

With ``per_channel=True``, ORT's QDQ quantizer asks for channel axis 1 of every weight it
quantizes; a 1-D weight (a LayerNorm scale, ``norm.weight``) has no axis 1, so ORT logs
"Axis 1 is out-of-range for weight 'norm.weight' with rank 1" -- once per LayerNorm -- and
quantizes that weight per tensor, which is the only sensible choice for it. The result is
right; only the message is noise. :func:`per_tensor_1d_weights_quietly` drops exactly that
message (rank-1 weights) and nothing else: an out-of-range axis on a weight of higher rank
is still shown.
"""

from __future__ import annotations

import contextlib
import logging
import re

_RANK1_AXIS = re.compile(r"^Axis -?\d+ is out-of-range for weight '.*' with rank 1$")


class _RankOneAxisFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _RANK1_AXIS.match(record.getMessage())


@contextlib.contextmanager
def per_tensor_1d_weights_quietly():
    """While quantizing, drop ORT's per-channel axis warning for 1-D weights."""
    quiet = _RankOneAxisFilter()
    root = logging.getLogger()  # ORT logs it with logging.warning(), on the root logger
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)
