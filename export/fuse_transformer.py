"""Transformer fusions: ONNX Runtime's BERT optimizer as a parity-checked pipeline stage.

``onnxruntime.transformers.optimizer`` rewrites a BERT-style graph into ONNX Runtime's fused
``com.microsoft`` kernels: the embeddings and their LayerNorm into EmbedLayerNormalization,
each self-attention block (Q/K/V MatMuls, softmax, masking) into one Attention node, the
residual add and LayerNorm into SkipLayerNormalization, and MatMul + bias + GELU into
BiasGelu. Fewer, larger kernels cut per-node overhead and memory traffic; a dynamic int8
quantization of the fused graph then quantizes the Attention node itself (QAttention).

The fused model is saved with full shape information (ONNX Runtime's symbolic shape
inference, which knows the fused ops), so a later quantization can type every tensor. Its
outputs are compared with the input model's on ONNX Runtime (held-out inputs when the
pipeline has them); a mismatch raises :class:`~edgepack.export.parity.ParityError`, and the stage is
kept only if it is faster.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgepack.bench.ir_version import lower_file_to_runtime, lower_to_runtime
from edgepack.core.checks import check_choice, check_finite_fields
from edgepack.core.files import check_output_file
from edgepack.core.output_paths import mark_onnx_file
from edgepack.core.onnx_files import check_onnx_file, model_size_bytes, parameter_count
from edgepack.core.stage import StageConfig, StageInput, StageResult, StageSpec, option, register_stage
from edgepack.core.tensors import as_tuple, rows, to_numpy
from edgepack.export.parity import ParityError

MODEL_TYPES = ("bert",)


@dataclass
class FuseConfig(StageConfig):
    """ONNX Runtime's transformer optimizer settings."""

    kind = "fuse-transformer"
    model_type: str = option("bert", "the graph's architecture family", choices=MODEL_TYPES)
    num_heads: int = option(0, "attention heads per layer (0: read from the graph)")
    hidden_size: int = option(0, "hidden size (0: read from the graph)")
    atol: float = option(1e-4, "largest absolute output difference to the input model")
    rtol: float = option(1e-3, "largest relative output difference to the input model")

    def __post_init__(self):
        check_finite_fields(self, "fuse-transformer")
        check_choice("fuse-transformer", "model_type", self.model_type, MODEL_TYPES)
        if self.num_heads < 0 or self.hidden_size < 0:
            raise ValueError("fuse-transformer.num_heads and hidden_size must be >= 0")
        if self.atol < 0 or self.rtol < 0:
            raise ValueError("fuse-transformer.atol and rtol must be >= 0")


def fuse_transformer(path, config: FuseConfig, out_path, parity_inputs=None) -> StageResult:
    """Fuse ``path``'s transformer blocks into ``out_path``; check parity on ``parity_inputs``
    (a feed dict; random token ids when none)."""
    from onnxruntime.transformers import optimizer

    path, out_path = Path(path), check_output_file(out_path)
    source = check_onnx_file(path)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        fused = optimizer.optimize_model(str(path), model_type=config.model_type,
                                         num_heads=config.num_heads,
                                         hidden_size=config.hidden_size, opt_level=0,
                                         use_gpu=False)
        counts = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        tmp_model = tmp_dir / out_path.name
        fused.save_model_to_file(str(tmp_model))  # adds the com.microsoft opset import
        lower_file_to_runtime(tmp_model)
        _add_shapes(tmp_model)
        mark_onnx_file(tmp_model, "fuse-transformer")
        parity = _check_parity(path, tmp_model, parity_inputs, config)
        if not parity["ok"]:
            raise ParityError(f"the fused model's outputs differ from the input beyond "
                              f"atol={config.atol}, rtol={config.rtol}:\n"
                              + "\n".join(parity["lines"]))
        os.replace(tmp_model, out_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    graph = check_onnx_file(out_path)
    record = {"model_type": config.model_type, "fused": counts,
              "nodes_before": len(source.graph.node), "nodes": len(graph.graph.node),
              "params": parameter_count(graph), "size_bytes": model_size_bytes(out_path),
              "parity": parity}
    return StageResult(artifact=out_path, record=record)


def _add_shapes(target: Path) -> None:
    """Store every tensor's type and shape in the file (the fused ops are unknown to onnx's
    own shape inference, which quantization relies on)."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(onnx.load(str(target)), auto_merge=True)
    if inferred is not None:
        lower_to_runtime(inferred)
        onnx.save(inferred, str(target))


def _check_parity(original: Path, fused: Path, parity_inputs, config: FuseConfig) -> dict:
    from edgepack.export.optimize import _cpu_session, default_parity_feeds, unoptimized_session
    from edgepack.export.parity import compare_sessions

    reference = unoptimized_session(original)
    feeds = [parity_inputs] if parity_inputs is not None else default_parity_feeds(reference,
                                                                                    original)
    return compare_sessions(reference, _cpu_session(fused), feeds, config.atol, config.rtol)


def _held_out_feeds(path: Path, inputs) -> dict | None:
    """The pipeline's held-out inputs (8 rows) as a feed dict in the graph's input order."""
    if inputs is None:
        return None
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    return dict(zip(names, as_tuple(to_numpy(rows(inputs, 0, 8)))))


def _run_stage(config: FuseConfig, given: StageInput) -> StageResult:
    return fuse_transformer(given.artifact, config, given.folder / "model.onnx",
                            parity_inputs=_held_out_feeds(Path(given.artifact),
                                                          given.eval_inputs))


register_stage(StageSpec("fuse-transformer", FuseConfig, consumes="onnx", produces="onnx",
                         run=_run_stage, promises_speed=lambda config: True,
                         slow_cause=lambda config, candidate: "the fused kernels were not "
                         "faster than ONNX Runtime's own session-time fusions here",
                         failures=(ParityError,)))
