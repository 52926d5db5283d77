"""edgepack's float-offset blocks: asymmetric min/max blocks with an exact float minimum, run
on ONNX Runtime's symmetric int4 kernel plus a small block-sum correction
(:mod:`edgepack.compress.quantize.methods._block_offset`): float zero points without MLAS's
slow path. Its rewrite is not one MatMulNBits the embedding's Gather could read, so the tied
lm_head is stored in round-to-nearest blocks of its own, which the embedding then shares."""

from __future__ import annotations

from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS, Int4Algorithm
from edgepack.compress.quantize.methods._block_offset import quantize_offset_int4
from edgepack.compress.quantize.methods._weight_roles import RoleOverride


def quantize_offset(model, job):
    quantize_offset_int4(model, job.block_size, 0, exclude=list(job.exclude))
    return model


INT4_ALGORITHMS.register(Int4Algorithm(
    "offset", quantize_offset, symmetric=(False,),
    overrides=(RoleOverride(("lm_head",), algorithm="rtn"),),
    note="asymmetric 4-bit blocks with exact float minimums", order=40))
