"""Offline ONNX Runtime graph optimization, saved as its own model and parity-checked.

ONNX Runtime rewrites a graph when it opens a session (constant folding, node fusions);
``SessionOptions.optimized_model_filepath`` saves the rewritten graph, so a device can load
it without redoing the work. Levels:

- ``basic``: semantics-preserving rewrites that run on any execution provider
  (constant folding, redundant-node removal);
- ``extended``: fusions into ONNX Runtime's own ``com.microsoft`` ops (GELU, attention,
  LayerNorm), which need ONNX Runtime to run;
- ``all``: adds layout rewrites for the CPU it ran on: the saved model is tied to that
  kind of machine and execution provider.

The optimized model is a separate file; its outputs are compared with the original's on
ONNX Runtime, and a mismatch raises :class:`~edgepack.export.parity.ParityError` (exit code 1).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgepack.core.checks import check_choice, check_finite_fields
from edgepack.core.files import check_output_file
from edgepack.core.output_paths import mark_onnx_file
from edgepack.core.onnx_files import (check_onnx_file, external_tensor_names, model_size_bytes,
                                      parameter_count)
from edgepack.core.stage import (StageConfig, StageInput, StageResult, StageSpec, option,
                                 register_stage)
from edgepack.export.parity import ParityError, compare_sessions

LEVELS = ("basic", "extended", "all")


def _level(name: str):
    import onnxruntime as ort

    return {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[name]


def _cpu_session(path: Path, options=None):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def unoptimized_session(path: Path):
    """A CPU session that runs the graph as written: the reference for parity checks."""
    import onnxruntime as ort

    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return _cpu_session(path, plain)


def _save_optimized(path: Path, level: str, target: Path, external_data: bool) -> None:
    """Open ``path`` in ONNX Runtime at ``level`` and save the rewritten graph at ``target``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = _level(level)
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3  # the 'all' level warns that it is machine-specific (see above)
    if external_data:  # keep weights out of the protobuf, which cannot exceed 2 GB
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", f"{target.name}.data")
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    _cpu_session(path, options)


PARITY_DIMS = 8      # symbolic non-batch axes in parity checks: small, and quick to run
PARITY_VOCAB = 2     # token ids 0 and 1 where the vocabulary is not known: valid in any table


def default_parity_feeds(session, model_path=None) -> list[dict]:
    """Generated inputs at batch 1 and, when the batch axis is symbolic, at batch 4
    (bench's generator; token ids below the vocabulary ``model_path``'s tables show)."""
    import onnx

    from edgepack.bench.inputs import generate_inputs, token_vocab_sizes

    first = session.get_inputs()[0].shape
    dynamic_batch = bool(first) and not isinstance(first[0], int)
    vocab = token_vocab_sizes(onnx.load(str(model_path), load_external_data=False)) \
        if model_path is not None else {}

    def feeds(batch: int, seed: int) -> dict:
        return generate_inputs(session, batch, seed=seed, vocab_sizes=vocab,
                               model_name=Path(model_path).name if model_path else "the model",
                               symbolic_dims=PARITY_DIMS, default_vocab=PARITY_VOCAB)

    return [feeds(1, 1)] + ([feeds(4, 2)] if dynamic_batch else [])


def optimize_onnx(path, level: str, out_path, parity_inputs=None, atol: float = 1e-4,
                  rtol: float = 1e-3, fail_on_mismatch: bool = True) -> StageResult:
    """Save ONNX Runtime's ``level`` optimization of ``path`` at ``out_path``; check parity.

    ``parity_inputs``: a feed dict (input name -> array) or a list of them; generated
    inputs at two batch sizes when none are given. The record holds the level, sizes,
    node counts before and after, and the parity numbers.
    """
    check_choice("optimize", "level", level, LEVELS)
    path = Path(path)
    source = check_onnx_file(path)
    out_path = check_output_file(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"output {out_path} must end in .onnx")
    if out_path.resolve() == path.resolve():
        raise ValueError(f"output {out_path} is the input model; choose another path")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        tmp_model = tmp_dir / out_path.name
        _save_optimized(path, level, tmp_model, bool(external_tensor_names(source)))
        mark_onnx_file(tmp_model, f"optimize {level}")
        optimized = check_onnx_file(tmp_model)
        parity = _check_parity(path, tmp_model, parity_inputs, atol, rtol)
        if not parity["ok"] and fail_on_mismatch:
            raise ParityError(f"the {level}-optimized model's outputs differ from the original "
                              f"beyond atol={atol}, rtol={rtol}:\n" + "\n".join(parity["lines"]))
        for item in sorted(tmp_dir.iterdir(), key=lambda p: p.name == out_path.name):
            os.replace(item, out_path.parent / item.name)  # data files first, model last
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    record = {"level": level, "source": str(path), "size_bytes_before": model_size_bytes(path),
              "size_bytes": model_size_bytes(out_path), "nodes_before": len(source.graph.node),
              "nodes": len(optimized.graph.node), "params": parameter_count(optimized),
              "parity": parity}
    return StageResult(artifact=out_path, record=record)


def _check_parity(original: Path, optimized: Path, parity_inputs, atol: float,
                  rtol: float) -> dict:
    """Compare the optimized model with the original (itself unoptimized) on ONNX Runtime."""
    reference = unoptimized_session(original)
    candidate = _cpu_session(optimized)
    if parity_inputs is None:
        feeds_list = default_parity_feeds(reference, original)
    elif isinstance(parity_inputs, dict):
        feeds_list = [parity_inputs]
    else:
        feeds_list = list(parity_inputs)
    return compare_sessions(reference, candidate, feeds_list, atol, rtol)


@dataclass
class OptimizeConfig(StageConfig):
    """ONNX Runtime's offline graph optimization as a pipeline stage (parity-checked)."""

    kind = "optimize"
    level: str = option("extended", "basic | extended | all (all ties the model to this CPU)",
                        choices=LEVELS)
    atol: float = option(1e-4, "largest absolute output difference to the original")
    rtol: float = option(1e-3, "largest relative output difference to the original")

    def __post_init__(self):
        check_finite_fields(self, "optimize")
        check_choice("optimize", "level", self.level, LEVELS)
        for name in ("atol", "rtol"):
            if getattr(self, name) < 0:
                raise ValueError(f"optimize.{name} must be >= 0, got {getattr(self, name)}")


def _run_stage(config: OptimizeConfig, given: StageInput) -> StageResult:
    return optimize_onnx(given.artifact, config.level, given.folder / "model.onnx",
                         atol=config.atol, rtol=config.rtol)


register_stage(StageSpec("optimize", OptimizeConfig, consumes="onnx", produces="onnx",
                         run=_run_stage, failures=(ParityError,)))
