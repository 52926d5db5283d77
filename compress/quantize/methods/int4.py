"""int4 weight-only: the MatMuls with constant 2-D weights become MatMulNBits (ONNX Runtime's
blockwise 4-bit kernel), activations stay in float. For transformer MatMuls and decoder LLMs.

The choices, each a field:

- ``algorithm``: how the blocks are rounded, a registered int4 algorithm
  (:mod:`edgepack.compress.quantize.int4_algorithms`, one file each: ``rtn`` round to
  nearest, ``hqq`` optimised zero points, ``gptq`` calibrated, ``offset`` edgepack's exact
  float block minimums on the symmetric kernel); each says which settings it takes;
- ``block_size`` and ``symmetric``: weights per scale (one rule: a power of two >= 16), and
  whether blocks have a zero point;
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

The lm_head and the embedding are roles with overrides of their own (:mod:`._weight_roles`):
the user's ``embedding_bits`` and an algorithm's own choice for them, never a branch here.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from edgepack.compress.quantize.int4_algorithms import (INT4_ALGORITHMS, BlockJob,
                                                        check_algorithm_settings,
                                                        check_block_size)
from edgepack.compress.quantize.methods import METHODS, MethodSpec
from edgepack.compress.quantize.methods._tied_embedding import quantize_embedding, untie_lm_head
from edgepack.compress.quantize.methods._weight_only import set_accuracy_level
from edgepack.compress.quantize.methods._weight_roles import role_blocks
from edgepack.core.checks import check_choice
from edgepack.core.stage import option

ACCURACY_LEVELS = (0, 1, 2, 4)   # MatMulNBits: 0 unset, 1 fp32, 2 fp16, 4 int8 (3, bf16: no CPU kernel)
BITS = (4, 8)
EMBEDDING_BITS = (0, *BITS)      # 0: as the layers


@dataclass
class Int4WeightOnly:
    block_size: int = option(128, "int4: weights per quantization block (a power of two "
                                  ">= 16)")
    symmetric: bool = option(False, "int4: symmetric blocks (no zero point)")
    algorithm: str = option("rtn", "int4: how the blocks are rounded (a registered int4 "
                                   "algorithm)", choices=INT4_ALGORITHMS.names())
    accuracy_level: int = option(0, "int4: MatMulNBits compute (0 as stored, 1 fp32, 2 fp16, "
                                    "4 int8 activations)")
    quantize_embedding: bool = option(True, "int4: the token embedding and a tied lm_head "
                                            "too (GatherBlockQuantized, MatMulNBits)")
    bits: int = option(4, "int4: bits per weight (8: MatMulNBits' 8-bit blocks, rtn only, for "
                          "a model 4 bits cost too much on)")
    embedding_bits: int = option(0, "int4: bits of the tied embedding / lm_head (0: as bits; "
                                    "8: symmetric 8-bit blocks)")

    def __post_init__(self):
        check_block_size("quantize.block_size", self.block_size)
        check_choice("quantize", "algorithm", self.algorithm, INT4_ALGORITHMS.names())
        if self.embedding_bits not in EMBEDDING_BITS:
            raise ValueError(f"quantize.embedding_bits={self.embedding_bits!r} is not valid; "
                             f"expected 0 (as bits), 4 or 8")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise ValueError(f"quantize.accuracy_level={self.accuracy_level!r} is not valid; "
                             f"expected one of {', '.join(map(str, ACCURACY_LEVELS))}")
        if self.bits not in BITS:
            raise ValueError(f"quantize.bits={self.bits!r} is not valid; expected one of "
                             f"{', '.join(map(str, BITS))}")
        check_algorithm_settings(self.algorithm, self.block_size, self.symmetric, self.bits)


def quantize_int4(prepared, target, settings: Int4WeightOnly, job) -> None:
    """Untie a tied lm_head, quantize the layers by the algorithm (calibrated on
    ``job.feeds`` when it reads them), the lm_head on its own where its role's blocks differ,
    then the embedding, then set the accuracy level; refuse a model with nothing to do."""
    model = onnx.load(str(prepared))
    algorithm = INT4_ALGORITHMS.get(settings.algorithm)
    roles = role_blocks(settings, algorithm.overrides)
    head = untie_lm_head(model) if "lm_head" in roles else None
    own_head = head is not None and roles["lm_head"] != roles["layers"]
    layers = roles["layers"]
    exclude = list(job.exclude) + ([head.lm_head_node] if own_head else [])
    model = algorithm.quantize(model, BlockJob(settings.block_size, layers.bits,
                                               layers.symmetric, tuple(job.feeds),
                                               tuple(exclude)))
    if own_head:
        model = _quantize_head(model, head, roles["lm_head"], settings.block_size)
    if "embedding" in roles:
        embedding = roles["embedding"]
        quantize_embedding(model, head, settings.block_size, embedding.symmetric,
                           roles["lm_head"].bits, embedding.bits)
    if not set_accuracy_level(model, settings.accuracy_level):
        raise ValueError("quantize.mode='int4' found no MatMul with a constant 2-D weight to "
                         "quantize; int4 weight-only quantization is for transformer MatMuls "
                         "(use mode 'dynamic' or 'static' for this model)")
    onnx.save(model, str(target))


def _quantize_head(model: onnx.ModelProto, head, blocks, block_size: int) -> onnx.ModelProto:
    """The untied lm_head alone, in its role's blocks (every other float MatMul is left as
    it is)."""
    others = tuple(n.name for n in model.graph.node if n.op_type == "MatMul"
                   and n.name != head.lm_head_node)
    return INT4_ALGORITHMS.get(blocks.algorithm).quantize(
        model, BlockJob(block_size, blocks.bits, blocks.symmetric, (), others))


def reads_calibration(settings: Int4WeightOnly) -> bool:
    return INT4_ALGORITHMS.get(settings.algorithm).needs_calibration


def describe(settings: Int4WeightOnly) -> str:
    blocks = "symmetric" if settings.symmetric else "asymmetric"
    embedding = "embedding quantized" if settings.quantize_embedding else "embedding float"
    if settings.quantize_embedding and settings.embedding_bits not in (0, settings.bits):
        embedding = f"embedding / lm_head in {settings.embedding_bits}-bit blocks"
    width = "" if settings.bits == 4 else f"{settings.bits}-bit blocks, "
    return (f"{width}{settings.algorithm}, block size {settings.block_size}, {blocks}, accuracy "
            f"level {settings.accuracy_level}, {embedding}")


METHODS.register(MethodSpec("int4", Int4WeightOnly, quantize_int4, describe=describe,
                            produces="int4", needs_calibration=reads_calibration, order=40))
