"""Transformer graphs: ONNX Runtime's fusions before quantizing, and what static mode leaves
in float.

ONNX Runtime fuses an fp32 BERT graph at session time (attention, LayerNorm, GELU), but not
once its MatMuls are quantized: the quantized graph keeps dozens of small ops per layer.
Fusing *before* quantizing (``onnxruntime.transformers.optimizer``, model type ``bert``:
EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu) lets dynamic
quantization turn each Attention into one QAttention. Measured here on all-MiniLM-L6-v2
(AMD EPYC AVX2, 1 thread, batch 1, length 128, interleaved): dynamic per-channel int8 was
1.41x fp32 unfused and 1.68x fused, at the same sentence-embedding cosine (0.992).

Static int8 on a transformer is where silent garbage comes from: the attention-mask path
adds a huge negative number to the scores, softmax outputs and scores span ranges no 8-bit
scale covers, and activation-times-activation MatMuls (Q·Kᵀ, P·V) get per-tensor scales
from a few sentences. Static mode on a transformer graph therefore quantizes only the
MatMul/Gemm nodes with constant weights; everything else (the mask path, softmax,
LayerNorm, the attention score MatMuls) stays float, and the record names why.
Measured: quantizing every op gave a sentence cosine of 0.405; weight MatMuls only 0.941
unfused and 0.9997 fused.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgepack.bench.ir_version import lower_file_to_runtime

TOKEN_INPUT_WORDS = ("input_ids", "attention_mask", "token_type_ids")
FUSED_ATTENTION_OPS = ("Attention", "MultiHeadAttention", "QAttention")
WEIGHT_OPS = ("MatMul", "Gemm")


def is_transformer(model: onnx.ModelProto) -> bool:
    """A transformer graph: token-id inputs, or Softmax next to MatMuls (attention), or an
    already fused attention op."""
    graph = model.graph
    ops = {n.op_type for n in graph.node}
    if ops & set(FUSED_ATTENTION_OPS):
        return True
    names = {i.name for i in graph.input}
    if names & set(TOKEN_INPUT_WORDS):
        return True
    return "Softmax" in ops and sum(n.op_type == "MatMul" for n in graph.node) >= 4


def weight_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of MatMul/Gemm nodes whose second input is a constant (a weight)."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return [n.name for n in model.graph.node
            if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in constants]


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes multiplying two activations (attention scores, probabilities x values)."""
    constants = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not (set(n.input) & constants)]


def fuse_transformer(source: Path, work: Path) -> tuple[Path, dict]:
    """ONNX Runtime's BERT fusions on ``source``; returns (fused path, fused op counts).

    ``num_heads``/``hidden_size`` 0: the optimizer reads them from the graph. ``opt_level``
    0: only the fusions, no ORT graph optimisation baked into the file (the session does it).
    """
    import logging

    from onnxruntime.transformers import optimizer

    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)  # fusion progress is logged at INFO/WARNING
    try:
        model = optimizer.optimize_model(str(source), model_type="bert", num_heads=0,
                                         hidden_size=0, opt_level=0, use_gpu=False)
    finally:
        logger.setLevel(level)
    fused = {op: n for op, n in model.get_fused_operator_statistics().items() if n}
    target = work / "fused.onnx"
    model.save_model_to_file(str(target))
    lower_file_to_runtime(target)
    return target, fused


def should_fuse(choice: str, transformer: bool) -> bool:
    """``auto``: fuse transformer graphs (the int8 methods ask); ``on``/``off``."""
    if choice == "on":
        return True
    if choice == "off":
        return False
    return transformer


def static_transformer_scope(model: onnx.ModelProto) -> tuple[list[str], dict]:
    """The nodes static mode quantizes on a transformer graph, and the record of why."""
    nodes = weight_nodes(model)
    left = activation_matmuls(model)
    ops = {n.op_type for n in model.graph.node}
    record = {"quantized": "MatMul/Gemm nodes with constant weights only",
              "weight_nodes": len(nodes),
              "kept_float": {
                  "activation MatMuls (attention scores, probabilities x values)": len(left),
                  "attention-mask path, Softmax, LayerNorm, GELU and fused attention ops":
                      sorted(ops & {"Softmax", "Attention", "MultiHeadAttention",
                                    "SkipLayerNormalization", "LayerNormalization",
                                    "EmbedLayerNormalization", "BiasGelu", "Gelu", "Where",
                                    "Add", "Sub", "Mul", "Cast"})},
              "why": "ranges of scores, softmax outputs and the attention-mask path are too "
                     "wide for per-tensor 8-bit activations calibrated on a few inputs"}
    return nodes, record
