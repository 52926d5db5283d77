"""int4 weight-only algorithms: one file each, registered where it is defined.

The ``int4`` quantize method (:mod:`edgepack.compress.quantize.methods.int4`) stores the
MatMuls' constant weights in blocks and dispatches the rounding to the algorithm its
settings name (``algorithm = "rtn"``). An algorithm is a function that quantizes the MatMuls
of an ONNX model for one :class:`BlockJob` and an :class:`Int4Algorithm` saying what it
accepts: the bits per weight it writes, symmetric blocks or not, the block sizes (by default
every one :func:`check_block_size` allows), whether it reads calibration inputs, and its own
choice for the lm_head or the embedding where its blocks do not suit them
(:mod:`edgepack.compress.quantize.methods._weight_roles`). :data:`INT4_ALGORITHMS` finds
every module of this package, so a new algorithm is one new file; recipes, flags and the
decoder stage's ``algorithms = [...]`` take its name.

Example: round to nearest with symmetric blocks only (a file ``rtn_symmetric.py`` here)::

    def quantize_rtn_symmetric(model, job):
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits
        config = nbits.DefaultWeightOnlyQuantConfig(block_size=job.block_size,
                                                    is_symmetric=True, bits=job.bits)
        return matmul_nbits(model, config, job)

    INT4_ALGORITHMS.register(Int4Algorithm(
        "rtn-symmetric", quantize_rtn_symmetric, symmetric=(True,),
        note="round to nearest, no zero points"))

``edgepack quantize m.onnx -o q.onnx --mode int4 --algorithm rtn-symmetric --symmetric`` then
runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgepack.core.registry import Registry

MIN_BLOCK_SIZE = 16


def check_block_size(owner: str, value) -> None:
    """The one block-size rule: a power of two >= 16, what MatMulNBits and
    GatherBlockQuantized accept (16, 32, 64, 128, 256, ...)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_BLOCK_SIZE \
            or value & (value - 1):
        raise ValueError(f"{owner} must be a power of two >= {MIN_BLOCK_SIZE} (e.g. 16, 32, 64, "
                         f"128, 256), got {value}")


@dataclass(frozen=True)
class BlockJob:
    """One pass of an algorithm: the blocks to write, calibration feeds, and the MatMuls
    left as they are (``exclude``: node names)."""

    block_size: int
    bits: int = 4
    symmetric: bool = False
    feeds: tuple = ()
    exclude: tuple = ()


@dataclass(frozen=True)
class Int4Algorithm:
    """How one algorithm joins the int4 method.

    - ``quantize(model, job)``: the model (an ``onnx.ModelProto``) with its MatMuls in blocks;
    - ``bits``, ``symmetric``, ``block_sizes``: what it can write (``block_sizes`` None:
      every size the block rule allows);
    - ``needs_calibration``: it reads calibration inputs (``job.feeds``);
    - ``overrides``: its own choice of blocks for a role (``RoleOverride``), where its blocks
      do not suit the lm_head or the embedding;
    - ``note``: what its blocks are, for the messages that refuse a setting.
    """

    name: str
    quantize: Callable[[Any, BlockJob], Any]
    bits: tuple[int, ...] = (4,)
    symmetric: tuple[bool, ...] = (True, False)
    block_sizes: tuple[int, ...] | None = None
    needs_calibration: bool = False
    overrides: tuple = ()
    note: str = ""
    order: int = 100


INT4_ALGORITHMS: Registry[Int4Algorithm] = Registry("int4 algorithm", __name__)


def _names(choices) -> str:
    return " or ".join(repr(c) for c in choices) or "none"


def check_algorithm_settings(name: str, block_size: int, symmetric: bool, bits: int) -> None:
    """Refuse settings the algorithm ``name`` cannot write, naming the ones that can."""
    spec = INT4_ALGORITHMS.get(name, "quantize")
    if spec.block_sizes is not None and block_size not in spec.block_sizes:
        raise ValueError(f"quantize.block_size={block_size} does not apply to algorithm "
                         f"{name!r}; it takes {', '.join(map(str, spec.block_sizes))}")
    takes = " and ".join(f"{field}={'/'.join(map(str, values))}" for field, values in
                         (("symmetric", spec.symmetric), ("bits", spec.bits)))
    if bits not in spec.bits:
        others = [s.name for s in INT4_ALGORITHMS.specs() if bits in s.bits]
        raise ValueError(f"quantize.bits={bits} needs algorithm {_names(others)} ({name} "
                         f"writes {'/'.join(map(str, spec.bits))}-bit blocks only; it takes "
                         f"{takes})")
    if symmetric not in spec.symmetric:
        others = [s.name for s in INT4_ALGORITHMS.specs() if symmetric in s.symmetric]
        raise ValueError(f"quantize.symmetric={symmetric} does not apply to algorithm {name!r} "
                         f"({spec.note}); it takes {takes}; use {_names(others)}")


__all__ = ["BlockJob", "INT4_ALGORITHMS", "Int4Algorithm", "check_algorithm_settings",
           "check_block_size"]
