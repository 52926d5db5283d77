"""Round to nearest: each block's scale (and zero point, asymmetric) from its minimum and
maximum, every weight rounded to the nearest level (ONNX Runtime's default, C++ kernels):
seconds per model. The only algorithm here that also writes MatMulNBits' 8-bit blocks."""

from __future__ import annotations

from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS, Int4Algorithm
from edgepack.compress.quantize.methods._weight_only import matmul_nbits


def quantize_rtn(model, job):
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    config = nbits.DefaultWeightOnlyQuantConfig(block_size=job.block_size,
                                                is_symmetric=job.symmetric, bits=job.bits)
    return matmul_nbits(model, config, job)


INT4_ALGORITHMS.register(Int4Algorithm(
    "rtn", quantize_rtn, bits=(4, 8), note="round to nearest, integer zero points", order=10))
