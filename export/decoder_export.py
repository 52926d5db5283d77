"""The ``export-decoder`` stage: a transformers causal LM in torch -> an ONNX decoder with its
KV cache (Optimum's ``text-generation-with-past`` names), parity-checked on a prefill and on
decode steps with a growing cache, with the files onnxruntime-genai needs beside it.

The torch model is saved (safetensors) into a scratch folder with its tokenizer, and its
graph built from there, fused or traced (``graph``, :mod:`edgepack.export.decoder_graphs`),
by :func:`edgepack.export.hf.export_hf`, which checks parity through
:mod:`edgepack.export.decoder_parity`. The result lands in ``STAGE/model/``: ``model.onnx``,
the config and tokenizer files, and ``genai_config.json`` (:mod:`edgepack.export.genai`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgepack.core.stage import StageConfig, StageInput, StageResult, StageSpec, option, register_stage
from edgepack.export.parity import PARITY_MULTIPLE, ParityError, check_parity_multiple

MODEL_FOLDER = "model"


@dataclass
class DecoderExportConfig(StageConfig):
    """How a decoder is exported and how closely ONNX Runtime must follow torch."""

    kind: ClassVar[str] = "export-decoder"
    opset: int = option(0, "the traced graph's ONNX opset; 0: optimum's choice for the "
                           "architecture (the fused graph's builder sets its own)")
    graph: str = option("auto", "how the graph is built: fused (mobius-onnx: GroupQueryAttention, "
                        "packed QKV) | traced (optimum) | auto (fused where tested for the "
                        "model type, else traced); edgepack.export.decoder_graphs")
    parity_multiple: float = option(PARITY_MULTIPLE, "parity: ONNX Runtime's error against "
                                    "a float64 torch run may be this many times torch's own "
                                    "float32 error (edgepack.export.parity)")

    def __post_init__(self):
        if self.opset and not 14 <= self.opset <= 23:
            raise ValueError(f"export-decoder.opset must be 0 (optimum's choice) or in "
                             f"[14, 23], got {self.opset}")
        check_parity_multiple("export-decoder.parity_multiple", self.parity_multiple)
        from edgepack.export.decoder_graphs import graph_choices

        if self.graph not in graph_choices():
            raise ValueError(f"export-decoder.graph must be one of {', '.join(graph_choices())}, "
                             f"got {self.graph!r}")


def tokenizer_folder(data: dict) -> Path:
    """The folder with the teacher's tokenizer.json, which the data provider names."""
    folder = data.get("tokenizer_dir")
    if not folder or not (Path(folder) / "tokenizer.json").is_file():
        raise ValueError("a decoder pipeline's data provider must return 'tokenizer_dir': a "
                         f"folder holding the model's tokenizer.json (got {folder!r})")
    return Path(folder)


def save_hf_folder(model, tokenizer_dir: Path, folder: Path) -> Path:
    """``model`` and its tokenizer files as a Hugging Face folder optimum can export."""
    from edgepack.export.genai import TOKENIZER_FILES

    model.save_pretrained(str(folder), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if name != "config.json" and (tokenizer_dir / name).is_file() and \
                not (folder / name).exists():
            shutil.copyfile(tokenizer_dir / name, folder / name)
    return folder


def export_decoder(model, tokenizer_dir, out_dir, config: DecoderExportConfig | None = None
                   ) -> StageResult:
    """Export ``model`` (a transformers causal LM) into ``out_dir/model.onnx`` with its KV
    cache, check parity, and write the deployment files; raise :class:`ParityError` beyond
    the tolerance."""
    from edgepack.export.hf import DECODER_TASK, export_hf

    config = config or DecoderExportConfig()
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix=".hf-model.", dir=out_dir.parent) as scratch:
        hf_folder = save_hf_folder(model, Path(tokenizer_dir), Path(scratch))
        result = export_hf(hf_folder, DECODER_TASK, out_dir, opset=config.opset or None,
                           parity_multiple=config.parity_multiple, graph=config.graph)
        result.record["source"] = "the torch model (saved as safetensors for the builder)"
    return result


def _run_stage(config: DecoderExportConfig, given: StageInput) -> StageResult:
    return export_decoder(given.artifact, tokenizer_folder(given.data),
                          given.folder / MODEL_FOLDER, config)


register_stage(StageSpec("export-decoder", DecoderExportConfig, consumes="torch",
                         produces="onnx", run=_run_stage, failures=(ParityError,), once=True,
                         for_decoders=True))

__all__ = ["DecoderExportConfig", "export_decoder", "save_hf_folder", "tokenizer_folder"]
