"""k-quant-style blocks (llama.cpp's k-quant search, data-free): each block's step (and, for
asymmetric blocks, its minimum) searched over a range of candidates and re-fitted by weighted
least squares (:func:`~edgepack.compress.quantize.methods._block_fits.searched_asymmetric`,
:func:`~edgepack.compress.quantize.methods._block_fits.searched_symmetric`). Asymmetric
blocks keep their fitted minimum exactly, as float offsets on the symmetric kernel (the
``offset`` algorithm's transform); symmetric blocks are plain MatMulNBits with the searched
steps, ONNX Runtime's fastest int4 kernel. On a model whose weights sit on a 4-bit grid the
min/max candidate is exact and wins; off a grid, the search lowers every block's weighted
error below min/max's. As with ``offset``, the tied lm_head is stored in round-to-nearest
blocks of its own, which the embedding then shares."""

from __future__ import annotations

from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS, Int4Algorithm
from edgepack.compress.quantize.methods._block_fits import searched_asymmetric, searched_symmetric
from edgepack.compress.quantize.methods._block_offset import quantize_offset_int4
from edgepack.compress.quantize.methods._weight_roles import RoleOverride


def quantize_searched(model, job, activations: dict | None = None):
    """The layers in searched blocks, symmetric or not as ``job`` says; ``activations``: each
    MatMul input's mean squares by name, to weigh the search by (``imatrix``)."""
    fit = searched_symmetric if job.symmetric else searched_asymmetric
    quantize_offset_int4(model, job.block_size, 0, exclude=list(job.exclude), fit=fit,
                         activations=activations)
    return model


def quantize_kquant(model, job):
    return quantize_searched(model, job)


INT4_ALGORITHMS.register(Int4Algorithm(
    "kquant", quantize_kquant,
    overrides=(RoleOverride(("lm_head",), algorithm="rtn"),),
    note="searched steps (and exact float minimums when asymmetric)", order=45))
