"""k-quant-style blocks weighted by an importance matrix (llama.cpp's ``--imatrix``): the
``kquant`` search, with each weight counted by the mean square of the input it meets on
calibration data (:func:`~edgepack.compress.quantize.methods._block_offset.input_mean_squares`;
for a decoder, token windows run with an empty KV cache) times ``sqrt(2 mean(w^2) + w^2)``.
A weight on an input that is large on real text is fitted more closely than one on an input
that is nearly always small. Asymmetric blocks keep their fitted minimum as exact float
offsets, symmetric ones are plain MatMulNBits (as ``kquant``); the tied lm_head is stored in
round-to-nearest blocks of its own, which the embedding then shares."""

from __future__ import annotations

from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS, Int4Algorithm
from edgepack.compress.quantize.methods._block_fits import searched_asymmetric, searched_symmetric
from edgepack.compress.quantize.methods._block_offset import (input_mean_squares,
                                                              quantize_offset_int4)
from edgepack.compress.quantize.methods._weight_roles import RoleOverride


def quantize_imatrix(model, job):
    if not job.feeds:
        raise ValueError("quantize.algorithm='imatrix' needs calibration inputs (for a "
                         "decoder: token windows, quantize_decoder(calibration_windows=...)); "
                         "kquant is the same search without them")
    activations = input_mean_squares(model, list(job.feeds))
    fit = searched_symmetric if job.symmetric else searched_asymmetric
    quantize_offset_int4(model, job.block_size, 0, exclude=list(job.exclude), fit=fit,
                         activations=activations)
    return model


INT4_ALGORITHMS.register(Int4Algorithm(
    "imatrix", quantize_imatrix, needs_calibration=True,
    overrides=(RoleOverride(("lm_head",), algorithm="rtn"),),
    note="kquant's search weighted by calibration activations", order=46))
