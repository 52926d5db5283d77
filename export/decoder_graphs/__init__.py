"""How a decoder's ONNX graph is built: one file per builder, registered where it is defined.

Two builders write the same interface (``input_ids``, ``attention_mask``,
``past_key_values.N.key/value`` -> ``logits``, ``present.N.key/value``), so ``generate``,
``bench --generate``, onnxruntime-genai and the quantize stage read either unchanged, and
both are held to the same parity rule (:mod:`edgepack.export.decoder_parity`):

- ``traced`` (:mod:`.traced`): optimum-onnx traces the transformers model. Every
  architecture optimum knows; attention stays plain MatMul / Softmax (SmolLM2-135M: about
  8,000 nodes).
- ``fused`` (:mod:`.fused`): mobius-onnx builds the graph from the architecture with
  ONNX Runtime's fused operators: GroupQueryAttention with the rotary embedding inside, one
  packed QKV projection per layer, SkipSimplifiedLayerNormalization (SmolLM2-135M: 341
  nodes). Faster to decode and to prefill; used for the model types it was tested on here.

``graph = "auto"`` (the default) takes the first builder, in registry order, whose
``model_types`` holds the model's type, and the export record says which one and why. A
builder named explicitly for a type it was not tested on is refused (exit 2), never
swapped for the other.

Adding a builder is one file here registering a :class:`DecoderGraph`. Example: optimum's
trace pinned to opset 17 for Llama models (a file ``traced_opset17.py`` here)::

    def build_traced_opset17(model_dir, work_dir, opset):
        from edgepack.export.hf import DECODER_TASK, run_optimum
        run_optimum(model_dir, DECODER_TASK, work_dir, opset or 17)

    DECODER_GRAPHS.register(DecoderGraph(
        "traced-17", build_traced_opset17, library="optimum",
        model_types=frozenset({"llama"}), order=30,
        note="optimum-onnx's traced graph at opset 17"))

``edgepack export --hf LLAMA_DIR --task text-generation-with-past --graph traced-17`` (or
``graph = "traced-17"`` in a recipe's ``export-decoder`` stage) then uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgepack.core.registry import Registry

AUTO = "auto"


@dataclass(frozen=True)
class DecoderGraph:
    """One way to build a decoder's graph.

    - ``build(model_dir, work_dir, opset)``: write ``work_dir/model.onnx`` (one file) from
      the Hugging Face folder ``model_dir``; ``opset`` None is the builder's choice;
    - ``library``: the package that builds it (the record's ``exporter``);
    - ``model_types``: the transformers model types it serves (None: every one);
    - ``note``: what the graph is, for the record and for messages.
    """

    name: str
    build: Callable[[Path, Path, "int | None"], None]
    library: str
    model_types: frozenset | None = None
    note: str = ""
    order: int = 100

    def serves(self, model_type: str) -> bool:
        return self.model_types is None or model_type in self.model_types


DECODER_GRAPHS: Registry[DecoderGraph] = Registry("decoder graph", __name__)


def graph_choices() -> tuple[str, ...]:
    """What a recipe's ``graph`` or ``--graph`` may say."""
    return (AUTO, *DECODER_GRAPHS.names())


def choose_graph(requested: str, model_type: str) -> tuple[DecoderGraph, str]:
    """The builder for a model of ``model_type`` and why it was taken; a builder named for a
    type it does not serve is a ValueError naming the ones that do."""
    if requested == AUTO:
        spec = next(s for s in DECODER_GRAPHS.specs() if s.serves(model_type))
        return spec, f"auto: the first builder that serves model type {model_type!r}"
    spec = DECODER_GRAPHS.get(requested, "export-decoder.graph")
    if not spec.serves(model_type):
        serving = [s.name for s in DECODER_GRAPHS.specs() if s.serves(model_type)]
        raise ValueError(f"graph {requested!r} is not built for model type {model_type!r} "
                         f"(it serves {', '.join(sorted(spec.model_types))}); use graph "
                         f"{' or '.join(repr(n) for n in serving + [AUTO])}")
    return spec, "asked for"


__all__ = ["AUTO", "DECODER_GRAPHS", "DecoderGraph", "choose_graph", "graph_choices"]
