"""int4 weight-only: the MatMuls with constant 2-D weights become MatMulNBits (ONNX Runtime's
blockwise 4-bit kernel), activations stay in float. For transformer MatMuls and decoder LLMs.

Four choices, each a field:

- ``algorithm``: ``rtn`` (round to nearest), ``hqq`` (zero points optimised, no data) or
  ``gptq`` (rounding error compensated on calibration inputs), see :mod:`._weight_only`;
- ``block_size`` and ``symmetric``: weights per scale, and whether blocks have a zero point;
- ``accuracy_level``: how MatMulNBits computes (0: as the weights say, i.e. float; 1 fp32,
  2 fp16, 4 int8 activations, usually the fastest on x86). It is a node attribute only;
- ``quantize_embedding``: the token embedding and a tied lm_head in int4 too
  (:mod:`._tied_embedding`; ONNX Runtime's tool alone leaves a tied lm_head in float32);
- ``bits``: 4, or 8 for MatMulNBits' 8-bit blocks (RTN only): twice the bytes, but integer
  zero points lose 16x less, for a model whose weights 4-bit blocks with integer zero points
  cannot hold (SmolLM2-135M from a Q4_1 GGUF: float block minimums, docs/llm.md);
- ``embedding_bits``: the tied embedding / lm_head's own width (0: ``bits``); 8 keeps that
  matrix, read by every token twice, in symmetric 8-bit blocks (round to nearest) while the
  layers are in 4 bits. The Gather reads the lm_head's bytes (one copy on disk).

``algorithm = "offset"`` is edgepack's own: asymmetric min/max blocks with an exact float
minimum, run on the symmetric int4 kernel plus a small block-sum correction
(:mod:`._block_offset`); float zero points without MLAS's slow path.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from edgepack.compress.quantize.methods import METHODS, MethodSpec
from edgepack.compress.quantize.methods._block_offset import quantize_offset_int4
from edgepack.compress.quantize.methods._tied_embedding import quantize_embedding, untie_lm_head
from edgepack.compress.quantize.methods._weight_only import (ALGORITHMS, set_accuracy_level,
                                                             weight_only_quantize)
from edgepack.core.checks import check_choice
from edgepack.core.stage import option

ACCURACY_LEVELS = (0, 1, 2, 4)   # MatMulNBits: 0 unset, 1 fp32, 2 fp16, 4 int8 (3, bf16: no CPU kernel)
BLOCK_SIZES = (16, 32, 64, 128, 256)
BITS = (4, 8)
INT4_ALGORITHMS = ALGORITHMS + ("offset",)   # offset: edgepack's float-offset blocks


@dataclass
class Int4WeightOnly:
    block_size: int = option(128, "int4: weights per quantization block (a power of two "
                                  ">= 16)")
    symmetric: bool = option(False, "int4: symmetric blocks (no zero point)")
    algorithm: str = option("rtn", "int4: rtn (round to nearest), hqq (optimised zero "
                                   "points), gptq (calibrated) or offset (exact float block "
                                   "minimums on the symmetric kernel)", choices=INT4_ALGORITHMS)
    accuracy_level: int = option(0, "int4: MatMulNBits compute (0 as stored, 1 fp32, 2 fp16, "
                                    "4 int8 activations)")
    quantize_embedding: bool = option(True, "int4: the token embedding and a tied lm_head "
                                            "too (GatherBlockQuantized, MatMulNBits)")
    bits: int = option(4, "int4: bits per weight (8: MatMulNBits' 8-bit blocks, rtn only, for "
                          "a model 4 bits cost too much on)")
    embedding_bits: int = option(0, "int4: bits of the tied embedding / lm_head (0: as bits; "
                                    "8: symmetric 8-bit blocks)")

    def __post_init__(self):
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"quantize.block_size must be a power of two >= 16 (e.g. "
                             f"{', '.join(map(str, BLOCK_SIZES))}), got {self.block_size}")
        check_choice("quantize", "algorithm", self.algorithm, INT4_ALGORITHMS)
        if self.embedding_bits not in (0, *BITS):
            raise ValueError(f"quantize.embedding_bits={self.embedding_bits!r} is not valid; "
                             f"expected 0 (as bits), 4 or 8")
        if self.algorithm == "offset" and (self.symmetric or self.bits != 4):
            raise ValueError("quantize.algorithm='offset' makes asymmetric 4-bit blocks; it "
                             "takes symmetric=False and bits=4")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise ValueError(f"quantize.accuracy_level={self.accuracy_level!r} is not valid; "
                             f"expected one of {', '.join(map(str, ACCURACY_LEVELS))}")
        if self.bits not in BITS:
            raise ValueError(f"quantize.bits={self.bits!r} is not valid; expected one of "
                             f"{', '.join(map(str, BITS))}")
        if self.bits == 8 and self.algorithm != "rtn":
            raise ValueError(f"quantize.bits=8 needs algorithm 'rtn' (ONNX Runtime's "
                             f"{self.algorithm} writes 4-bit blocks only)")
        if self.algorithm == "hqq" and self.symmetric:
            raise ValueError("quantize.symmetric=True does not apply to algorithm 'hqq' (its "
                             "blocks always have a float zero point); use rtn or gptq")


def quantize_int4(prepared, target, settings: Int4WeightOnly, job) -> None:
    """Untie a tied lm_head, quantize the MatMuls by the algorithm (GPTQ on ``job.feeds``),
    then the embedding, then set the accuracy level; refuse a model with nothing to do."""
    model = onnx.load(str(prepared))
    head = untie_lm_head(model) if settings.quantize_embedding else None
    head_bits = settings.embedding_bits or settings.bits
    own_head = head is not None and (head_bits != settings.bits or
                                     settings.algorithm == "offset")
    exclude = list(job.exclude) + ([head.lm_head_node] if own_head else [])
    if settings.algorithm == "offset":
        quantize_offset_int4(model, settings.block_size, 0, exclude=exclude)
    else:
        model = weight_only_quantize(model, settings.algorithm, settings.block_size,
                                     settings.symmetric, job.feeds, exclude, settings.bits)
    if own_head:
        model = _quantize_head(model, head, settings.block_size, head_bits, settings.symmetric)
    if settings.quantize_embedding:
        # HQQ's float zero points cannot be shared with GatherBlockQuantized; a 4-bit copy
        # with integer zero points would lose what HQQ keeps (docs/llm.md), so 8 bits.
        own_bits = 8 if settings.algorithm == "hqq" and not own_head else head_bits
        quantize_embedding(model, head, settings.block_size,
                           _head_symmetric(head_bits, settings.symmetric) if own_head
                           else settings.symmetric, head_bits, own_bits)
    if not set_accuracy_level(model, settings.accuracy_level):
        raise ValueError("quantize.mode='int4' found no MatMul with a constant 2-D weight to "
                         "quantize; int4 weight-only quantization is for transformer MatMuls "
                         "(use mode 'dynamic' or 'static' for this model)")
    onnx.save(model, str(target))


def _head_symmetric(head_bits: int, symmetric: bool) -> bool:
    """8-bit head blocks are symmetric (llama.cpp's Q8_0 grid); 4-bit ones as asked."""
    return True if head_bits == 8 else symmetric


def _quantize_head(model: onnx.ModelProto, head, block_size: int, head_bits: int,
                   symmetric: bool) -> onnx.ModelProto:
    """The untied lm_head alone, round to nearest in ``head_bits``-bit blocks (every other
    float MatMul is left as it is)."""
    others = [n.name for n in model.graph.node if n.op_type == "MatMul"
              and n.name != head.lm_head_node]
    return weight_only_quantize(model, "rtn", block_size, _head_symmetric(head_bits, symmetric),
                                [], others, head_bits)


def describe(settings: Int4WeightOnly) -> str:
    blocks = "symmetric" if settings.symmetric else "asymmetric"
    embedding = "embedding quantized" if settings.quantize_embedding else "embedding float"
    if settings.quantize_embedding and settings.embedding_bits not in (0, settings.bits):
        embedding = f"embedding / lm_head in {settings.embedding_bits}-bit blocks"
    width = "" if settings.bits == 4 else f"{settings.bits}-bit blocks, "
    return (f"{width}{settings.algorithm}, block size {settings.block_size}, {blocks}, accuracy "
            f"level {settings.accuracy_level}, {embedding}")


METHODS.register(MethodSpec("int4", Int4WeightOnly, quantize_int4, describe=describe,
                            produces="int4", order=40))
