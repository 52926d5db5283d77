"""int4 weight-only: the MatMuls with constant 2-D weights become MatMulNBits (ONNX Runtime's
blockwise 4-bit kernel), activations stay in float. For transformer MatMuls."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from compress.quantize.methods import METHODS, MethodSpec
from core.stage import option


@dataclass
class Int4WeightOnly:
    block_size: int = option(128, "int4: weights per quantization block")
    symmetric: bool = option(False, "int4: symmetric blocks (no zero point)")

    def __post_init__(self):
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"quantize.block_size must be a power of two >= 16, got "
                             f"{self.block_size}")


def quantize_int4(prepared, target, settings: Int4WeightOnly, job) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(prepared)), bits=4,
                                     block_size=settings.block_size,
                                     is_symmetric=settings.symmetric,
                                     nodes_to_exclude=job.exclude)
    quantizer.process()
    if not any(n.op_type == "MatMulNBits" for n in quantizer.model.model.graph.node):
        raise ValueError("quantize.mode='int4' found no MatMul with a constant 2-D weight to "
                         "quantize; int4 weight-only quantization is for transformer MatMuls "
                         "(use mode 'dynamic' or 'static' for this model)")
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


METHODS.register(MethodSpec(
    "int4", Int4WeightOnly, quantize_int4,
    describe=lambda s: f"block size {s.block_size}, {'symmetric' if s.symmetric else 'asymmetric'}",
    produces="int4", order=40))
