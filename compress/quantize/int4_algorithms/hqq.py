"""Half-quadratic quantization (Badri & Shaji 2023): each block's zero point is optimised to
lower the weight error, no data needed. Its zero points are float, so its blocks always have
one (no symmetric mode), and the embedding's Gather cannot read them: the token embedding
gets its own copy, in 8-bit blocks, since a 4-bit copy with integer zero points would lose
what HQQ's float ones keep (docs/llm.md)."""

from __future__ import annotations

from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS, Int4Algorithm
from edgepack.compress.quantize.methods._weight_only import matmul_nbits
from edgepack.compress.quantize.methods._weight_roles import RoleOverride


def quantize_hqq(model, job):
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    config = nbits.HQQWeightOnlyQuantConfig(block_size=job.block_size, bits=4)
    return matmul_nbits(model, config, job)


INT4_ALGORITHMS.register(Int4Algorithm(
    "hqq", quantize_hqq, symmetric=(False,),
    overrides=(RoleOverride(("embedding",), algorithm="rtn", bits=8),),
    note="its blocks always have a float zero point", order=20))
