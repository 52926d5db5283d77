"""The three int4 weight-only algorithms, through ONNX Runtime's MatMulNBits quantizer.

- ``rtn``: round to nearest per block (ONNX Runtime's default, C++ kernels): seconds;
- ``hqq``: half-quadratic quantization (Badri & Shaji 2023): each block's zero point is
  optimised to lower the weight error, no data needed; its zero points are float;
- ``gptq``: GPTQ (Frantar et al. 2022): each weight column is rounded in turn and the error
  spread over the columns not yet rounded, weighted by the inputs' Hessian, so it needs
  calibration inputs: for a decoder, token windows run with an empty KV cache
  (:func:`decoder_feeds`). The costliest of the three.

Each returns the quantized ``ModelProto``; the accuracy level (the MatMulNBits attribute
choosing how activations are computed: 0 as the weights say, 4 int8) is set afterwards on
the nodes (:func:`set_accuracy_level`), since it does not change the stored weights.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

ALGORITHMS = ("rtn", "hqq", "gptq")


class _FeedReader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, feeds: list[dict]):
        self.feeds = list(feeds)
        self._next = 0

    def get_next(self):
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return self.feeds[self._next - 1]

    def __iter__(self):
        return self

    def __next__(self):
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


def _algorithm_config(algorithm: str, block_size: int, symmetric: bool, feeds: list[dict],
                      bits: int):
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if algorithm == "rtn":
        return nbits.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric,
                                                  bits=bits)
    if algorithm == "hqq":
        return nbits.HQQWeightOnlyQuantConfig(block_size=block_size, bits=4)
    if not feeds:
        raise ValueError("quantize.algorithm='gptq' needs calibration inputs (for a decoder: "
                         "token windows, quantize_decoder(calibration_windows=...)); "
                         "rtn and hqq need none")
    return nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=_FeedReader(feeds))


def weight_only_quantize(model: onnx.ModelProto, algorithm: str, block_size: int,
                         symmetric: bool, feeds: list[dict], exclude=(),
                         bits: int = 4) -> onnx.ModelProto:
    """The MatMuls with a constant 2-D weight as MatMulNBits of ``bits`` (8: rtn only), by
    ``algorithm``."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    config = _algorithm_config(algorithm, block_size, symmetric, feeds, bits)
    if algorithm == "gptq" and not symmetric:
        _check_gptq_zero_points(model, block_size)
    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    previous, quiet.level = quiet.level, logging.WARNING   # it logs every node at INFO
    try:
        quantizer = MatMulNBitsQuantizer(
            model, bits=bits, block_size=block_size, is_symmetric=symmetric,
            nodes_to_exclude=list(exclude),
            algo_config=config)
        quantizer.process()
    finally:
        quiet.level = previous
    quantized = quantizer.model.model
    if not any(o.domain == "com.microsoft" for o in quantized.opset_import):
        quantized.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return quantized


def _check_gptq_zero_points(model: onnx.ModelProto, block_size: int) -> None:
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
