"""k-quant-style blocks weighted by an importance matrix (llama.cpp's ``--imatrix``): the
``kquant`` search, with each weight counted by the mean square of the input it meets on
calibration data (:func:`input_mean_squares`;
for a decoder, token windows run with an empty KV cache) times ``sqrt(2 mean(w^2) + w^2)``.
A weight on an input that is large on real text is fitted more closely than one on an input
that is nearly always small. Asymmetric blocks keep their fitted minimum as exact float
offsets, symmetric ones are plain MatMulNBits (as ``kquant``); the tied lm_head is stored in
round-to-nearest blocks of its own, which the embedding then shares."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS, Int4Algorithm
from edgepack.compress.quantize.int4_algorithms.kquant import quantize_searched
from edgepack.compress.quantize.methods._weight_roles import RoleOverride


def quantize_imatrix(model, job):
    if not job.feeds:
        raise ValueError("quantize.algorithm='imatrix' needs calibration inputs (for a "
                         "decoder: token windows, quantize_decoder(calibration_windows=...)); "
                         "kquant is the same search without them")
    return quantize_searched(model, job, input_mean_squares(model, list(job.feeds)))


def input_mean_squares(model: onnx.ModelProto, feeds: list[dict]) -> dict[str, np.ndarray]:
    """The mean square of every input feature of every MatMul with a constant 2-D float
    weight, over all the tokens of ``feeds`` (llama.cpp's importance matrix): the model run
    by ONNX Runtime with those inputs made outputs."""
    import onnxruntime as ort

    weights = {i.name for i in model.graph.initializer if len(i.dims) == 2
               and i.data_type == onnx.TensorProto.FLOAT}
    names = sorted({n.input[0] for n in model.graph.node
                    if n.op_type == "MatMul" and n.input[1] in weights})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in names if name not in known)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            rows = np.asarray(value, np.float64).reshape(-1, value.shape[-1])
            sums[name] = sums.get(name, 0.0) + np.sum(rows * rows, axis=0)
            counts[name] = counts.get(name, 0) + rows.shape[0]
    return {name: (sums[name] / counts[name]).astype(np.float32) for name in sums}


INT4_ALGORITHMS.register(Int4Algorithm(
    "imatrix", quantize_imatrix, needs_calibration=True,
    overrides=(RoleOverride(("lm_head",), algorithm="rtn"),),
    note="kquant's search weighted by calibration activations", order=46))
