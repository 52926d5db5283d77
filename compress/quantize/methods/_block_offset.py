"""Asymmetric int4 blocks with an exact float offset, run on ONNX Runtime's symmetric kernel.

Round-to-nearest asymmetric int4 stores each block as ``scale * (q - zero_point)`` with an
*integer* zero point in 0..15, because that is what MatMulNBits' fast CPU kernels (MLAS)
read. A block's minimum then moves by up to half a step, on every block. MatMulNBits also
accepts float zero points (HQQ writes them), but MLAS has no kernel for them: the op
de-quantizes the whole weight on every call (SmolLM2-135M: 0.16x fp32's decode speed).

This transform keeps the float offset and the fast kernel, by linearity. With ``d`` the
block's step and ``c = minimum + 8 d`` its offset, each weight is ``d * (q - 8) + c``, so

    x @ W  =  MatMulNBits_symmetric(x)  +  blocksum(x) @ C

where ``blocksum(x)`` adds each run of ``block`` input features (a Reshape and a ReduceSum,
computed once per input: MatMuls reading the same input share it) and ``C`` is the
``[K / block, N]`` matrix of offsets: a float MatMul ``block`` times smaller than the
original. A block is then quantized on its own min/max grid exactly (16 levels from
its minimum to its maximum), as llama.cpp's Q4_1 does; a model whose weights came from such a
grid (a Q4_1 GGUF) is reproduced to float rounding. The cost: one small MatMul and an Add
per quantized MatMul, a ReduceSum per distinct input, and ``4 / block`` bytes of offsets per
weight.

How each block is put on its grid is a fit (:mod:`._block_fits`): min/max by default, or
k-quant's search. A symmetric fit has no offsets: its MatMuls are one MatMulNBits each, with
the fit's own steps, and no correction.

A K that is not a whole number of blocks (SmolLM2's 576 in blocks of 128) ends in a partial
block, as MatMulNBits itself allows: the weight is padded with its block's last row (so the
block's range is its real weights' range) and the input with zeros (a Pad before the block
sums). Only MatMuls whose input rank is known (shape inference) are rewritten; the others
stay in float and are named in the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgepack.compress.quantize.methods._block_fits import minmax_asymmetric

MS_DOMAIN = "com.microsoft"


@dataclass
class OffsetResult:
    """What the transform did: the MatMuls rewritten and the ones left in float (why)."""

    quantized: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def offset_blocks(weight: np.ndarray, block: int, fit=minmax_asymmetric,
                  activation: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``weight`` [K, N] -> MatMulNBits' packed symmetric blocks [N, K/block, block/2]
    (uint8, two 4-bit values per byte, stored as q = level + 8), the scales [N * K/block],
    and the offsets [K/block, N] (float32), with ``weight ~= scale * (q - 8) + offset``;
    the offsets are None when ``fit`` is symmetric (``weight ~= scale * (q - 8)``).
    ``activation``: the mean square of each of the K inputs, for a fit that weighs by it."""
    k, n = weight.shape
    count = -(-k // block)
    padded = np.pad(weight, ((0, count * block - k), (0, 0)), mode="edge")
    blocks = padded.T.reshape(n, count, block).astype(np.float32)
    if activation is not None:     # the padding's inputs are zeros: no weight
        activation = np.pad(np.asarray(activation, np.float32), (0, count * block - k))
        activation = activation.reshape(1, count, block)
    levels, step, low = fit(blocks, activation)
    packed = levels[..., 0::2] | (levels[..., 1::2] << 4)
    offsets = None if low is None else np.ascontiguousarray(
        (low + 8.0 * step)[..., 0].T, dtype=np.float32)
    return np.ascontiguousarray(packed, dtype=np.uint8), step.reshape(-1), offsets


def dequantize(packed: np.ndarray, scales: np.ndarray, offsets: np.ndarray | None,
               k: int | None = None) -> np.ndarray:
    """The [K, N] weight the three arrays stand for (tests and checks use it); ``k``: the
    real K when the last block is partial."""
    n, nb, half = packed.shape
    levels = np.empty((n, nb, 2 * half), np.float32)
    levels[..., 0::2] = packed & 0x0F
    levels[..., 1::2] = packed >> 4
    values = scales.reshape(n, nb, 1) * (levels - 8.0)
    if offsets is not None:
        values = values + offsets.T.reshape(n, nb, 1)
    return values.reshape(n, nb * 2 * half).T[:k]


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    ranks = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input]:
        if info.type.tensor_type.HasField("shape"):
            ranks[info.name] = len(info.type.tensor_type.shape.dim)
    return ranks


def _block_sum(x: str, rank: int, k: int, block: int, base: str):
    """The nodes and initializers computing ``blocksum(x)``: each run of ``block`` features
    of ``x`` added up (``[..., ceil(K / block)]``; a partial last block after zero padding),
    named after ``base``."""
    count = -(-k // block)
    shape = [0] * (rank - 1) + [count, block]
    inits = [numpy_helper.from_array(np.array(shape, np.int64), f"{base}_blocks"),
             numpy_helper.from_array(np.array([-1], np.int64), f"{base}_axis")]
    nodes = []
    if count * block != k:
        pads = [0] * (2 * rank)
        pads[2 * rank - 1] = count * block - k          # zeros after the last feature
        inits.append(numpy_helper.from_array(np.array(pads, np.int64), f"{base}_pads"))
        nodes.append(helper.make_node("Pad", [x, f"{base}_pads"], [f"{base}_xp"],
                                      name=f"{base}_pad"))
        x = f"{base}_xp"
    nodes += [helper.make_node("Reshape", [x, f"{base}_blocks"], [f"{base}_xb"],
                               name=f"{base}_reshape"),
             helper.make_node("ReduceSum", [f"{base}_xb", f"{base}_axis"], [f"{base}_xsum"],
                              name=f"{base}_blocksum", keepdims=0)]
    return nodes, inits, f"{base}_xsum"


def _rewrite(node, blocks: tuple, k: int, block: int, accuracy_level: int, x_sum: str | None):
    """The nodes and initializers that replace one MatMul, given its ``blocks``
    (:func:`offset_blocks`) and the name of its input's block sums (computed once per input:
    MatMuls that share an input, such as an MLP's gate and up projections, share them; None
    for blocks without offsets, which need no correction)."""
    packed, scales, offsets = blocks
    n = packed.shape[0]
    base = f"{node.name or node.output[0]}_int4_offset"
    inits = [numpy_helper.from_array(packed, f"{base}_B"),
             numpy_helper.from_array(scales, f"{base}_scales")]
    attrs = {"K": k, "N": n, "bits": 4, "block_size": block}
    if accuracy_level:
        attrs["accuracy_level"] = accuracy_level
    inputs = [node.input[0], f"{base}_B", f"{base}_scales"]
    if offsets is None:
        return [helper.make_node("MatMulNBits", inputs, list(node.output),
                                 name=f"{base}_matmul", domain=MS_DOMAIN, **attrs)], inits
    inits.append(numpy_helper.from_array(offsets, f"{base}_offsets"))
    nodes = [
        helper.make_node("MatMulNBits", inputs, [f"{base}_y"], name=f"{base}_matmul",
                         domain=MS_DOMAIN, **attrs),
        helper.make_node("MatMul", [x_sum, f"{base}_offsets"], [f"{base}_c"],
                         name=f"{base}_offset"),
        helper.make_node("Add", [f"{base}_y", f"{base}_c"], list(node.output),
                         name=f"{base}_add")]
    return nodes, inits


def quantize_offset_int4(model: onnx.ModelProto, block: int, accuracy_level: int = 0,
                         exclude=(), include=None, fit=minmax_asymmetric,
                         activations: dict | None = None) -> OffsetResult:
    """Rewrite (in place) every MatMul with a constant 2-D float weight into int4 blocks with
    float offsets (none with a symmetric ``fit``); ``exclude``: node names kept in float;
    ``include``: the only ones done; ``fit``: how a block is put on its grid
    (:mod:`._block_fits`); ``activations``: each MatMul input's mean squares by input name,
    for a fit that weighs by them."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    ranks = _ranks(model)
    result, nodes, used = OffsetResult(), [], set()
    block_sums: dict[tuple[str, int], str] = {}   # (input, K) -> its block sums
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            nodes.append(node)
            continue
        why = ("excluded" if node.name in exclude else
               "not included" if include is not None and node.name not in include else
               "its input's rank is unknown" if node.input[0] not in ranks else "")
        if why:
            result.skipped[node.name] = why
            nodes.append(node)
            continue
        x, k = node.input[0], weight.dims[0]
        blocks = offset_blocks(numpy_helper.to_array(weight), block, fit,
                               (activations or {}).get(x))
        if blocks[2] is not None and (x, k) not in block_sums:
            sum_nodes, sum_inits, block_sums[(x, k)] = _block_sum(
                x, ranks[x], k, block, f"{node.name or node.output[0]}_int4_offset")
            nodes.extend(sum_nodes)
            graph.initializer.extend(sum_inits)
        new_nodes, new_inits = _rewrite(node, blocks, k, block, accuracy_level,
                                        block_sums.get((x, k)))
        nodes.extend(new_nodes)
        graph.initializer.extend(new_inits)
        used.add(weight.name)
        result.quantized.append(node.name)
    del graph.node[:]
    graph.node.extend(nodes)
    still_read = {name for node in nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name not in used or i.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return result


__all__ = ["OffsetResult", "dequantize", "offset_blocks", "quantize_offset_int4"]
