"""The token embedding and a tied lm_head, in int4.

A decoder that ties its embedding to its lm_head (Llama, SmolLM) is exported by Optimum as
one ``[vocab, hidden]`` initializer read twice: by the ``Gather`` that looks tokens up and by
a ``Transpose`` feeding the lm_head ``MatMul``. ONNX Runtime's MatMulNBits quantizer only
quantizes a MatMul whose weight is an initializer, so it skips that lm_head, and the matrix
stays in float32 (on SmolLM2-135M: 113 MB of a 181 MB int4 file). Two passes fix that:

1. :func:`untie_lm_head` (before quantizing): the lm_head reads the transposed matrix as an
   initializer of its own, which the quantizer then turns into MatMulNBits;
2. :func:`quantize_embedding` (after): the ``Gather`` becomes ``GatherBlockQuantized``. When
   the lm_head's int4 blocks have integer zero points (RTN, GPTQ) and the hidden size is a
   whole number of blocks, the Gather reads those same bytes: MatMulNBits stores its weight
   as ``[N=vocab, blocks, bytes]`` along K=hidden, which is the embedding's row-major layout,
   so the matrix is on disk once. Otherwise (HQQ's float zero points, an untied embedding)
   the embedding gets its own round-to-nearest copy, in blocks that divide its width (8-bit
   beside HQQ: a 4-bit copy with integer zero points would lose what HQQ's float ones keep).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgepack.compress.quantize.int4_algorithms import MIN_BLOCK_SIZE

MS_DOMAIN = "com.microsoft"


@dataclass
class TiedHead:
    """The embedding and the lm_head that reads it, once untied."""

    embedding: str        # the [vocab, hidden] initializer the Gather reads
    lm_head_weight: str   # the [hidden, vocab] initializer the lm_head MatMul now reads
    lm_head_node: str


def _initializers(graph) -> dict:
    return {init.name: init for init in graph.initializer}


def _consumers(graph) -> dict[str, list]:
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def embedding_gathers(graph) -> list:
    """The Gathers that look token ids up in a 2-D float initializer (the embedding)."""
    inits = _initializers(graph)
    return [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits
            and len(inits[n.input[0]].dims) == 2
            and inits[n.input[0]].data_type == onnx.TensorProto.FLOAT]


def untie_lm_head(model: onnx.ModelProto) -> TiedHead | None:
    """Give a tied lm_head (``MatMul(h, Transpose(embedding))``) its own transposed weight,
    so the MatMul quantizer sees a constant; None when the model has no such head."""
    graph = model.graph
    inits, readers = _initializers(graph), _consumers(graph)
    for gather in embedding_gathers(graph):
        embedding = gather.input[0]
        for transpose in [n for n in readers.get(embedding, []) if n.op_type == "Transpose"]:
            perm = [a.ints for a in transpose.attribute if a.name == "perm"]
            if perm and list(perm[0]) != [1, 0]:
                continue
            matmuls = [n for n in readers.get(transpose.output[0], [])
                       if n.op_type == "MatMul" and n.input[1] == transpose.output[0]]
            if len(matmuls) != 1 or len(readers[transpose.output[0]]) != 1:
                continue
            weight = numpy_helper.to_array(inits[embedding]).T.copy()
            name = f"{embedding}.lm_head"
            graph.initializer.append(numpy_helper.from_array(weight, name))
            matmuls[0].input[1] = name
            graph.node.remove(transpose)
            return TiedHead(embedding, name, matmuls[0].name)
    return _untied_copy(graph, inits)


def _untied_copy(graph, inits) -> TiedHead | None:
    """A tie Optimum did not deduplicate ("No deduplication implementation for ..."): the
    logits MatMul reads its own initializer holding exactly the embedding, transposed."""
    producers = {out: node for node in graph.node for out in node.output}
    head = producers.get("logits")
    if head is None or head.op_type != "MatMul" or head.input[1] not in inits:
        return None
    weight = inits[head.input[1]]
    for gather in embedding_gathers(graph):
        table = inits[gather.input[0]]
        if list(weight.dims) == list(table.dims)[::-1] and np.array_equal(
                numpy_helper.to_array(weight), numpy_helper.to_array(table).T):
            return TiedHead(gather.input[0], head.input[1], head.name)
    return None


def _reshaped(graph, name: str, shape: list[int]) -> str:
    """A Reshape of tensor ``name`` to ``shape`` (folded by ONNX Runtime at load time), so
    one stored tensor serves two ops that want different shapes."""
    shape_name = f"{name}_shape_{'x'.join(map(str, shape))}"
    out = f"{name}_as_{'x'.join(map(str, shape))}"
    graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), shape_name))
    graph.node.insert(0, helper.make_node("Reshape", [name, shape_name], [out],
                                          name=f"Reshape_{out}"))   # reads constants only
    return out


def _head_blocks(graph, head: TiedHead):
    """The MatMulNBits that replaced the lm_head, when its weight reads as the embedding's
    blocks (integer zero points); else None."""
    inits = _initializers(graph)
    for node in graph.node:
        if node.op_type != "MatMulNBits" or not node.input[1].startswith(head.lm_head_weight):
            continue
        zero_points = node.input[3] if len(node.input) > 3 and node.input[3] else None
        if zero_points is not None and inits[zero_points].data_type != onnx.TensorProto.UINT8:
            return None   # HQQ: float zero points, which GatherBlockQuantized cannot read
        return node
    return None


def _gather_node(gather, inputs: list[str], block_size: int, bits: int):
    axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
    return helper.make_node("GatherBlockQuantized", inputs, list(gather.output),
                            name=f"{gather.name}_Q{bits}", domain=MS_DOMAIN, gather_axis=axis,
                            quantize_axis=1, block_size=block_size, bits=bits)


def _shared_inputs(graph, head_node, gather, vocab: int, hidden: int, bits: int) -> list[str]:
    """GatherBlockQuantized's inputs taken from the lm_head's MatMulNBits tensors."""
    inits = _initializers(graph)
    data = _reshaped(graph, head_node.input[1], [vocab, hidden * bits // 8])
    inputs = [data, gather.input[1]]
    for name in head_node.input[2:4]:
        if not name:
            continue
        inputs.append(name if len(inits[name].dims) == 2 else
                      _reshaped(graph, name, [vocab, -1]))
    return inputs


def _own_inputs(graph, embedding: np.ndarray, name: str, gather, block_size: int,
                symmetric: bool, bits: int) -> list[str]:
    """A round-to-nearest copy of the embedding, in GatherBlockQuantized's layout."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 DefaultWeightOnlyQuantizer)

    quantizer = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=symmetric, bits=bits))
    packed, scales, zero_points = quantizer.qbits_block_quant(np.ascontiguousarray(embedding.T))
    vocab = embedding.shape[0]
    tensors = [(f"{name}_Q{bits}", packed.reshape(vocab, -1)), (f"{name}_scales", scales)]
    if not symmetric:
        tensors.append((f"{name}_zero_points", zero_points))
    graph.initializer.extend(numpy_helper.from_array(array, key) for key, array in tensors)
    names = [key for key, _ in tensors]
    return [names[0], gather.input[1], *names[1:]]


def gather_block_size(hidden: int, block_size: int) -> int | None:
    """The block size for an embedding ``hidden`` wide: ``block_size`` when the width is a
    whole number of blocks, else the largest power of two >= 16 below it that is (576 at 128:
    64); None when there is none. GatherBlockQuantized cannot pad a gathered row."""
    size = block_size
    while size >= MIN_BLOCK_SIZE:
        if hidden % size == 0:
            return size
        size //= 2
    return None


def quantize_embedding(model: onnx.ModelProto, head: TiedHead | None, block_size: int,
                       symmetric: bool, bits: int = 4, own_bits: int | None = None) -> dict:
    """Turn every embedding Gather into GatherBlockQuantized, sharing the lm_head's blocks
    (``bits`` wide) where it can, else an own copy ``own_bits`` wide (default ``bits``);
    returns what was done, for the record."""
    own_bits = own_bits or bits
    graph = model.graph
    inits = _initializers(graph)
    done: dict = {"gathers": [], "shared_with_lm_head": False, "kept_float": []}
    for gather in embedding_gathers(graph):
        name = gather.input[0]
        vocab, hidden = inits[name].dims
        size = gather_block_size(hidden, block_size)
        if size is None:
            done["kept_float"].append(f"{name} (width {hidden} has no power-of-two block "
                                      f">= 16)")
            continue
        head_node = _head_blocks(graph, head) if head and head.embedding == name else None
        width = bits
        if head_node is not None and size == block_size:
            inputs = _shared_inputs(graph, head_node, gather, vocab, hidden, bits)
            done["shared_with_lm_head"] = True
        else:
            width = own_bits
            inputs = _own_inputs(graph, numpy_helper.to_array(inits[name]), name, gather,
                                 size, symmetric, width)
        position = list(graph.node).index(gather)
        graph.node.insert(position, _gather_node(gather, inputs, size, width))
        graph.node.remove(gather)
        done["gathers"].append(f"{gather.name} (block {size})")
    remove_unused_initializers(graph)
    return done


def remove_unused_initializers(graph) -> None:
    """Drop initializers no node reads (the float embedding once every reader is int4)."""
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
