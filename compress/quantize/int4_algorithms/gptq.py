"""GPTQ (Frantar et al. 2022): each weight column is rounded in turn and the error spread
over the columns not yet rounded, weighted by the inputs' Hessian, so it reads calibration
inputs: for a decoder, token windows run with an empty KV cache
(:func:`edgepack.compress.quantize.methods._weight_only.decoder_feeds`). The costliest
algorithm: minutes on two cores for a small decoder."""

from __future__ import annotations

import contextlib
import io

import onnx

from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS, Int4Algorithm
from edgepack.compress.quantize.methods._weight_only import matmul_nbits


def quantize_gptq(model, job):
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    from edgepack.compress.quantize.data import FeedReader

    if not job.feeds:
        raise ValueError("quantize.algorithm='gptq' needs calibration inputs (for a decoder: "
                         "token windows, quantize_decoder(calibration_windows=...)); "
                         "round to nearest (rtn) needs none")
    config = nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=FeedReader(list(job.feeds)))
    if not job.symmetric:
        check_zero_points(model, job.block_size)
    with contextlib.redirect_stdout(io.StringIO()):   # its progress bar prints to stdout
        return matmul_nbits(model, config, job)


def check_zero_points(model: onnx.ModelProto, block_size: int) -> None:
    """ONNX Runtime's GPTQ packs two blocks' zero points per byte across the whole matrix,
    not per column, and fails on an odd number of blocks per column (K=576 at block 64 is 9):
    refused here in one line instead of deep inside it."""
    weights = {init.name: init.dims for init in model.graph.initializer if len(init.dims) == 2}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            rows = weights[node.input[1]][0]
            blocks = -(-rows // block_size)
            if blocks % 2:
                raise ValueError(f"quantize: algorithm 'gptq' asymmetric needs an even number "
                                 f"of blocks per column; {node.name or node.input[1]} has K="
                                 f"{rows}, {blocks} blocks of {block_size} (ONNX Runtime packs "
                                 f"its zero points across columns); use symmetric=True or a "
                                 f"smaller block size")


INT4_ALGORITHMS.register(Int4Algorithm(
    "gptq", quantize_gptq, needs_calibration=True,
    note="rounding error compensated on calibration inputs", order=30))
