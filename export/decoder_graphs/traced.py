"""The traced graph: optimum-onnx's ``text-generation-with-past`` export of the transformers
model. Every architecture optimum knows; attention is traced as plain MatMul / Softmax."""

from __future__ import annotations

from pathlib import Path

from edgepack.export.decoder_graphs import DECODER_GRAPHS, DecoderGraph


def build_traced(model_dir: Path, work_dir: Path, opset: int | None) -> None:
    from edgepack.export.hf import DECODER_TASK, run_optimum

    run_optimum(model_dir, DECODER_TASK, work_dir, opset)


DECODER_GRAPHS.register(DecoderGraph(
    "traced", build_traced, library="optimum", model_types=None, order=20,
    note="optimum-onnx's traced graph (attention as MatMul / Softmax)"))
