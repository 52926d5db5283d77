"""What the int4 algorithms share: ONNX Runtime's MatMulNBits quantizer run on a model, the
accuracy level set on its nodes, and the calibration feeds of a decoder.

Each algorithm (:mod:`edgepack.compress.quantize.int4_algorithms`) hands
:func:`matmul_nbits` its own ONNX Runtime configuration; the accuracy level (the MatMulNBits
attribute choosing how activations are computed: 0 as the weights say, 4 int8) is set
afterwards on the nodes (:func:`set_accuracy_level`), since it does not change the stored
weights.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx


def matmul_nbits(model: onnx.ModelProto, algo_config, job) -> onnx.ModelProto:
    """The MatMuls with a constant 2-D weight as MatMulNBits of ``job.bits``, in
    ``job.block_size`` blocks, rounded by ONNX Runtime's ``algo_config``; the MatMuls named
    in ``job.exclude`` are left as they are."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    previous, quiet.level = quiet.level, logging.WARNING   # it logs every node at INFO
    hidden = hide_weights(model, set(job.exclude))
    try:
        quantizer = MatMulNBitsQuantizer(
            model, bits=job.bits, block_size=job.block_size, is_symmetric=job.symmetric,
            nodes_to_exclude=list(job.exclude), algo_config=algo_config)
        quantizer.process()
    finally:
        quiet.level = previous
    quantized = quantizer.model.model
    restore_weights(quantized, hidden)
    if not any(o.domain == "com.microsoft" for o in quantized.opset_import):
        quantized.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return quantized


def hide_weights(model: onnx.ModelProto, names: set[str]) -> dict[str, str]:
    """Route the weight of each MatMul named in ``names`` through an Identity node, so that
    no quantizer sees a constant weight there. ONNX Runtime's GPTQ ignores
    ``nodes_to_exclude`` (its RTN honours it): an lm_head meant for its own 8-bit blocks came
    out in GPTQ's 4-bit ones, and the embedding that shares its bytes read them as 8-bit.
    Returns {Identity output: weight} for :func:`restore_weights`."""
    hidden = {}
    for node in list(model.graph.node):
        if node.op_type == "MatMul" and node.name in names:
            through = f"{node.input[1]}_kept_float_{len(hidden)}"
            model.graph.node.append(onnx.helper.make_node(
                "Identity", [node.input[1]], [through], name=f"{through}_identity"))
            hidden[through] = node.input[1]
            node.input[1] = through
    return hidden


def restore_weights(model: onnx.ModelProto, hidden: dict[str, str]) -> None:
    """Undo :func:`hide_weights`: each MatMul reads its weight again, the Identities go."""
    if not hidden:
        return
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in hidden:
                node.input[index] = hidden[name]
    keep = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in hidden)]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def set_accuracy_level(model: onnx.ModelProto, level: int) -> int:
    """Set ``accuracy_level`` on every MatMulNBits (0 removes it: ONNX Runtime's default);
    returns how many nodes were set."""
    count = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        for attribute in [a for a in node.attribute if a.name == "accuracy_level"]:
            node.attribute.remove(attribute)
        if level:
            node.attribute.append(onnx.helper.make_attribute("accuracy_level", level))
        count += 1
    return count


def decoder_feeds(model: onnx.ModelProto, windows: list[list[int]]) -> list[dict]:
    """One feed per token window, as a first forward pass sees it: the window's ids, a full
    attention mask, positions 0..n-1 and an empty KV cache (past length 0), by the names
    Optimum's decoders use (:mod:`edgepack.bench.decoder`)."""
    inputs = {i.name: i for i in model.graph.input}
    feeds = []
    for window in windows:
        ids = np.asarray(window, np.int64).reshape(1, -1)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "position_ids" in inputs:
            feed["position_ids"] = np.arange(ids.shape[1], dtype=np.int64).reshape(1, -1)
        for name, value in inputs.items():
            if name.startswith("past_key_values."):
                dims = value.type.tensor_type.shape.dim
                shape = (1, dims[1].dim_value, 0, dims[3].dim_value)
                dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
                feed[name] = np.zeros(shape, dtype)
        missing = [n for n in inputs if n not in feed]
        if missing:
            raise ValueError(f"calibration windows feed a decoder's input_ids, attention_mask, "
                             f"position_ids and past_key_values; the model also wants "
                             f"{', '.join(missing)}")
        feeds.append(feed)
    return feeds
